"""A/B of the pure detection engine: the ``detectors/`` of a git revision against the working tree.

Both engines get the same simulator log, batch by batch and alternately
(A's batch, then B's), so that the noise of a shared machine hits both
alike; the figure is the best CPU time of each over ``--repeat`` runs, under
the worker's collector settings (start-up heap frozen, generation 0 at
50,000). It also checks that both emit the very same alerts (as JSON, so an
int where a float was differs too) and write the very same checkpoint (the
``take_changes`` after each batch: upsert blobs and deletes, byte for byte),
which is what a performance change must keep. The old revision's
``detectors/`` is copied out of git into a temporary directory and imported
under another package name, so nothing is installed or checked out.

Run with ``.venv/bin/python bench/engine_ab.py --rev HEAD~3 [--parcels N]
[--scenario default|peak|sparse|mixed] [--limit RECORDS] [--repeat R] [--hot-parcels N]``
(``--hot-parcels``: B's ``EngineConfig.hot_parcels``, default its default). The hub facts
each engine hands the hub stage (``take_hub_summaries``) are compared too.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import ScanEvent, Tick
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.sim.scenarios import SCENARIOS
from logiwatch.sim.traffic import generate

ROOT = Path(__file__).resolve().parent.parent
OLD_PACKAGE = "_engine_ab_old"


def load_revision(rev: str, into: Path) -> ModuleType:
    """Copy ``detectors/`` at ``rev`` into ``into/OLD_PACKAGE/detectors`` and import its engine."""

    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:detectors"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    package = into / OLD_PACKAGE / "detectors"
    package.mkdir(parents=True)
    (into / OLD_PACKAGE / "__init__.py").write_text("")
    for name in names:
        if not name.endswith(".py"):
            continue
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:detectors/{name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (package / name).write_text(source.replace("logiwatch.detectors", f"{OLD_PACKAGE}.detectors"))
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{OLD_PACKAGE}.detectors.engine")


def _hub_facts(engine: Any) -> object:
    """The hub summaries since the last call, as plain data (none from a revision before the hub stage)."""

    take = getattr(engine, "take_hub_summaries", None)
    return [] if take is None else msgspec.to_builtins(take())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="git revision whose detectors/ is engine A")
    parser.add_argument("--scenario", default="default", choices=tuple(SCENARIOS))
    parser.add_argument("--parcels", type=int, default=8_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N records (0: all)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--hot-parcels", type=int, default=None, help="B's EngineConfig.hot_parcels")
    args = parser.parse_args()
    if args.hot_parcels is not None and args.hot_parcels < 0:
        parser.error(f"--hot-parcels must be >= 0, got {args.hot_parcels}")
    for name in ("parcels", "repeat", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.limit < 0:
        parser.error(f"--limit must be >= 0, got {args.limit}")
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{args.rev}:detectors"], capture_output=True
    )
    if probe.returncode != 0:
        parser.error(f"--rev {args.rev}: not a git revision with a detectors/ folder")

    events, _ = generate(args.scenario, seed=args.seed, parcels=args.parcels)
    records: list[ScanEvent | Tick] = list(interleave_ticks(events, 60_000))
    if args.limit:
        records = records[: args.limit]
    n_events = sum(1 for r in records if type(r) is ScanEvent)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_revision(args.rev, Path(tmp))
        old_model = importlib.import_module(f"{OLD_PACKAGE}.detectors.model")
        # A's records must be A's own classes (the engine dispatches on the type)
        old_records = [
            msgspec.convert(
                msgspec.to_builtins(r), old_model.ScanEvent if type(r) is ScanEvent else old_model.Tick
            )
            for r in records
        ]
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 10, 10)
        best = {"A": float("inf"), "B": float("inf")}
        same = True
        for _ in range(args.repeat):
            a: Any = old.Engine(old.EngineConfig())
            b = Engine(EngineConfig() if args.hot_parcels is None else EngineConfig(hot_parcels=args.hot_parcels))
            spent = {"A": 0.0, "B": 0.0}
            for i in range(0, len(records), args.batch):
                t = time.process_time()
                out_a = a.process(old_records[i : i + args.batch])
                changes_a = a.take_changes()
                spent["A"] += time.process_time() - t
                t = time.process_time()
                out_b = b.process(records[i : i + args.batch])
                changes_b = b.take_changes()
                spent["B"] += time.process_time() - t
                if same and msgspec.json.encode(out_a) != msgspec.json.encode(out_b):
                    same = False
                if same and (changes_a.upserts, changes_a.deletes) != (changes_b.upserts, changes_b.deletes):
                    same = False
                if same and _hub_facts(a) != _hub_facts(b):
                    same = False
            best = {k: min(best[k], spent[k]) for k in best}
    print(
        f"{n_events:,} events ({args.scenario}, {args.parcels:,} parcels, seed {args.seed}); "
        f"A = {args.rev}: {n_events / best['A']:,.0f} events/s; B = working tree: "
        f"{n_events / best['B']:,.0f} events/s; B/A = {best['A'] / best['B']:.3f}x; "
        f"same alerts and checkpoints: {'yes' if same else 'NO'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
