"""``logiwatch demo [--duration SECONDS]``: events flowing through the embedded stack.

Starts the embedded stack (or reuses one that runs), creates the topics,
produces a stream of scan events (the simulator's when ``logiwatch.simulator``
provides ``generate``, else a small synthetic one) with a few malformed
records mixed in, and consumes the topic back with an aiokafka consumer that
decodes every record with ``decode_event``: good events are counted as
consumed, rejects as dead letters by reason. Progress lines every few
seconds, a summary at the end. Ends after ``--duration`` or on Ctrl-C, and
stops only what it started. Records of this run carry a run-id header so a
reused broker's older records are not counted (end offsets on Tansu are
unreliable, so "start at the end" is not an option). Later issues add the
worker and the alert service to this command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import random
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from logiwatch import stack
from logiwatch.config import Settings
from logiwatch.detectors.codec import decode_event, encode_event
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import TICK_HEADER, EventType, NodeType, ScanEvent
from logiwatch.errors import LogiwatchError

RUN_HEADER = "logiwatch-demo-run"
#: One record in this many is malformed on purpose, to show the dead-letter count.
MALFORMED_EVERY = 250
MALFORMED: tuple[bytes, ...] = (
    b'{"event_id": "broken',  # bad JSON
    b'{"event_id": "x1", "waybill_id": "WB-X"}',  # missing fields
    b"[1, 2, 3]",  # not an object
)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=_positive, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--rate", type=_positive, default=500.0, help="events produced per second (default 500)"
    )
    parser.add_argument("--parcels", type=int, default=2000, help="parcels to simulate (default 2000)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument(
        "--progress-every", type=_positive, default=5.0, help="seconds between progress lines"
    )


@dataclass
class Counts:
    produced: int = 0
    produced_malformed: int = 0
    consumed: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.dlq.items()))
        dlq = sum(self.dlq.values())
        return (
            f"[{time.monotonic() - self.started:6.1f}s] produced {self.produced + self.produced_malformed}"
            f"  consumed {self.consumed}  dlq {dlq}" + (f" ({reasons})" if reasons else "")
        )


# --------------------------------------------------------------------------- the event source


def _synthetic(parcels: int, seed: int) -> Iterator[ScanEvent]:
    """Plain journeys for ``parcels`` parcels, interleaved, event times near now."""

    rng = random.Random(seed)
    journey = [
        (EventType.ORDER_PAID, NodeType.MERCHANT),
        (EventType.DISPATCHED, NodeType.MERCHANT),
        (EventType.PICKED_UP, NodeType.OUTLET),
        (EventType.HUB_ARRIVED, NodeType.HUB),
        (EventType.HUB_DEPARTED, NodeType.HUB),
        (EventType.OUT_FOR_DELIVERY, NodeType.STATION),
        (EventType.DELIVERED, NodeType.CUSTOMER),
    ]
    t0 = int(time.time() * 1000) - 3 * 86_400_000
    open_parcels: dict[int, tuple[int, int]] = {}  # parcel -> (next step, last event time)
    next_parcel = 0
    while next_parcel < parcels or open_parcels:
        if next_parcel < parcels and (len(open_parcels) < 200 or not open_parcels):
            open_parcels[next_parcel] = (0, t0 + next_parcel * 30_000)
            next_parcel += 1
        p = rng.choice(list(open_parcels))
        step, t = open_parcels[p]
        t += rng.randrange(60_000, 4 * 3_600_000)
        etype, ntype = journey[step]
        yield ScanEvent(
            event_id=f"demo-{p}-{step}",
            waybill_id=f"WB{p:07d}",
            order_id=f"O{p:07d}",
            merchant_id=f"M{p % 37}",
            carrier_id=f"C{p % 4}",
            event_type=etype,
            node_id=f"{ntype.value}-{p % 9}",
            node_type=ntype,
            region="east",
            origin_region="east",
            dest_region="north",
            event_time=t,
            promised_dispatch_by=t0 + 86_400_000,
            promised_delivery_by=t0 + 6 * 86_400_000,
            category="general",
            order_amount=float(20 + p % 300),
        )
        if step + 1 == len(journey):
            del open_parcels[p]
        else:
            open_parcels[p] = (step + 1, t)


def event_source(parcels: int, seed: int) -> tuple[str, Iterator[ScanEvent]]:
    """The simulator's events if it is installed with ``generate``, else the synthetic stream."""

    try:
        simulator = importlib.import_module("logiwatch.simulator")
    except ImportError:
        simulator = None
    generate = getattr(simulator, "generate", None)
    if generate is not None:
        try:
            events, _labels = generate(scenario="default", seed=seed, parcels=parcels)
            return "simulator", iter(events)
        except TypeError:
            pass  # an API this first version does not know yet: fall back below
    return "synthetic", _synthetic(parcels, seed)


# --------------------------------------------------------------------------- the run


async def _produce(
    bootstrap: str,
    topic: str,
    source: Iterator[ScanEvent],
    rate: float,
    run_id: bytes,
    counts: Counts,
    stop: asyncio.Event,
) -> None:
    from aiokafka import AIOKafkaProducer

    # acks="all" without idempotence: aiokafka cannot get a producer id from Tansu.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    headers = [(RUN_HEADER, run_id)]
    bad = itertools.cycle(MALFORMED)
    try:
        started = time.monotonic()
        sent = 0
        for ev in source:
            if stop.is_set():
                break
            await producer.send(topic, key=ev.waybill_id.encode(), value=encode_event(ev), headers=headers)
            counts.produced += 1
            sent += 1
            if sent % MALFORMED_EVERY == 0:
                await producer.send(topic, key=b"malformed", value=next(bad), headers=headers)
                counts.produced_malformed += 1
            # Pace by the schedule, not per record, so the rate holds under jitter.
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), ahead)
        else:
            print("demo: event source exhausted; still consuming")
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, run_id: bytes, counts: Counts, done: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    # No group: the demo reads everything itself, and a first group join on Tansu takes seconds.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not done.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for rec in records:
                    headers = dict(rec.headers or ())
                    if headers.get(RUN_HEADER) != run_id or TICK_HEADER in headers:
                        continue
                    try:
                        decode_event(rec.value or b"", key=None, offset=rec.offset)
                    except DecodeError as exc:
                        counts.dlq[exc.reason] += 1
                    else:
                        counts.consumed += 1
    finally:
        await consumer.stop()


async def _progress(counts: Counts, every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if not stop.is_set():
            print(counts.line(), flush=True)


async def _run(args: argparse.Namespace, bootstrap: str, settings: Settings) -> Counts:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    counts = Counts()
    run_id = uuid.uuid4().hex.encode()
    kind, source = event_source(args.parcels, args.seed)
    topic = settings.kafka.topics.events
    print(
        f"demo: producing {kind} events to {topic} at {args.rate:g}/s on {bootstrap}; Ctrl-C to stop",
        flush=True,
    )
    done_consuming = asyncio.Event()
    consumer = asyncio.create_task(_consume(bootstrap, topic, run_id, counts, done_consuming))
    producer = asyncio.create_task(_produce(bootstrap, topic, source, args.rate, run_id, counts, stop))
    progress = asyncio.create_task(_progress(counts, args.progress_every, stop))
    try:
        if args.duration is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        else:
            await stop.wait()
        stop.set()
        await producer
        # Let the consumer catch up with what was produced (bounded: a stuck broker must not hang us).
        deadline = time.monotonic() + 15.0
        total = counts.produced + counts.produced_malformed
        while counts.consumed + sum(counts.dlq.values()) < total and time.monotonic() < deadline:
            if consumer.done():
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        done_consuming.set()
        for task in (producer, progress):
            if not task.done():
                task.cancel()
        results = await asyncio.gather(consumer, producer, progress, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            raise LogiwatchError(f"demo failed: {type(result).__name__}: {result}")
    return counts


def _bootstrap(settings: Settings) -> tuple[str, bool]:
    """A running broker to use, and whether this command started the stack."""

    for status in stack.stack_status(settings):
        if status.name == "kafka" and status.running:
            print(f"demo: reusing the running stack (kafka {status.url})")
            stack.create_topics(status.url, stack.stack_topics(settings))
            return status.url, False
    host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
    try:
        # A cheap connect first: probing a dead address with a Kafka client takes seconds.
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0).close()
        stack.wait_for_kafka(settings.kafka.bootstrap, timeout=5.0)
    except (OSError, ValueError, LogiwatchError):
        urls = stack.stack_up(settings, log=lambda line: print(f"demo: {line}"))
        return urls["kafka"], True
    print(f"demo: using the broker at {settings.kafka.bootstrap}")
    stack.create_topics(settings.kafka.bootstrap, stack.stack_topics(settings))
    return settings.kafka.bootstrap, False


def run(args: argparse.Namespace, settings: Settings) -> int:
    stack.quiet_client_logs()
    bootstrap, started = _bootstrap(settings)
    try:
        counts = asyncio.run(_run(args, bootstrap, settings))
    finally:
        if started:
            stack.stack_down(settings, log=lambda line: print(f"demo: {line}"))
    dlq = sum(counts.dlq.values())
    produced = counts.produced + counts.produced_malformed
    missing = produced - counts.consumed - dlq
    elapsed = time.monotonic() - counts.started
    print(
        f"demo summary: {elapsed:.1f}s, produced {produced} ({counts.produced} events, "
        f"{counts.produced_malformed} malformed), consumed {counts.consumed}, dead letters {dlq}, missing {missing}"
    )
    if missing:
        raise LogiwatchError(f"{missing} produced records were not read back within 15 s of stopping")
    return 0
