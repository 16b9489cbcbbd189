"""Events produced to the real broker come back whole: once each, with their key, in per-key order.

Produces a few hundred scan events keyed by waybill with kafka-python (the
producer the simulator and ``replay`` use), then reads the topic back with
both clients the shells use (aiokafka for the worker, kafka-python for
tools). Reads stop on a record count, never on ``end_offsets()``, which
Tansu reports wrongly (see kafka-on-tansu.md, trap 1).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer, KafkaProducer

from logiwatch.detectors.codec import decode_event, encode_event
from logiwatch.detectors.model import EventType, NodeType, ScanEvent
from logiwatch.detectors.partitioning import partition_for

PARTITIONS = 4
T0 = 1_790_000_000_000
JOURNEY = [
    (EventType.ORDER_PAID, NodeType.MERCHANT),
    (EventType.DISPATCHED, NodeType.MERCHANT),
    (EventType.PICKED_UP, NodeType.OUTLET),
    (EventType.HUB_ARRIVED, NodeType.HUB),
    (EventType.HUB_DEPARTED, NodeType.HUB),
    (EventType.OUT_FOR_DELIVERY, NodeType.STATION),
    (EventType.DELIVERED, NodeType.CUSTOMER),
]


@dataclass(frozen=True)
class Received:
    key: bytes | None
    partition: int
    offset: int
    value: bytes


def build_events(n_waybills: int = 60, seed: int = 7) -> list[ScanEvent]:
    """Whole journeys for ``n_waybills`` parcels, interleaved as a live feed would be."""

    rng = random.Random(seed)
    per_waybill: list[list[ScanEvent]] = []
    for w in range(n_waybills):
        waybill = f"WB{w:05d}"
        t = T0 + rng.randrange(0, 3_600_000)
        scans = []
        for i, (etype, ntype) in enumerate(JOURNEY):
            t += rng.randrange(60_000, 6 * 3_600_000)
            scans.append(
                ScanEvent(
                    event_id=f"{waybill}-{i}",
                    waybill_id=waybill,
                    order_id=f"O{w:05d}",
                    merchant_id=f"M{w % 7}",
                    carrier_id=f"C{w % 3}",
                    event_type=etype,
                    node_id=f"{ntype.value}-{w % 5}",
                    node_type=ntype,
                    region="east",
                    origin_region="east",
                    dest_region="north",
                    event_time=t,
                    promised_dispatch_by=T0 + 86_400_000,
                    promised_delivery_by=T0 + 5 * 86_400_000,
                    category="home_textile",
                    order_amount=float(10 + w),
                )
            )
        per_waybill.append(scans)
    # Interleave journeys at random while keeping each parcel's scans in order.
    out: list[ScanEvent] = []
    cursors = [0] * n_waybills
    live = list(range(n_waybills))
    while live:
        w = rng.choice(live)
        out.append(per_waybill[w][cursors[w]])
        cursors[w] += 1
        if cursors[w] == len(JOURNEY):
            live.remove(w)
    return out


def produce(bootstrap: str, topic: str, events: list[ScanEvent]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for ev in events:
            producer.send(topic, key=ev.waybill_id.encode(), value=encode_event(ev))
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def consume_with_aiokafka(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Received]:
    async def run() -> list[Received]:
        # No group: a fresh group's first join costs about half the session timeout on Tansu.
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got: list[Received] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(got) < expected and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, records in batches.items():
                    got += [Received(r.key, tp.partition, r.offset, r.value) for r in records]
            # One more fetch: a duplicate past the expected count must show up.
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                got += [Received(r.key, tp.partition, r.offset, r.value) for r in records]
        finally:
            await consumer.stop()
        return got

    return asyncio.run(run())


def consume_with_kafka_python(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0
) -> list[Received]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got: list[Received] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=1000).items():
                got += [Received(r.key, tp.partition, r.offset, r.value) for r in records]
        for tp, records in consumer.poll(timeout_ms=500).items():
            got += [Received(r.key, tp.partition, r.offset, r.value) for r in records]
    finally:
        consumer.close()
    return got


def assert_all_once_keyed_in_order(sent: list[ScanEvent], got: list[Received]) -> None:
    decoded = [(r, decode_event(r.value, key=r.key)) for r in got]  # key must equal the waybill
    ids = [ev.event_id for _, ev in decoded]
    assert len(ids) == len(set(ids)), "an event arrived twice"
    assert set(ids) == {ev.event_id for ev in sent}, "an event was lost"
    assert {ev.event_id: ev for _, ev in decoded} == {ev.event_id: ev for ev in sent}
    # Same partitioner everywhere (murmur2): the core can predict where a parcel lives.
    for r, ev in decoded:
        assert r.partition == partition_for(ev.waybill_id, PARTITIONS)
    sent_order: dict[str, list[str]] = {}
    for ev in sent:
        sent_order.setdefault(ev.waybill_id, []).append(ev.event_id)
    got_order: dict[str, list[str]] = {}
    for _, ev in sorted(decoded, key=lambda pair: (pair[0].partition, pair[0].offset)):
        got_order.setdefault(ev.waybill_id, []).append(ev.event_id)
    assert got_order == sent_order


@pytest.fixture(scope="module")
def events() -> list[ScanEvent]:
    return build_events()


def test_events_produced_by_waybill_come_back_once_with_key_in_order_via_aiokafka(
    kafka_bootstrap: str, topic_factory: Callable[..., str], events: list[ScanEvent]
) -> None:
    topic = topic_factory("ingest", PARTITIONS)
    produce(kafka_bootstrap, topic, events)
    got = consume_with_aiokafka(kafka_bootstrap, topic, len(events))
    assert len(got) == len(events)
    assert_all_once_keyed_in_order(events, got)


def test_events_produced_by_waybill_come_back_once_with_key_in_order_via_kafka_python(
    kafka_bootstrap: str, topic_factory: Callable[..., str], events: list[ScanEvent]
) -> None:
    topic = topic_factory("ingest", PARTITIONS)
    produce(kafka_bootstrap, topic, events)
    got = consume_with_kafka_python(kafka_bootstrap, topic, len(events))
    assert len(got) == len(events)
    assert_all_once_keyed_in_order(events, got)
