"""``logiwatch simulate``: realistic labelled logistics events, to files or to Kafka.

With ``--out DIR`` it writes ``DIR/events.jsonl`` (arrival order) and
``DIR/labels.jsonl`` (and ``DIR/malformed.jsonl`` with ``--malformed N``).
Without ``--out`` it produces the events to the events topic of
``--bootstrap`` (default: the configured broker), paced by ``--rate`` or
``--speed``, and writes the labels to ``--labels`` (default: the state
directory). The model and the label rules are in ``docs/simulator.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from logiwatch.config import Settings
from logiwatch.detectors.codec import write_jsonl
from logiwatch.errors import LogiwatchError
from logiwatch.sim.traffic import SCENARIOS, generate, malformed_lines


def _int_at_least(text: str, minimum: int, wording: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "0 or more")


#: Base parcels at most: the events are generated in memory (about 10 per parcel, x3 in peak).
MAX_PARCELS = 1_000_000


def parcel_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PARCELS:
        raise argparse.ArgumentTypeError(f"at most {MAX_PARCELS} (the events are built in memory), got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default", help="season (default: default)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed and options, same bytes (default 1)")
    parser.add_argument(
        "--parcels", type=parcel_count, default=20_000, help="base parcel count; peak multiplies it by 3 (default 20000)"
    )
    parser.add_argument("--start", default=None, help="ISO 8601 start of the order window (default: per scenario)")
    parser.add_argument("--out", type=Path, default=None, help="write events.jsonl and labels.jsonl into DIR")
    parser.add_argument("--bootstrap", default=None, help="Kafka HOST:PORT (default: kafka.bootstrap)")
    parser.add_argument("--topic", default=None, help="events topic (default: kafka.topics.events)")
    parser.add_argument("--labels", type=Path, default=None, help="labels file in Kafka mode (default: STATE_DIR/labels.jsonl)")
    parser.add_argument("--rate", type=positive_float, default=None, help="events per second (default: as fast as possible)")
    parser.add_argument("--speed", type=positive_float, default=None, help="event-time speed-up, e.g. 3600 = 1 h per second")
    parser.add_argument(
        "--ticks-every-s", type=positive_float, default=None, help="Kafka mode: interleave clock ticks every S event-time seconds"
    )
    parser.add_argument(
        "--malformed", type=non_negative_int, default=0, help="also emit N malformed messages (DIR/malformed.jsonl or the topic)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    events, labels = generate(args.scenario, args.seed, args.parcels, args.start)
    raw = malformed_lines(args.seed, args.malformed, events[:1000]) if args.malformed else []
    waybills = len({ev.waybill_id for ev in events})
    if args.out is not None:
        if args.bootstrap or args.rate or args.speed or args.ticks_every_s:
            raise LogiwatchError("--out writes files; --bootstrap/--rate/--speed/--ticks-every-s are for Kafka mode")
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            write_jsonl(args.out / "events.jsonl", events)
            write_jsonl(args.out / "labels.jsonl", labels)
            if raw:
                (args.out / "malformed.jsonl").write_bytes(b"".join(line + b"\n" for line in raw))
        except OSError as exc:
            raise LogiwatchError(f"cannot write to {args.out}: {exc.strerror}") from None
        print(
            f"simulate: {len(events)} events of {waybills} parcels, {len(labels)} labels"
            f"{f', {len(raw)} malformed' if raw else ''} -> {args.out} ({time.monotonic() - started:.1f} s)"
        )
        return 0

    from logiwatch.producer import final_tick_for, produce_events

    labels_path: Path = args.labels or settings.stack.state_dir / "labels.jsonl"
    try:
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(labels_path, labels)
    except OSError as exc:
        raise LogiwatchError(f"cannot write labels to {labels_path}: {exc.strerror}") from None
    bootstrap = args.bootstrap or settings.kafka.bootstrap
    topic = args.topic or settings.kafka.topics.events
    tick_ms = int(args.ticks_every_s * 1000) if args.ticks_every_s else None
    stats = produce_events(
        bootstrap,
        topic,
        events,
        rate=args.rate,
        speed=args.speed,
        tick_every_ms=tick_ms,
        final_tick_ms=final_tick_for(
            max(ev.event_time for ev in events),
            event_time_only=settings.worker.event_time_only,
            max_future_ms=settings.worker.max_event_future_ms,
        )
        if events
        else None,
        extra_raw=raw,
        progress=lambda n: print(f"simulate: {n}/{len(events)} events produced", flush=True),
    )
    print(
        f"simulate: produced {stats.events} events of {waybills} parcels, {stats.raw} malformed, "
        f"{stats.ticks} tick records to {topic} at {bootstrap} in {stats.seconds:.1f} s "
        f"({stats.events_per_s:.0f} events/s); {len(labels)} labels -> {labels_path}"
    )
    return 0
