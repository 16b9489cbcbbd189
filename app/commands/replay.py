"""``logiwatch replay FILE``: produce a JSONL event log to Kafka, keyed by waybill.

The file is the simulator's ``events.jsonl`` or a user's historical export in
the contract of ``docs/events.md``. Every line is validated *before* anything
is produced, so a bad line stops the replay with one line naming
``file:line`` and the topic receives nothing. Events go in event-time order
(a stable sort: ties keep the file order) or, with ``--order file``, exactly
as the file lists them (the simulator writes arrival order, noise included).
``--speed X`` replays X times faster than real time, ``--rate N`` at N
events per second, neither as fast as possible; ``--ticks-every-s S`` mixes
in clock ticks on every partition.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from logiwatch.commands._kafka import require_topic
from logiwatch.commands.simulate import positive_float
from logiwatch.config import Settings
from logiwatch.detectors.codec import read_events
from logiwatch.detectors.model import ScanEvent
from logiwatch.errors import LogiwatchError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="JSONL event log (one scan event per line)")
    parser.add_argument("--speed", type=positive_float, default=None, help="X times real time (default: as fast as possible)")
    parser.add_argument("--rate", type=positive_float, default=None, help="events per second (instead of --speed)")
    parser.add_argument("--topic", default=None, help="events topic (default: kafka.topics.events)")
    parser.add_argument("--bootstrap", default=None, help="Kafka HOST:PORT (default: kafka.bootstrap)")
    parser.add_argument(
        "--ticks-every-s", type=positive_float, default=None, help="interleave clock ticks every S event-time seconds"
    )
    parser.add_argument(
        "--order",
        choices=["event-time", "file"],
        default="event-time",
        help="event-time: sorted by event time (default); file: the file's own order",
    )


def load_events(path: Path, order: str = "event-time") -> list[ScanEvent]:
    """Every event of ``path``, validated; ``DecodeError`` names ``file:line`` of the first bad one."""

    if not path.is_file():
        raise LogiwatchError(f"no such event file: {path}")
    try:
        events = list(read_events(path))
    except OSError as exc:
        raise LogiwatchError(f"cannot read {path}: {exc.strerror}") from None
    if order == "event-time":
        events.sort(key=lambda ev: ev.event_time)  # stable: equal times keep the file order
    return events


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.speed is not None and args.rate is not None:
        raise LogiwatchError("give either --speed or --rate, not both")
    events = load_events(args.file, args.order)
    if not events:
        raise LogiwatchError(f"{args.file} holds no events")

    from logiwatch.producer import final_tick_for, produce_events

    bootstrap = args.bootstrap or settings.kafka.bootstrap
    topic = args.topic or settings.kafka.topics.events
    require_topic(bootstrap, topic, "--topic" if args.topic else "kafka.topics.events", "logiwatch-replay-admin")
    stats = produce_events(
        bootstrap,
        topic,
        events,
        rate=args.rate,
        speed=args.speed,
        tick_every_ms=int(args.ticks_every_s * 1000) if args.ticks_every_s else None,
        final_tick_ms=final_tick_for(
            max(ev.event_time for ev in events),
            event_time_only=settings.worker.event_time_only,
            max_future_ms=settings.worker.max_event_future_ms,
        ),
        progress=lambda n: print(f"replay: {n}/{len(events)} events produced", flush=True),
    )
    print(
        f"replay: produced {stats.events} events and {stats.ticks} tick records from {args.file} "
        f"to {topic} at {bootstrap} in {stats.seconds:.1f} s ({stats.events_per_s:.0f} events/s)"
    )
    return 0
