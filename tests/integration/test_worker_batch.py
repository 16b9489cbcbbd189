"""The partition-batch handler in process, on the real Redis and the real broker.

These drive :class:`BatchWorker.handle` directly with fetched-record shaped
objects, to pin down the offset rules (skip what the snapshot already
covers, seek back over a gap) and the engine-failure path (the record the
engine raises on is dead-lettered, the rest of the batch still counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from logiwatch.detectors.codec import encode_event
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import Alert, EventType, NodeType, ScanEvent, Tick
from logiwatch.streams.dlq import PROCESSING_ERROR, decode_dead_letter
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.records import DecodeLimits
from logiwatch.streams.state import Snapshot, SnapshotStore
from logiwatch.streams.worker import BatchOutcome, BatchWorker, PartitionEngine, RecordSink
from tests.helpers import wait_until
from tests.integration.test_worker_support import TopicReader

NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000
CONFIG = EngineConfig()


@dataclass
class Rec:
    offset: int
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int = 0
    timestamp: int = NOW_MS
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def paid(i: int, waybill: str) -> ScanEvent:
    return ScanEvent(
        event_id=f"e{i}",
        waybill_id=waybill,
        order_id=f"O{i}",
        merchant_id="M1",
        carrier_id="C1",
        event_type=EventType.ORDER_PAID,
        node_id="MERCHANT-1",
        node_type=NodeType.MERCHANT,
        region="R1",
        origin_region="R1",
        dest_region="R2",
        event_time=NOW_MS - 3600_000 + i,
        promised_dispatch_by=NOW_MS + DAY_MS,
        promised_delivery_by=NOW_MS + 3 * DAY_MS,
        category="books",
        order_amount=5.0,
    )


def batch(topic: str, first_offset: int, waybills: Sequence[str]) -> list[Rec]:
    return [
        Rec(first_offset + i, encode_event(paid(first_offset + i, wb)), wb.encode(), topic)
        for i, wb in enumerate(waybills)
    ]


class PoisonedEngine:
    """The real engine, except that it raises on one waybill (a stand-in for an engine bug)."""

    def __init__(self, inner: Engine, poison: str) -> None:
        self.inner, self.poison = inner, poison

    @property
    def watermark_ms(self) -> int | None:
        return self.inner.watermark_ms

    def process(self, records: Sequence[ScanEvent | Tick]) -> list[Alert]:
        if any(isinstance(r, ScanEvent) and r.waybill_id == self.poison for r in records):
            raise RuntimeError("engine bug")
        return self.inner.process(records)

    def take_changes(self) -> Any:
        return self.inner.take_changes()

    def take_model_changes(self) -> Any:
        return self.inner.take_model_changes()

    def stats(self) -> dict[str, float]:
        return self.inner.stats()


class ProducerSink:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        return await self.producer.send(
            topic, value=value, key=key, headers=list(headers) if headers else None
        )


def real_factory(snap: Snapshot) -> PartitionEngine:
    return Engine.restore(CONFIG, snap.parcels, snap.models, snap.baselines)


def poisoned_factory(snap: Snapshot) -> PartitionEngine:
    return PoisonedEngine(real_factory(snap), poison="WB-POISON")


@dataclass
class Rig:
    """One test's broker, Redis key prefix and fresh events, alerts and dead-letter topics."""

    kafka_bootstrap: str
    redis_url: str
    prefix: str
    events: str
    alerts: str
    dlq: str

    def run(
        self,
        scenario: Callable[[BatchWorker], Awaitable[list[BatchOutcome]]],
        factory: Callable[[Snapshot], PartitionEngine] = real_factory,
        checkpoint_interval_s: float = 0.0,
        checkpoint_max_records: int = 0,
    ) -> list[BatchOutcome]:
        """Run ``scenario`` against a :class:`BatchWorker` producing to this rig's topics."""

        async def main() -> list[BatchOutcome]:
            async with self.worker(
                factory,
                checkpoint_interval_s=checkpoint_interval_s,
                checkpoint_max_records=checkpoint_max_records,
            ) as (worker, _sink, _store):
                return await scenario(worker)

        return asyncio.run(main())

    @contextlib.asynccontextmanager
    async def worker(
        self,
        factory: Callable[[Snapshot], PartitionEngine] = real_factory,
        sink_factory: Callable[[AIOKafkaProducer], RecordSink] = lambda p: ProducerSink(p),
        **options: Any,
    ) -> AsyncIterator[tuple[BatchWorker, RecordSink, SnapshotStore]]:
        """A :class:`BatchWorker` on this rig's topics and Redis prefix (``options``: its knobs)."""

        producer = AIOKafkaProducer(bootstrap_servers=self.kafka_bootstrap, acks=1, enable_idempotence=False)
        client = aioredis.Redis.from_url(self.redis_url)
        await producer.start()
        sink = sink_factory(producer)
        store = SnapshotStore(client, self.prefix)
        try:
            worker = BatchWorker(
                engine_factory=factory,
                store=store,
                sink=sink,
                alerts_topic=self.alerts,
                dlq_topic=self.dlq,
                limits=DecodeLimits(
                    max_event_bytes=16 * 1024, max_past_ms=400 * DAY_MS, max_future_ms=DAY_MS
                ),
                metrics=WorkerMetrics(CollectorRegistry()),
                **options,
            )
            yield worker, sink, store
        finally:
            await producer.stop()
            await client.aclose()

    async def snapshot(self) -> Snapshot:
        """The snapshot in Redis of the events topic's partition 0."""

        client = aioredis.Redis.from_url(self.redis_url)
        try:
            return await SnapshotStore(client, self.prefix).load(self.events, 0)
        finally:
            await client.aclose()


@pytest.fixture
def rig(kafka_bootstrap: str, redis_url: str, redis_prefix: str, worker_topics: tuple[str, str, str]) -> Rig:
    return Rig(kafka_bootstrap, redis_url, redis_prefix, *worker_topics)


def test_records_the_snapshot_already_covers_are_skipped_and_gaps_are_sought_back(rig: Rig) -> None:
    events = rig.events

    async def scenario(worker: BatchWorker) -> list[BatchOutcome]:
        return [
            await worker.handle(batch(events, 0, ["WB1", "WB2", "WB3"]), None),  # fresh: 0..2
            await worker.handle(batch(events, 1, ["WB2", "WB3", "WB4"]), None),  # 1..2 again, then 3
            await worker.handle(batch(events, 9, ["WB9"]), None),  # gap 4..8: seek back to 4
            await worker.handle(batch(events, 9, ["WB9"]), None),  # same again: 4..8 are gone
        ]

    outcomes = rig.run(scenario)
    assert outcomes == [
        BatchOutcome(commit_offset=3),
        BatchOutcome(commit_offset=4),
        BatchOutcome(seek_offset=4),
        BatchOutcome(commit_offset=10),
    ]


def test_a_record_the_engine_raises_on_is_dead_lettered_and_the_rest_of_the_batch_counts(rig: Rig) -> None:
    events = rig.events

    async def scenario(worker: BatchWorker) -> list[BatchOutcome]:
        return [
            await worker.handle(batch(events, 0, ["WB1"]), None),
            await worker.handle(batch(events, 1, ["WB2", "WB-POISON", "WB3"]), None),
        ]

    outcomes = rig.run(scenario, poisoned_factory)
    assert outcomes[-1] == BatchOutcome(commit_offset=4)
    reader = TopicReader(rig.kafka_bootstrap, rig.dlq)
    try:
        wait_until(lambda: reader.poll(), timeout=30, what="the dead letter")
        letters = [decode_dead_letter(r.value) for r in reader.poll()]
    finally:
        reader.close()
    assert [(d.reason, d.offset, d.original_key()) for d in letters] == [(PROCESSING_ERROR, 2, b"WB-POISON")]
    restored = asyncio.run(rig.snapshot()).parcels
    assert {"WB1", "WB2", "WB3"} <= set(restored) and "WB-POISON" not in restored


def test_between_checkpoints_nothing_is_committable_until_the_state_is_in_redis(rig: Rig) -> None:
    events = rig.events
    seen: list[Any] = []

    async def scenario(worker: BatchWorker) -> list[BatchOutcome]:
        first = await worker.handle(batch(events, 0, ["WB1", "WB2", "WB3"]), None)
        seen.append(await rig.snapshot())
        seen.append(await worker.checkpoint(force=False))  # the interval has not passed
        seen.append(await worker.checkpoint(force=True))  # as before revocation or shutdown
        seen.append(await worker.checkpoint(force=True))  # nothing new: nothing to write
        return [first]

    outcomes = rig.run(scenario, checkpoint_interval_s=3600)
    assert outcomes == [BatchOutcome()]
    before, not_due, forced, again = seen
    assert before.offset is None and not before.parcels
    assert (not_due, forced, again) == ({}, {(events, 0): 3}, {})
    after = asyncio.run(rig.snapshot())
    assert after.offset == 3 and set(after.parcels) == {"WB1", "WB2", "WB3"} and after.models


def test_a_checkpoint_is_written_once_enough_records_are_unsaved(rig: Rig) -> None:
    events = rig.events

    async def scenario(worker: BatchWorker) -> list[BatchOutcome]:
        return [
            await worker.handle(batch(events, 0, ["WB1", "WB2", "WB3"]), None),
            await worker.handle(batch(events, 3, ["WB4", "WB5"]), None),
            await worker.handle(batch(events, 5, ["WB6"]), None),
        ]

    outcomes = rig.run(scenario, checkpoint_interval_s=3600, checkpoint_max_records=4)
    assert outcomes == [BatchOutcome(), BatchOutcome(commit_offset=5), BatchOutcome()]
    assert asyncio.run(rig.snapshot()).offset == 5


def test_an_engine_failure_between_checkpoints_keeps_the_records_applied_since_the_snapshot(rig: Rig) -> None:
    events = rig.events

    async def scenario(worker: BatchWorker) -> list[BatchOutcome]:
        await worker.handle(batch(events, 0, ["WB0"]), None)
        assert await worker.checkpoint(force=True) == {(events, 0): 1}
        return [
            await worker.handle(batch(events, 1, ["WB1"]), None),  # only in memory
            await worker.handle(batch(events, 2, ["WB2", "WB-POISON", "WB3"]), None),
        ]

    outcomes = rig.run(scenario, poisoned_factory, checkpoint_interval_s=3600)
    # The failure rebuilt the engine from the snapshot (WB0) plus WB1, and checkpointed at once.
    assert outcomes == [BatchOutcome(), BatchOutcome(commit_offset=5)]
    restored = asyncio.run(rig.snapshot()).parcels
    assert set(restored) == {"WB0", "WB1", "WB2", "WB3"}
