"""Events until a baseline key is trusted, against the partition count (the real-feed issue's item 3).

Runs the sparse scenario through one engine per partition exactly as the backtest does
(``interleave_ticks`` + murmur2 routing) and reports, for a few carrier-level keys, how many
events of the whole stream had been consumed when the key first held ``min_count``
observations in one partition, in half of them and in every partition, with each partition
learning alone and with learning pooled across partitions (``detectors/pool.py``, epochs of
``--pool-epoch-h``): alone the figures grow with the partition count, pooled they should not.

    .venv/bin/python bench/warmup.py [--parcels 4000] [--seed 21] [--partitions 1 4 16] [--pool-epoch-h 6]
"""

from __future__ import annotations

import argparse
import sys

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import ScanEvent
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.pool import MemoryPool
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.sim.traffic import generate

#: (baseline, key): the milestone carrier ZTO's transit after the hand-over, its promise-relative
#: remaining time, and a full-feed carrier's dwell at its hubs
KEYS = (("dwell", "ZTO|2"), ("remaining_share", "ZTO|2"), ("dwell", "SF|3"))


def warmup(events: list[ScanEvent], partitions: int, config: EngineConfig) -> dict[str, list[int | None]]:
    engines = [Engine(config) for _ in range(partitions)]
    if config.pool_epoch_ms and partitions > 1:
        # records go to the engines one at a time, so no partition is ever an epoch ahead
        pool = MemoryPool(partitions)
        for p, engine in enumerate(engines):
            engine.attach_pool(pool, p)
    first: dict[str, list[int | None]] = {f"{b}:{k}": [None] * partitions for b, k in KEYS}
    seen = 0
    for rec in interleave_ticks(events, 60_000):
        if isinstance(rec, ScanEvent):
            seen += 1
            p = partition_for(rec.waybill_id, partitions)
            engines[p].process([rec])
            targets = [p]
        else:
            for e in engines:
                e.process([rec])
            targets = list(range(partitions))
        for p in targets:
            env = engines[p].env
            for b, k in KEYS:
                slot = first[f"{b}:{k}"]
                if slot[p] is None and env.baselines()[b].count(k) >= config.min_count:
                    slot[p] = seen
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--pool-epoch-h", type=float, default=6.0)
    args = parser.parse_args(argv)
    if args.parcels < 1 or any(n < 1 for n in args.partitions) or args.pool_epoch_h <= 0:
        print("warmup: --parcels, --partitions and --pool-epoch-h must be positive", file=sys.stderr)
        return 2
    events, _ = generate("sparse", seed=args.seed, parcels=args.parcels)
    modes = (("alone", EngineConfig()), ("pooled", EngineConfig(pool_epoch_ms=int(args.pool_epoch_h * 3_600_000))))
    print(f"sparse seed {args.seed}: {len(events)} events; events consumed until the key holds {modes[0][1].min_count}")
    print(f"{'key':<18} {'learning':>8} {'partitions':>10} {'first':>8} {'half':>8} {'all':>8}")
    for name, config in modes:
        for n in args.partitions:
            for key, at in warmup(events, n, config).items():
                got = sorted(x for x in at if x is not None)
                half = got[(n - 1) // 2] if len(got) >= (n + 1) // 2 else None
                every = got[-1] if len(got) == n else None
                print(f"{key:<18} {name:>8} {n:>10} {got[0] if got else '-':>8} {half or '-':>8} {every or 'never':>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
