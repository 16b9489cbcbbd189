"""``logiwatch backtest``: run the detectors over a labelled event log and score them.

Prints a table (or ``--json``) of precision, recall, F1, detection delay and
lead time per anomaly type, late-delivery warnings scored by lead (read off
the events, so a real export without labels can be scored too), plus false
alerts per 1,000 normal parcels overall and in the cold start. The engine runs
exactly as the worker's would: the configured partition count and detection
settings (``[detection]`` of ``--config``), and clock ticks every
``--ticks-every-s``. ``--alerts-out`` writes every alert as JSONL for audit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from logiwatch.backtest import backtest, render_table
from logiwatch.commands.simulate import positive_float
from logiwatch.config import Settings, engine_config
from logiwatch.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", required=True, help="JSONL event log (from `logiwatch simulate`)")
    parser.add_argument("--labels", default=None, help="JSONL labels matching the events (optional)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--partitions", type=int, default=None, help="partitions (default: the events topic's)")
    parser.add_argument("--ticks-every-s", type=positive_float, default=60.0, help="clock tick cadence in event time")
    parser.add_argument("--scenario", default=None, help="name to report (default: the events file's folder)")
    parser.add_argument(
        "--order",
        choices=["file", "event-time"],
        default="file",
        help="file: as listed (refused when far out of time order, e.g. grouped by order); event-time: sorted",
    )
    parser.add_argument("--alerts-out", default=None, help="write every alert as JSONL to this file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("events", "labels"):
        if getattr(args, name) is not None and not Path(getattr(args, name)).is_file():
            raise ConfigError(f"--{name} file not found: {getattr(args, name)}")
    partitions = args.partitions if args.partitions is not None else settings.kafka.topics.events_partitions
    if partitions < 1:
        raise ConfigError(f"--partitions must be at least 1, got {partitions}")
    if args.ticks_every_s <= 0:
        raise ConfigError(f"--ticks-every-s must be positive, got {args.ticks_every_s}")
    result = backtest(
        args.events,
        args.labels,
        engine_config(settings),
        partitions=partitions,
        ticks_every_ms=int(args.ticks_every_s * 1000),
        scenario=args.scenario,
        order=args.order,
        alerts_out=args.alerts_out,
    )
    print(json.dumps(result, indent=2) if args.json else render_table(result))
    return 0
