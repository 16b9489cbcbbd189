"""Where the pure engine's per-event time goes: cProfile over one simulator log, grouped by detector.

Run with ``.venv/bin/python bench/engine_profile.py --events EVENTS.jsonl`` (e.g. from
``logiwatch simulate --scenario default --seed 5 --parcels 20000``). It prints the wall time per
event without the profiler, then each part's cumulative share of ``Engine.process`` under it
(shares, not microseconds: the profiler slows the calls it counts unevenly).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from logiwatch.backtest import read_events
from logiwatch.config import engine_config, load_settings
from logiwatch.detectors.engine import DETECTORS, Engine
from logiwatch.detectors.model import ScanEvent, Tick
from logiwatch.detectors.runner import interleave_ticks

BATCH = 2048


def _run(records: list[ScanEvent | Tick]) -> int:
    engine = Engine(engine_config(load_settings(None)))
    n = 0
    for i in range(0, len(records), BATCH):
        n += len(engine.process(records[i : i + BATCH]))
    return n


def _shares(stats: pstats.Stats) -> list[tuple[str, float]]:
    st = stats.stats  # type: ignore[attr-defined]

    def cum(path_part: str, fn: str) -> float:
        return float(sum(v[3] for k, v in st.items() if path_part in k[0] and k[2] == fn))

    files = {name: cls.__module__.rsplit(".", 1)[-1] + ".py" for name, cls in DETECTORS.items()}
    rows = [(f"{d} {fn}", cum(files[d], fn)) for d in DETECTORS for fn in ("on_event", "on_deadline", "observe")]
    rows += [(f"engine {fn}", cum("engine.py", fn)) for fn in ("_fire_until", "_load", "_flush")]
    rows.append(
        (
            "engine _on_event (own time)",
            float(sum(v[2] for k, v in st.items() if "engine.py" in k[0] and k[2] == "_on_event")),
        )
    )
    total = cum("engine.py", "process")
    return [(name, v / total) for name, v in sorted(rows, key=lambda r: -r[1]) if v > 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", required=True, help="JSONL event log")
    args = parser.parse_args()
    events = sorted(read_events(args.events), key=lambda e: e.event_time)
    records = list(interleave_ticks(events, 60_000))
    t = time.perf_counter()
    _run(records)
    dt = time.perf_counter() - t
    print(f"{len(events):,} events: {dt:.2f} s, {dt / len(events) * 1e6:.1f} us per event (no profiler)")
    prof = cProfile.Profile()
    prof.runcall(_run, records)
    for name, share in _shares(pstats.Stats(prof)):
        print(f"{name:36s} {share * 100:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
