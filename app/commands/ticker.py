"""``logiwatch ticker``: write clock ticks into every events partition.

Live mode ticks every ``Settings.worker.tick_interval_s`` (or
``--interval``) until Ctrl-C/SIGTERM, so silent parcels' deadlines fire
without new scans; ``--once`` sends one tick to every partition and exits.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from logiwatch.config import Settings
from logiwatch.errors import ConfigError, LogiwatchError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap HOST:PORT (default: settings kafka.bootstrap)")
    parser.add_argument("--topic", help="events topic (default: settings kafka.topics.events)")
    parser.add_argument(
        "--interval", type=float, help="seconds between ticks (default: settings worker.tick_interval_s)"
    )
    parser.add_argument("--once", action="store_true", help="send one tick to every partition and exit")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from logiwatch.streams.ticker import Ticker

    interval = args.interval if args.interval is not None else settings.worker.tick_interval_s
    if interval <= 0:
        raise ConfigError(f"--interval must be > 0, got {interval}")
    bootstrap = args.bootstrap or settings.kafka.bootstrap
    topic = args.topic or settings.kafka.topics.events
    try:
        ticker = Ticker(bootstrap, topic)
    except LogiwatchError:
        raise
    except Exception as exc:  # kafka-python's own errors (NoBrokersAvailable, ...)
        raise LogiwatchError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        if args.once:
            tick = ticker.tick()
            print(f"tick {tick.tick_time} sent to {len(ticker.partitions())} partitions of {topic}")
            return 0
        stop = threading.Event()

        def _stop(_signum: int, _frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        sent = ticker.run(interval, stop)
        print(f"ticker stopped after {sent} ticks")
        return 0
    finally:
        ticker.close()
