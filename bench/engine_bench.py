"""Micro-benchmark of the pure detection engine: events/s of ``Engine.process`` on one core.

Generates the default simulator log in memory (seed 1, 20,000 parcels), puts
a clock tick before every event that crosses a new event-time minute (as the
backtest and the replay producer do) and times one ``Engine(EngineConfig())``
over all of it, best of three fresh engines, so the figure is reproducible
and comparable between commits. Only ``process`` is timed: generating the log
is not; CPU time is printed too, as it varies less on a shared machine. Run
with ``.venv/bin/python bench/engine_bench.py [--parcels N] [--repeat R]
[--profile | --memory N | --checkpoint-bytes N]``: ``--profile`` prints the top
of a cProfile of one run instead; ``--memory`` measures the bytes each
in-flight parcel costs (see ``memory_per_parcel``); ``--checkpoint-bytes``
the models bytes a checkpoint writes (see ``checkpoint_bytes``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
import tracemalloc

import msgspec

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import ScanEvent, Tick
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.sim.traffic import generate


def memory_per_parcel(parcels: int, seed: int, target_in_flight: int, hot_parcels: int | None = None) -> None:
    """Bytes of engine memory per in-flight parcel, learned models excluded, and the hot set's own cost.

    The events are decoded from msgpack while ``tracemalloc`` runs, so the
    strings a parcel's state shares with its events are traced, and the events
    are dropped afterwards (as a worker drops a processed batch). The engine
    runs until ``target_in_flight`` parcels are in flight; the figure is the
    traced memory freed by dropping the parcel states, their heap entries and
    the hub tracker's entries, divided by the number of parcels. The hot set's
    cost is the traced memory freed by encoding its parcels (``encode_hot``)
    before that, per hot parcel: what a parcel kept decoded costs over its blob.
    ``hot_parcels`` overrides ``EngineConfig.hot_parcels``.
    """

    events, _ = generate("default", seed=seed, parcels=parcels)
    blob = msgspec.msgpack.encode(events)
    del events
    gc.collect()
    tracemalloc.start()
    decoded = msgspec.msgpack.decode(blob, type=list[ScanEvent])
    records: list[ScanEvent | Tick] = list(interleave_ticks(decoded, 60_000))
    del decoded
    engine = Engine(EngineConfig() if hot_parcels is None else EngineConfig(hot_parcels=hot_parcels))
    done = 0
    while done < len(records) and engine.in_flight < target_in_flight:
        engine.process(records[done : done + 5_000])
        done += 5_000
    sizes = [len(b) for b in engine.take_changes().upserts.values()]
    del records
    gc.collect()
    with_parcels = tracemalloc.get_traced_memory()[0]
    n = engine.in_flight
    hot = len(engine._hot)
    engine.encode_hot()
    gc.collect()
    all_cold = tracemalloc.get_traced_memory()[0]
    engine._cold.clear()
    engine._heap.clear()
    engine._queued.clear()
    engine.take_hub_summaries()
    gc.collect()
    without = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"{n} parcels in flight after {done} records: {(with_parcels - without) / n:,.0f} bytes per parcel "
        f"in memory; msgpack state {sum(sizes) / len(sizes):,.0f} bytes on average (max {max(sizes)}); "
        f"{hot} of them hot (hot_parcels {engine.config.hot_parcels}), "
        f"{(with_parcels - all_cold) / max(hot, 1):,.0f} bytes per hot parcel over its blob "
        f"({(with_parcels - all_cold) / 1024:,.0f} KiB in all); {(all_cold - without) / n:,.0f} bytes per parcel "
        "with none hot"
    )


def checkpoint_bytes(parcels: int, seed: int, every: int) -> None:
    """Models bytes per checkpoint: the whole blob against the core plus the changed baseline keys.

    One engine (one partition) over the default log, a checkpoint after every
    ``every`` records as a worker's checkpoint interval would cut them; the
    first 10 % of checkpoints (cold models) are left out of the averages.
    """

    events, _ = generate("default", seed=seed, parcels=parcels)
    records: list[ScanEvent | Tick] = list(interleave_ticks(events, 60_000))
    engine = Engine(EngineConfig())
    whole: list[int] = []
    split: list[tuple[int, int, int]] = []
    for start in range(0, len(records), every):
        engine.process(records[start : start + every])
        engine.take_changes()
        whole.append(len(engine.export_models()))
        models = engine.take_model_changes()
        split.append((len(models.core), len(models.baselines), sum(len(v) for v in models.baselines.values())))
    skip = len(whole) // 10
    whole, split = whole[skip:], split[skip:]
    n = len(whole)
    avg_whole = sum(whole) / n
    avg_core = sum(c for c, _, _ in split) / n
    avg_keys = sum(k for _, k, _ in split) / n
    avg_fields = sum(b for _, _, b in split) / n
    keys = sum(len(b.hist) for b in engine.env.baselines().values())
    print(
        f"{n} checkpoints of {every} records ({len(records)} in all, {keys} baseline keys at the end): "
        f"whole models blob {avg_whole:,.0f} B on average; core {avg_core:,.0f} B + {avg_keys:,.0f} changed "
        f"keys {avg_fields:,.0f} B = {avg_core + avg_fields:,.0f} B ({avg_whole / (avg_core + avg_fields):.1f}x less)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parcels", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--hot-parcels", type=int, default=None, help="EngineConfig.hot_parcels for --memory")
    parser.add_argument(
        "--memory", type=int, metavar="PARCELS_IN_FLIGHT", help="measure bytes per parcel instead"
    )
    parser.add_argument(
        "--checkpoint-bytes",
        type=int,
        metavar="RECORDS",
        help="measure the models bytes per checkpoint, one checkpoint per RECORDS records, instead",
    )
    args = parser.parse_args()
    if args.checkpoint_bytes:
        checkpoint_bytes(args.parcels, args.seed, args.checkpoint_bytes)
        return 0
    if args.memory:
        memory_per_parcel(args.parcels, args.seed, args.memory, args.hot_parcels)
        return 0
    events, _ = generate("default", seed=args.seed, parcels=args.parcels)
    records: list[ScanEvent | Tick] = list(interleave_ticks(events, 60_000))
    n_events = len(events)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        Engine(EngineConfig()).process(records)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0
    best = best_cpu = float("inf")
    alerts = 0
    for _ in range(args.repeat):
        engine = Engine(EngineConfig())
        t0, c0 = time.perf_counter(), time.process_time()
        alerts = len(engine.process(records))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    print(
        f"{n_events} events + {len(records) - n_events} ticks, {alerts} alerts: "
        f"best of {args.repeat} {best:.2f} s = {n_events / best:,.0f} events/s "
        f"({n_events / best_cpu:,.0f} events/s of CPU time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
