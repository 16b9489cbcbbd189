"""A pooled worker sends each partition's alerts in the engine's order (streams/worker.py, pool round).

With pooled learning a batch can stop at an epoch tick (its records from there
are held until every partition has published the epoch before), and the pool
round that follows the batch may release them at once. Their alerts come after
the batch's own in the engine's order; sending them first put a parcel's
``resolved`` on the alerts topic ahead of its ``firing``, and the alert service
then recorded the alert as resolved and never notified it (the pooled
test_redis_faults run). Here the real engine and the real ``RedisPool`` run
in process, over an in-memory stand-in for the few Redis calls the pool makes,
with one partition: the first ask for each epoch waits for a sync, so every
epoch boundary inside a batch is released by the round after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from logiwatch.detectors.codec import decode_alert, encode_event, encode_tick
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE, AlertStatus, ScanEvent, Tick
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.sim.traffic import generate
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.pool import RedisPool
from logiwatch.streams.records import DecodeLimits
from logiwatch.streams.state import Snapshot
from logiwatch.streams.worker import BatchWorker, PartitionEngine

POOLED = EngineConfig(pool_epoch_ms=6 * 3_600_000)
DAY_MS = 86_400_000


@dataclass
class Rec:
    offset: int
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "events"
    partition: int = 0
    timestamp: int = 0


class MemoryRedis:
    """The pool's Redis calls (pipelined HSET and EXPIRE, HGETALL) on a dict."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    def pipeline(self, transaction: bool = False) -> MemoryRedis.Pipe:
        assert not transaction, "the pool pipelines without MULTI"
        return MemoryRedis.Pipe(self)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    class Pipe:
        def __init__(self, db: MemoryRedis) -> None:
            self.db = db
            self.calls: list[tuple[str, str, bytes]] = []

        def hset(self, key: str, name: str, value: bytes) -> None:
            self.calls.append((key, name, value))

        def expire(self, key: str, seconds: int) -> None:
            pass

        async def execute(self) -> None:
            for key, name, value in self.calls:
                self.db.hashes.setdefault(key, {})[name.encode()] = value


class MemoryStore:
    """A snapshot store that keeps the latest snapshot per partition (it only has to answer)."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, int], int] = {}

    async def load(self, topic: str, partition: int) -> Snapshot:
        return Snapshot()

    async def save(self, topic: str, partition: int, *, offset: int, **_: Any) -> bool:
        self.saved[(topic, partition)] = offset
        return True

    async def retry(self, what: str, call: Any) -> Any:
        return await call()


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        self.sent.append((topic, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _factory(snap: Snapshot) -> PartitionEngine:
    return Engine.restore(POOLED, snap.parcels, snap.models, snap.baselines)


def _kafka_records(records: Sequence[ScanEvent | Tick]) -> list[Rec]:
    out = []
    for offset, r in enumerate(records):
        if isinstance(r, Tick):
            out.append(Rec(offset, encode_tick(r), None, [(TICK_HEADER, TICK_HEADER_VALUE)]))
        else:
            out.append(Rec(offset, encode_event(r), r.waybill_id.encode()))
    return out


class CountingPool(RedisPool):
    """The real pool, counting the syncs that completed an epoch an engine waited for."""

    completed = 0

    async def sync(self) -> bool:
        ready = await super().sync()
        self.completed += ready
        return ready


async def _run_worker(records: list[Rec], batch: int) -> tuple[list[bytes], int]:
    """The alerts the worker sends, in order, and how many epochs a held partition waited for."""

    pool = CountingPool(MemoryRedis(), prefix="t:", topic="events", partitions=1)  # type: ignore[arg-type]  # the pool's calls only
    sink = RecordingSink()
    worker = BatchWorker(
        engine_factory=_factory,  # type: ignore[arg-type]  # Engine is an InnerEngine
        store=MemoryStore(),  # type: ignore[arg-type]  # load, save and retry only
        sink=sink,
        alerts_topic="alerts",
        dlq_topic="dlq",
        limits=DecodeLimits(max_event_bytes=16 * 1024, max_past_ms=400 * DAY_MS, max_future_ms=DAY_MS, event_time_only=True),
        metrics=WorkerMetrics(CollectorRegistry()),
        pool=pool,
    )
    for i in range(0, len(records), batch):
        await worker.handle(records[i : i + batch], None)
        await worker.checkpoint()
    assert not pool.waiting
    return [value for topic, value in sink.sent if topic == "alerts"], pool.completed


def test_a_pooled_worker_sends_a_partitions_alerts_in_the_engines_order() -> None:
    events, _ = generate("default", seed=23, parcels=300)
    records = list(interleave_ticks(events, 3600_000))
    expected = run_partitioned(records, 1, POOLED)
    sent, waited = asyncio.run(_run_worker(_kafka_records(records), 300))
    got = [decode_alert(raw) for raw in sent]
    # every epoch boundary (but the first two) held the rest of its batch until the round after it
    assert waited > 3
    assert [(a.alert_id, a.status, a.revision) for a in got] == [(a.alert_id, a.status, a.revision) for a in expected]
    first_status: dict[str, AlertStatus] = {}
    for a in got:
        first_status.setdefault(a.alert_id, a.status)
    resolved_first = sorted(aid for aid, status in first_status.items() if status == AlertStatus.RESOLVED)
    assert not resolved_first, f"{len(resolved_first)} alerts resolved before they fired, e.g. {resolved_first[:3]}"
