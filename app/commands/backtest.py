"""``logiwatch backtest``: run the detectors over a labelled event log and score them.

Prints a table (or ``--json``) of precision, recall, F1, detection delay and
lead time per anomaly type, plus false alerts per 1,000 normal parcels. The
engine runs exactly as the worker's would: the configured partition count and
allowed lateness, and clock ticks every ``--ticks-every-s``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from logiwatch.backtest import backtest, render_table
from logiwatch.config import Settings
from logiwatch.detectors.engine import EngineConfig
from logiwatch.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", required=True, help="JSONL event log (from `logiwatch simulate`)")
    parser.add_argument("--labels", required=True, help="JSONL labels matching the events")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--partitions", type=int, default=None, help="partitions (default: the events topic's)")
    parser.add_argument("--ticks-every-s", type=float, default=60.0, help="clock tick cadence in event time")
    parser.add_argument("--scenario", default=None, help="name to report (default: the events file's folder)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("events", "labels"):
        if not Path(getattr(args, name)).is_file():
            raise ConfigError(f"--{name} file not found: {getattr(args, name)}")
    partitions = args.partitions if args.partitions is not None else settings.kafka.topics.events_partitions
    if partitions < 1:
        raise ConfigError(f"--partitions must be at least 1, got {partitions}")
    if args.ticks_every_s <= 0:
        raise ConfigError(f"--ticks-every-s must be positive, got {args.ticks_every_s}")
    config = EngineConfig(allowed_lateness_ms=settings.worker.allowed_lateness_ms)
    result = backtest(
        args.events,
        args.labels,
        config,
        partitions=partitions,
        ticks_every_ms=int(args.ticks_every_s * 1000),
        scenario=args.scenario,
    )
    print(json.dumps(result, indent=2) if args.json else render_table(result))
    return 0
