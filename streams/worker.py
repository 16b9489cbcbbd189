"""The partition-batch handler: decode, dead-letter, detect, produce, checkpoint.

One :class:`BatchWorker` serves every partition a worker process owns. The
batch consumer (:mod:`logiwatch.streams.consumer`) hands it one fetched
partition batch at a time, in offset order, and it:

1. decodes each record (ticks by their header), sending failures to the
   dead-letter topic with a reason code, never stopping and never dropping;
2. runs the partition's engine over the decoded records in order;
3. produces the alerts (keyed by ``alert_id``) and dead letters and awaits
   every acknowledgement;
4. checkpoints: the engine's changed parcels, its models and the next offset
   go to Redis in one pipeline;
5. only then reports ``last offset + 1`` as committable.

So the committed offset is never ahead of the Redis snapshot, and an alert
is in Kafka before the state that remembers emitting it. After a crash the
records between the committed offset and the end are replayed over the
snapshot and re-emit the same alerts (same ids, same content).

Restore rule. On the first batch after assignment the engine is rebuilt
from Redis; from then on the worker knows ``S``, the next offset its state
has not applied, and compares it with ``F``, the first offset of every
fetched batch (after assignment ``F`` is the committed offset):

* ``F == S``: the normal case.
* ``F < S``: the state covers more than was committed (the process died
  between the Redis write and the commit, or a commit failed during a
  rebalance). Records below ``S`` are already applied and their alerts were
  already produced: skip them rather than apply them twice.
* ``F > S`` (or no snapshot and ``F > 0``): the committed offset is ahead of
  the state (Redis lost data) or the fetcher skipped records. Seek back to
  ``S`` (0 without a snapshot) and rebuild; if the broker answers from the
  same later offset again, those records are gone: continue with a warning.

Snapshot offsets only grow (:class:`~logiwatch.streams.state.SnapshotStore`
fences stale writers), so to re-process a topic from the start, delete the
partition snapshots as well as resetting the group's offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from logiwatch.detectors.codec import decode_event, decode_tick, encode_alert
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE, Alert, ScanEvent, Tick
from logiwatch.streams.dlq import PROCESSING_ERROR, DeadLetter, encode_dead_letter, make_dead_letter
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.state import SnapshotStore

log = logging.getLogger(__name__)

Record = ScanEvent | Tick

#: Seconds between refreshes of the engine-stats gauges per partition.
STATS_INTERVAL_S = 5.0


class EngineChanges(Protocol):
    @property
    def upserts(self) -> Mapping[str, bytes]: ...

    @property
    def deletes(self) -> Sequence[str]: ...


class PartitionEngine(Protocol):
    """What the shell needs of ``logiwatch.detectors.engine.Engine``."""

    @property
    def watermark_ms(self) -> int | None: ...

    def process(self, records: Sequence[Record]) -> list[Alert]: ...

    def take_changes(self) -> EngineChanges: ...

    def export_models(self) -> bytes: ...

    def stats(self) -> dict[str, float]: ...


#: Rebuilds a partition's engine from its snapshot: (parcels, models) -> engine.
EngineFactory = Callable[[Mapping[str, bytes], bytes | None], PartitionEngine]


class KafkaRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` the handler reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class RecordSink(Protocol):
    """Produces one record; the returned awaitable resolves when acknowledged."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class BatchOutcome:
    """What the consumer should do after a batch: mark an offset or seek."""

    commit_offset: int | None = None
    seek_offset: int | None = None


@dataclass
class DecodeLimits:
    max_event_bytes: int
    max_past_ms: int
    max_future_ms: int


@dataclass
class _Partition:
    engine: PartitionEngine
    next_offset: int
    rewind_target: int | None = None
    stats: dict[str, float] = field(default_factory=dict)
    stats_at: float = float("-inf")


def is_tick(headers: Sequence[tuple[str, bytes]] | None) -> bool:
    if not headers:
        return False
    return any(k == TICK_HEADER and v == TICK_HEADER_VALUE for k, v in headers)


def decode_records(
    records: Sequence[KafkaRecord], limits: DecodeLimits, now_ms: int
) -> tuple[list[tuple[int, Record]], list[DeadLetter]]:
    """Split a partition batch into decoded (offset, record) pairs and dead letters.

    Pure apart from its arguments; keeps partition order.
    """

    good: list[tuple[int, Record]] = []
    dead: list[DeadLetter] = []
    for rec in records:
        value = rec.value if rec.value is not None else b""
        try:
            if is_tick(rec.headers):
                item: Record = decode_tick(value)
                if item.tick_time > now_ms + limits.max_future_ms:
                    # a tick from the future would fire every pending deadline at once
                    raise DecodeError("time_out_of_range", f"tick_time {item.tick_time} is in the future")
            else:
                item = decode_event(
                    value,
                    now_ms=now_ms,
                    max_bytes=limits.max_event_bytes,
                    max_past_ms=limits.max_past_ms,
                    max_future_skew_ms=limits.max_future_ms,
                    offset=rec.offset,
                    key=rec.key,
                )
        except DecodeError as exc:
            dead.append(
                make_dead_letter(
                    reason=exc.reason,
                    detail=exc.detail,
                    topic=rec.topic,
                    partition=rec.partition,
                    offset=rec.offset,
                    key=rec.key,
                    value=rec.value,
                    failed_at_ms=now_ms,
                )
            )
            continue
        good.append((rec.offset, item))
    return good, dead


class BatchWorker:
    """Owns one engine per assigned partition and handles their batches."""

    def __init__(
        self,
        *,
        engine_factory: EngineFactory,
        store: SnapshotStore,
        sink: RecordSink,
        alerts_topic: str,
        dlq_topic: str,
        limits: DecodeLimits,
        metrics: WorkerMetrics,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.engine_factory = engine_factory
        self.store = store
        self.sink = sink
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic
        self.limits = limits
        self.metrics = metrics
        self.wall_ms = wall_ms
        self._partitions: dict[tuple[str, int], _Partition] = {}

    @property
    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self._partitions)

    async def _restore(self, topic: str, partition: int) -> _Partition:
        snap = await self.store.load(topic, partition)
        engine = self.engine_factory(snap.parcels, snap.models)
        log.info(
            "restored %s[%d]: %d parcels, snapshot offset %s",
            topic,
            partition,
            len(snap.parcels),
            snap.offset,
        )
        return _Partition(engine=engine, next_offset=snap.offset or 0)

    def drop(self, topic: str, partition: int) -> None:
        """Forget a revoked partition's engine; its state is already in Redis."""

        if self._partitions.pop((topic, partition), None) is not None:
            log.info("dropped %s[%d] (revoked)", topic, partition)
        for gauge in (self.metrics.consumer_lag, self.metrics.watermark_delay):
            try:
                gauge.remove(str(partition))
            except KeyError:  # never set for this partition
                pass
        self._publish_stats()

    async def handle(self, records: Sequence[KafkaRecord], highwater: int | None) -> BatchOutcome:
        """Handle one partition batch (non-empty, offset order)."""

        started = time.perf_counter()
        first = records[0]
        topic, partition = first.topic, first.partition
        part = self._partitions.get((topic, partition))
        if part is None:
            part = self._partitions[(topic, partition)] = await self._restore(topic, partition)
        if first.offset > part.next_offset:
            # A gap between the state and the fetch: the committed offset is
            # ahead of the snapshot, or the fetcher skipped records (seen on
            # Tansu under load after a rebalance). Seek back to the state's
            # offset; only if the broker answers from the same later offset
            # again are the records truly gone.
            if part.rewind_target != part.next_offset:
                part.rewind_target = part.next_offset
                log.warning(
                    "%s[%d]: fetched from %d but the state is at %d; seeking back",
                    topic,
                    partition,
                    first.offset,
                    part.next_offset,
                )
                return BatchOutcome(seek_offset=part.next_offset)
            log.warning(
                "%s[%d]: records %d..%d are gone from the broker; continuing from %d",
                topic,
                partition,
                part.next_offset,
                first.offset - 1,
                first.offset,
            )
        elif first.offset < part.next_offset:
            # Already in the state (e.g. the process died between checkpoint
            # and commit, or a commit failed during a rebalance): applying
            # them again would double-count, and their alerts are out already.
            records = [r for r in records if r.offset >= part.next_offset]
            if not records:
                return BatchOutcome(commit_offset=part.next_offset)
        last = records[-1]
        now_ms = self.wall_ms()
        self.metrics.events_consumed.labels(topic=topic, partition=str(partition)).inc(len(records))

        decoded, dead = decode_records(records, self.limits, now_ms)
        alerts = await self._process(part, topic, partition, decoded, records, dead, now_ms)

        pending: list[Awaitable[Any]] = []
        for letter in dead:
            pending.append(
                await self.sink.send(self.dlq_topic, letter.original_key(), encode_dead_letter(letter))
            )
        for alert in alerts:
            pending.append(
                await self.sink.send(self.alerts_topic, alert.alert_id.encode(), encode_alert(alert))
            )
        if pending:
            # Alerts and dead letters are acknowledged before the state that
            # remembers them is written (and long before the offset commits).
            await asyncio.gather(*pending)
        for letter in dead:
            self.metrics.dlq.labels(reason=letter.reason).inc()
            if letter.reason != PROCESSING_ERROR:
                self.metrics.decode_failures.labels(reason=letter.reason).inc()
        if alerts:
            latency_s = max(0.0, time.time() - last.timestamp / 1000.0)
            for alert in alerts:
                self.metrics.alerts_emitted.labels(
                    type=alert.alert_type.value, status=alert.status.value, severity=alert.severity.value
                ).inc()
                self.metrics.event_to_alert.observe(latency_s)

        changes = part.engine.take_changes()
        next_offset = last.offset + 1
        written = await self.store.save(
            topic,
            partition,
            upserts=changes.upserts,
            deletes=changes.deletes,
            models=part.engine.export_models(),
            offset=next_offset,
        )
        if not written:
            # Another worker owns this partition now and has checkpointed
            # past us: our state is stale, so forget it and commit nothing.
            log.warning("%s[%d]: a newer snapshot exists; dropping this stale engine", topic, partition)
            self._partitions.pop((topic, partition), None)
            return BatchOutcome()
        part.next_offset = next_offset
        if time.monotonic() - part.stats_at >= STATS_INTERVAL_S:
            # stats() walks every parcel: refresh the gauges on a cadence, not per batch.
            part.stats, part.stats_at = part.engine.stats(), time.monotonic()
            self._publish_stats()
        if highwater is not None:
            self.metrics.consumer_lag.labels(partition=str(partition)).set(max(0, highwater - next_offset))
        watermark = part.engine.watermark_ms
        if watermark is not None:
            self.metrics.watermark_delay.labels(partition=str(partition)).set((now_ms - watermark) / 1000.0)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return BatchOutcome(commit_offset=next_offset)

    async def _process(
        self,
        part: _Partition,
        topic: str,
        partition: int,
        decoded: list[tuple[int, Record]],
        records: Sequence[KafkaRecord],
        dead: list[DeadLetter],
        now_ms: int,
    ) -> list[Alert]:
        try:
            return part.engine.process([item for _, item in decoded])
        except Exception:  # an engine bug must not stop the partition or lose the batch
            log.exception("%s[%d]: engine failed on a batch; retrying record by record", topic, partition)
        # The snapshot equals the state before this batch (we checkpoint every
        # batch), so rebuild from it and feed the records one at a time: the
        # ones the engine rejects are dead-lettered, the rest still count.
        snap = await self.store.load(topic, partition)
        part.engine = self.engine_factory(snap.parcels, snap.models)
        by_offset = {r.offset: r for r in records}
        alerts: list[Alert] = []
        for offset, item in decoded:
            try:
                alerts.extend(part.engine.process([item]))
            except Exception as exc:
                rec = by_offset[offset]
                dead.append(
                    make_dead_letter(
                        reason=PROCESSING_ERROR,
                        detail=f"{type(exc).__name__}: {exc}",
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        key=rec.key,
                        value=rec.value,
                        failed_at_ms=now_ms,
                    )
                )
        return alerts

    def _publish_stats(self) -> None:
        self.metrics.set_engine_stats({p: part.stats for (_, p), part in self._partitions.items()})
