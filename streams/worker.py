"""The partition-batch handler: decode, dead-letter, detect, produce, checkpoint.

One :class:`BatchWorker` serves every partition a worker process owns. The
batch consumer (:mod:`logiwatch.streams.consumer`) hands it one fetched
partition batch at a time, in offset order, and it:

1. decodes each record (ticks by their header), sending failures to the
   dead-letter topic with a reason code, never stopping and never dropping;
2. runs the partition's engine over the decoded records in order;
3. produces the alerts (keyed by ``alert_id``) and dead letters -- per
   batch, because this is the alert latency;
4. checkpoints when one is due: it takes the engine's changed parcels and
   its models (encoded there and then, so the engine moves on), and a
   background write awaits every acknowledgement of the records produced
   up to that point, then puts parcels, models and the next offset in Redis
   in one pipeline;
5. only once that write is in Redis is the offset reported committable.

Checkpoints run on an interval or a count, not per batch
(``checkpoint_interval_s``, ``checkpoint_max_records``): a checkpoint costs
a models export and a Redis round trip whatever the batch size, which
dominated small batches. Awaiting the producer's acknowledgements moves to
the checkpoint too: the sends are already on their way, and waiting for
them per batch only stalled the next fetch. Between checkpoints the engine's dirty set keeps
growing and nothing is reported committable; :meth:`BatchWorker.checkpoint`
starts what is due and reports the writes that finished (the consumer calls
it between fetches), or writes everything and waits (``force``, before
revocation and at shutdown, ahead of Faust's commit).

Write-behind (``write_behind``, how the app runs). The acknowledgements and
the Redis round trip take milliseconds to tens of milliseconds; done inside
the handler they held up every batch fetched meanwhile, which made the
ingest-to-alert tail. So a checkpoint only encodes in the handler and the
write runs as a task: at most one per partition (a due checkpoint waits for
the next batch while one is in flight), the next one starts only after the
previous one has landed, and its offset is reported committable (by
:meth:`BatchWorker.checkpoint`, or by the partition's next batch) only when
it has. A write still in flight after a whole checkpoint interval (Redis
down, acknowledgements stuck) makes the handler wait for it before it
takes more changes: consumption pauses, as it did when the write was in
line, instead of piling up unsaved state. Without ``write_behind`` (tests)
the handler waits for every write it starts.

So the committed offset is never ahead of the Redis snapshot, and an alert
is in Kafka before the state that remembers emitting it. After a crash the
records between the snapshot offset and the end are replayed over the
snapshot and re-emit the same alerts (same ids, same content); with
interval checkpoints that replay is up to one interval longer.

Parcels and models are always written together, at the same offset. Writing
the models (baselines, hub-incident state, the partition's max event time)
less often than the parcels was considered and rejected: a restore would
then pair parcel states that have seen events up to offset X with
baselines and a watermark that stopped at some Y < X. Replaying X.. over
that mix gives other quantiles (so other late/stall decisions and scores),
other hub-incident evaluations and other deadline times than the run that
crashed, so re-emitted alerts could differ in content or be missing --
exactly what the restore rule below must prevent.

Engine failure. If the engine raises on a batch, its in-memory state may be
half-updated. The handler waits for the write in flight, rebuilds the engine
from that snapshot, re-applies the records accepted since (kept in memory
until the next checkpoint is taken; the
engine is deterministic, so this reproduces the state before the batch and
their alerts, already produced, are discarded), feeds the failed batch one
record at a time (the records the engine rejects are dead-lettered) and
checkpoints at once.

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

from logiwatch.detectors.codec import encode_alert
from logiwatch.detectors.hub_stage import encode_hub_summary
from logiwatch.detectors.model import Alert
from logiwatch.streams.dlq import PROCESSING_ERROR, DeadLetter, encode_dead_letter, make_dead_letter
from logiwatch.streams.join import InnerEngine, JoinConfig, JoinEngine, RegistrationTable
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.pool import RedisPool
from logiwatch.streams.records import DecodeLimits, KafkaRecord, Record, decode_records
from logiwatch.streams.state import Snapshot, SnapshotStore

log = logging.getLogger(__name__)

#: Seconds between refreshes of a partition's engine-stats gauges. They are
#: refreshed between fetches, one partition per call (``stats()`` may walk
#: every parcel in flight), never inside a batch.
STATS_INTERVAL_S = 5.0


class _StaleState(Exception):
    """Another worker has checkpointed this partition past us (raised and caught inside the handler)."""


class EngineChanges(Protocol):
    @property
    def upserts(self) -> Mapping[str, bytes]: ...

    @property
    def deletes(self) -> Sequence[str]: ...


class EngineModels(Protocol):
    """Learned models for a checkpoint: the whole core blob, and the baseline fields that changed."""

    @property
    def core(self) -> bytes: ...

    @property
    def baselines(self) -> Mapping[str, bytes]: ...


class PartitionEngine(Protocol):
    """What the shell needs of ``logiwatch.detectors.engine.Engine``."""

    @property
    def watermark_ms(self) -> int | None: ...

    def process(self, records: Sequence[Record]) -> list[Alert]: ...

    def take_changes(self) -> EngineChanges: ...

    def take_model_changes(self) -> EngineModels: ...

    def stats(self) -> dict[str, float]: ...


#: Rebuilds a partition's detection engine from its snapshot (the worker
#: wraps it in the v2 join, see :mod:`logiwatch.streams.join`).
EngineFactory = Callable[[Snapshot], InnerEngine]


class RecordSink(Protocol):
    """Produces one record; the returned awaitable resolves when acknowledged."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]: ...


class AggregateHandler(Protocol):
    """A stage over an aggregate topic (``streams/hubs.py``): handles its batches, commits its own offset."""

    topic: str

    async def handle(self, records: Sequence[KafkaRecord], highwater: int | None = None) -> int | None: ...

    def drop(self) -> None: ...


@dataclass(frozen=True)
class BatchOutcome:
    """What the consumer should do after a batch: mark an offset or seek."""

    commit_offset: int | None = None
    seek_offset: int | None = None


@dataclass
class _Partition:
    engine: PartitionEngine
    #: the next offset the in-memory engine has not applied
    next_offset: int
    #: the offset of the last snapshot in Redis (None: never written)
    saved_offset: int | None
    rewind_target: int | None = None
    #: records applied since the last snapshot, to rebuild after an engine failure
    unsaved: list[Record] = field(default_factory=list)
    #: monotonic time of the first batch not in the snapshot (None: nothing unsaved)
    unsaved_since: float | None = None
    #: acknowledgements of the alerts and dead letters sent since the snapshot was taken
    unacked: list[Awaitable[Any]] = field(default_factory=list)
    #: the alerts sent since the snapshot was taken (encoded): what a rebuild need not send again
    sent: set[bytes] = field(default_factory=set)
    #: the snapshot write in flight (True: written, False: fenced off), the
    #: offset it covers and when it started (monotonic)
    writing: asyncio.Task[bool] | None = None
    writing_offset: int = 0
    writing_since: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)
    stats_at: float = float("-inf")


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
        checkpoint_interval_s: float = 0.0,
        checkpoint_max_records: int = 0,
        write_behind: bool = False,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        join: JoinConfig | None = None,
        pool: RedisPool | None = None,
        hubs_topic: str | None = None,
        hub_stage: AggregateHandler | None = None,
    ) -> None:
        self.engine_factory = engine_factory
        #: where the partitions' hub summaries go (``detectors/hub_stage.py``); None drops them
        self.hubs_topic = hubs_topic
        #: the hub stage, when this worker consumes the hubs topic too
        self.hub_stage = hub_stage
        #: learning pooled across the events topic's partitions (``streams/pool.py``), if on
        self.pool = pool
        self.store = store
        self.sink = sink
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic
        self.limits = limits
        self.metrics = metrics
        #: 0 checkpoints after every batch; otherwise at most this often ...
        self.checkpoint_interval_s = checkpoint_interval_s
        #: ... unless this many records (0: no bound) are not in the snapshot yet
        self.checkpoint_max_records = checkpoint_max_records
        #: write snapshots in a background task (see the module docstring)
        self.write_behind = write_behind
        self.wall_ms = wall_ms
        #: contract v2: registrations per partition number, joined to the scans of the same number
        self.join = join or JoinConfig()
        self._registries: dict[int, RegistrationTable] = {}
        self._partitions: dict[tuple[str, int], _Partition] = {}
        #: offsets whose snapshots have landed, not yet reported committable
        self._landed: dict[tuple[str, int], int] = {}
        self._stats_refreshed_at = float("-inf")
        # Batches and checkpoints come from different tasks (the drain loop,
        # revocation, shutdown); one at a time keeps the dirty set and the
        # snapshot consistent.
        self._lock = asyncio.Lock()

    @property
    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self._partitions)

    async def _restore(self, topic: str, partition: int) -> _Partition:
        snap = await self.store.load(topic, partition)
        shipments = self.limits.shipments_topic
        if shipments is not None and topic != shipments and partition not in self._registries:
            # the scans' join needs the registrations before the first scan:
            # load them from the shipments partition's snapshot
            reg = await self.store.load(shipments, partition)
            self._registries[partition] = RegistrationTable.restore(reg.parcels, reg.offset, self.join.retention_ms)
        engine = self._build(topic, partition, snap)
        log.info(
            "restored %s[%d]: %d parcels, snapshot offset %s",
            topic,
            partition,
            len(snap.parcels),
            snap.offset,
        )
        return _Partition(engine=engine, next_offset=snap.offset or 0, saved_offset=snap.offset)

    def _build(self, topic: str, partition: int, snap: Snapshot) -> PartitionEngine:
        """The partition's engine from its snapshot: the registrations, or the join around the detection engine."""

        if topic == self.limits.shipments_topic:
            table = RegistrationTable.restore(snap.parcels, snap.offset, self.join.retention_ms)
            self._registries[partition] = table
            return table
        parcels, waiting = JoinEngine.split_snapshot(snap.parcels)
        inner = self.engine_factory(
            Snapshot(parcels=parcels, models=snap.models, offset=snap.offset, baselines=snap.baselines)
        )
        if self.pool is not None:
            attach = getattr(inner, "attach_pool", None)
            if attach is None:
                raise TypeError("pooled learning needs an engine with attach_pool")
            attach(self.pool, partition)
        if hasattr(inner, "hub_source"):
            inner.hub_source = partition  # its hub summaries name their source partition
        return JoinEngine(inner, lambda: self._registries.get(partition), self.join, waiting)

    async def adopt(self, topic: str, partition: int) -> None:
        """With pooled learning, restore an assigned partition now rather than at its next batch.

        Its snapshot may hold records (committed, waiting for an epoch): the other partitions
        wait for what this one publishes when they are released, and at the end of a stream no
        new batch would come to restore it.
        """

        if self.pool is None or topic == self.limits.shipments_topic:
            return
        async with self._lock:
            await self._partition(topic, partition)

    def drop(self, topic: str, partition: int) -> None:
        """Forget a revoked partition's engine; its state is already in Redis."""

        if self.hub_stage is not None and topic == self.hub_stage.topic:
            self.hub_stage.drop()
            return
        part = self._partitions.pop((topic, partition), None)
        self._landed.pop((topic, partition), None)
        if topic == self.limits.shipments_topic:
            self._registries.pop(partition, None)
        if part is not None:
            if part.writing is not None and not part.writing.done():
                # Revocation waited for it (a forced checkpoint); if it is
                # still stuck, the new owner's state wins over a late write.
                part.writing.cancel()
            log.info("dropped %s[%d] (revoked)", topic, partition)
        for gauge in (self.metrics.consumer_lag, self.metrics.watermark_delay):
            try:
                gauge.remove(str(partition))
            except KeyError:  # never set for this partition
                pass
        self._publish_stats()

    async def handle(self, records: Sequence[KafkaRecord], highwater: int | None) -> BatchOutcome:
        """Handle one partition batch (non-empty, offset order)."""

        async with self._lock:
            return await self._handle(records, highwater)

    async def _handle(self, records: Sequence[KafkaRecord], highwater: int | None) -> BatchOutcome:
        """The module docstring's steps, after 0. lining the fetch up with the partition's state."""

        started = time.perf_counter()
        topic, partition = records[0].topic, records[0].partition
        if self.hub_stage is not None and topic == self.hub_stage.topic:
            return BatchOutcome(commit_offset=await self.hub_stage.handle(records, highwater))
        part = await self._partition(topic, partition)
        # 0. the restore rule: skip what the state has applied, seek back over a gap
        aligned = self._align(part, records)
        if isinstance(aligned, BatchOutcome):
            return aligned
        records = aligned
        now_ms = self.wall_ms()
        self.metrics.events_consumed.labels(topic=topic, partition=str(partition)).inc(len(records))
        # 1. decode; failures become dead letters
        decoded, dead = decode_records(records, self.limits, now_ms)
        # 2. the partition's engine over the decoded records
        try:
            alerts, recovered = await self._process(part, topic, partition, decoded, records, dead, now_ms)
        except _StaleState:
            return BatchOutcome()
        # 3. produce the dead letters and the alerts (acknowledged by the checkpoint)
        await self._produce(part, dead, alerts, records[-1])
        part.next_offset = records[-1].offset + 1
        if part.unsaved_since is None:
            part.unsaved_since = time.monotonic()
        if self.pool is not None:
            # 3b. pooled learning: what this batch published reaches Redis before any snapshot
            # that records it; partitions the pool held go on. After step 3, not before: the
            # round may release this very partition's held records (the batch stopped at an
            # epoch tick), and their alerts come after the batch's in the engine's order. Sent
            # first, a parcel's "resolved" reached the alerts topic ahead of its "firing", and
            # the alert service, which takes the later status as the newer, never notified it.
            await self._pool_round()
        # 4. checkpoint when due; after a recovery at once: the rebuilt state must
        # not depend on records kept in memory any longer
        if recovered or self._due(part):
            if not await self._checkpoint_partition(topic, partition, part, wait=not self.write_behind):
                return BatchOutcome()
        # 5. commit only the offset of a snapshot that has landed in Redis
        commit_offset = self._landed.pop((topic, partition), None)
        self._observe_batch(part, partition, highwater, now_ms, started)
        return BatchOutcome(commit_offset=commit_offset)

    async def _partition(self, topic: str, partition: int) -> _Partition:
        """The partition's in-memory state: a finished background write reaped first, restored from Redis if new."""

        part = self._partitions.get((topic, partition))
        if part is not None and part.writing is not None and part.writing.done():
            self._reap(topic, partition, part)
            part = self._partitions.get((topic, partition))  # gone if the write was fenced off
        if part is None:
            part = self._partitions[(topic, partition)] = await self._restore(topic, partition)
        return part

    def _align(self, part: _Partition, records: Sequence[KafkaRecord]) -> Sequence[KafkaRecord] | BatchOutcome:
        """The records the state has not applied yet, or what to answer instead (seek back, commit)."""

        first = records[0]
        topic, partition = first.topic, first.partition
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
                # Only what the snapshot covers may be committed.
                return BatchOutcome(commit_offset=part.saved_offset)
        return records

    async def _produce(self, part: _Partition, dead: Sequence[DeadLetter], alerts: Sequence[Alert], last: KafkaRecord) -> None:
        """Send the dead letters, then the alerts, and count them; the sends are awaited by the checkpoint."""

        if isinstance(part.engine, JoinEngine):
            for outcome, n in part.engine.take_counts().items():
                if n:
                    self.metrics.join_scans.labels(outcome=outcome).inc(n)
        for letter in dead:
            part.unacked.append(
                await self.sink.send(self.dlq_topic, letter.original_key(), encode_dead_letter(letter))
            )
        for alert in alerts:
            await self._send_alert(part, alert)
        await self._produce_hub_summaries(part)
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

    async def _produce_hub_summaries(self, part: _Partition) -> None:
        """The engine's hub summaries, keyed by source partition and acknowledged by the checkpoint
        like the alerts (the stage drops a re-sent (partition, tick): they are idempotent by key)."""

        engine = part.engine.inner if isinstance(part.engine, JoinEngine) else part.engine
        take = getattr(engine, "take_hub_summaries", None)
        if take is None:
            return
        for summary in take():
            if self.hubs_topic is not None:
                key = str(summary.source).encode()
                part.unacked.append(await self.sink.send(self.hubs_topic, key, encode_hub_summary(summary)))

    async def _send_alert(self, part: _Partition, alert: Alert) -> None:
        raw = encode_alert(alert)
        part.sent.add(raw)
        part.unacked.append(await self.sink.send(self.alerts_topic, alert.alert_id.encode(), raw))

    def _observe_batch(self, part: _Partition, partition: int, highwater: int | None, now_ms: int, started: float) -> None:
        if highwater is not None:
            self.metrics.consumer_lag.labels(partition=str(partition)).set(max(0, highwater - part.next_offset))
        watermark = part.engine.watermark_ms
        if watermark is not None:
            self.metrics.watermark_delay.labels(partition=str(partition)).set((now_ms - watermark) / 1000.0)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _pool_round(self) -> None:
        """Sync the pool with Redis; go on with the partitions that waited for an epoch now complete.

        Partitions held at an epoch release each other (each one's next close publishes what
        the others wait for), so the round repeats until no held partition moves. A released
        partition's alerts and hub summaries go out here; their acknowledgements join that
        partition's, so its next snapshot waits for them like for its batches' alerts.
        """

        pool = self.pool
        assert pool is not None
        while True:
            # Redis down: consumption pauses and retries, as for a checkpoint (test_redis_faults)
            await self.store.retry("pool sync", pool.sync)
            moved = False
            for part in self._partitions.values():
                inner = part.engine.inner if isinstance(part.engine, JoinEngine) else None
                held = getattr(inner, "held", 0)
                if inner is None or not held:
                    continue
                for alert in inner.process([]):
                    await self._send_alert(part, alert)
                    self.metrics.alerts_emitted.labels(
                        type=alert.alert_type.value, status=alert.status.value, severity=alert.severity.value
                    ).inc()
                # and the hub summaries of the released ticks: left in the engine, they would wait
                # for the partition's next batch, and the hub stage for them (for ever at the end)
                await self._produce_hub_summaries(part)
                if getattr(inner, "held", 0) != held:
                    moved = True
                    if part.unsaved_since is None:
                        part.unsaved_since = time.monotonic()
            if not moved:
                return

    def _due(self, part: _Partition) -> bool:
        if part.unsaved_since is None:
            return False
        if self.checkpoint_interval_s <= 0:
            return True
        if self.checkpoint_max_records and len(part.unsaved) >= self.checkpoint_max_records:
            return True
        return time.monotonic() - part.unsaved_since >= self.checkpoint_interval_s

    async def checkpoint(self, force: bool = False) -> dict[tuple[str, int], int]:
        """Start the snapshot writes that are due; report the ones that landed.

        Returns the committable offset of every partition whose snapshot is
        now in Redis and was not reported yet. Called by the consumer between
        fetches (which is also when one partition's stats gauges are
        refreshed, if due), and with ``force`` before it commits at revocation
        and shutdown: then every unsaved change is written and waited for.
        """

        async with self._lock:
            if self.pool is not None:
                await self._pool_round()
            for key, part in list(self._partitions.items()):
                if part.writing is not None and (force or part.writing.done()):
                    await self._settle(key[0], key[1], part)
                    if self._partitions.get(key) is not part:
                        continue  # fenced off: dropped
                if part.unsaved_since is None or not (force or self._due(part)):
                    continue
                await self._checkpoint_partition(key[0], key[1], part, wait=force or not self.write_behind)
            if not force:
                self._refresh_stats()
            out, self._landed = self._landed, {}
        return out

    async def _checkpoint_partition(self, topic: str, partition: int, part: _Partition, wait: bool) -> bool:
        """Take a snapshot of one partition and write it (waiting for it with ``wait``).

        With a write still in flight the snapshot waits for the next call,
        unless that write has been going for a whole checkpoint interval:
        then this call waits for it (consumption pauses while Redis is in
        trouble rather than unsaved state piling up). False if the partition
        turned out to be stale and was dropped.
        """

        if part.writing is not None:
            stuck = time.monotonic() - part.writing_since >= self.checkpoint_interval_s
            if not (wait or stuck or part.writing.done()):
                return True
            if not await self._settle(topic, partition, part):
                return False
        self._start_write(topic, partition, part)
        if wait:
            return await self._settle(topic, partition, part)
        return True

    def _start_write(self, topic: str, partition: int, part: _Partition) -> None:
        """Encode the partition's changes now and write them to Redis in a task."""

        acks, part.unacked = part.unacked, []
        try:
            changes = part.engine.take_changes()
            models = part.engine.take_model_changes()
        except BaseException:
            # The dirty set may be gone with take_changes(): a later checkpoint
            # of this engine would miss those parcels. Rebuild from Redis instead.
            self._partitions.pop((topic, partition), None)
            raise
        offset = part.next_offset

        async def write() -> bool:
            if acks:
                # Alerts and dead letters are acknowledged before the state
                # that remembers them is written (and long before the offset
                # commits); a send that failed raises here, so nothing it
                # covers is saved.
                await asyncio.gather(*acks)
            return await self.store.save(
                topic,
                partition,
                upserts=changes.upserts,
                deletes=changes.deletes,
                models=models.core,
                baselines=models.baselines,
                offset=offset,
            )

        part.writing = asyncio.ensure_future(write())
        part.writing_offset, part.writing_since = offset, time.monotonic()
        part.unsaved.clear()
        part.sent.clear()
        part.unsaved_since = None

    async def _settle(self, topic: str, partition: int, part: _Partition) -> bool:
        """Wait for the partition's write in flight; False if it was fenced off (partition dropped)."""

        if part.writing is not None:
            # asyncio.wait: a caller cancelled meanwhile leaves the write running.
            await asyncio.wait([part.writing])
            self._reap(topic, partition, part)
        return self._partitions.get((topic, partition)) is part

    def _reap(self, topic: str, partition: int, part: _Partition) -> None:
        """Account for a finished write: its offset becomes committable, or the partition goes."""

        task, part.writing = part.writing, None
        assert task is not None and task.done()
        try:
            written = task.result()
        except BaseException:
            # A send or the write failed: the taken changes are lost to this
            # engine. Rebuild from Redis instead.
            self._partitions.pop((topic, partition), None)
            self._landed.pop((topic, partition), None)
            raise
        if not written:
            # Another worker owns this partition now and has checkpointed
            # past us: our state is stale, so forget it and commit nothing.
            log.warning("%s[%d]: a newer snapshot exists; dropping this stale engine", topic, partition)
            self._partitions.pop((topic, partition), None)
            self._landed.pop((topic, partition), None)
            return
        part.saved_offset = part.writing_offset
        self._landed[(topic, partition)] = part.writing_offset

    def _refresh_stats(self) -> None:
        """Refresh the stalest partition's stats gauges if they are due (one walk per call)."""

        if not self._partitions:
            return
        now = time.monotonic()
        # Spread the walks over the interval rather than all partitions at once.
        if now - self._stats_refreshed_at < STATS_INTERVAL_S / len(self._partitions):
            return
        part = min(self._partitions.values(), key=lambda p: p.stats_at)
        if now - part.stats_at < STATS_INTERVAL_S:
            return
        part.stats = part.engine.stats()
        part.stats_at = self._stats_refreshed_at = time.monotonic()
        self._publish_stats()

    async def _process(
        self,
        part: _Partition,
        topic: str,
        partition: int,
        decoded: list[tuple[int, Record]],
        records: Sequence[KafkaRecord],
        dead: list[DeadLetter],
        now_ms: int,
    ) -> tuple[list[Alert], bool]:
        """Run the engine; True with the alerts if it had to recover from a failure."""

        items = [item for _, item in decoded]
        try:
            alerts = part.engine.process(items)
        except Exception:  # an engine bug must not stop the partition or lose the batch
            log.exception("%s[%d]: engine failed on a batch; retrying record by record", topic, partition)
        else:
            part.unsaved.extend(items)
            return alerts, False
        # Rebuild the state before this batch: the snapshot (once the write in
        # flight has landed), then the records applied since. Their alerts that
        # were sent are dropped; the others go out now: with pooled learning the
        # rebuilt engine may release records the failed one was still holding
        # (the pool sums it waited for came in meanwhile), and their alerts were never sent.
        if not await self._settle(topic, partition, part):
            raise _StaleState
        snap = await self.store.load(topic, partition)
        part.engine = self._build(topic, partition, snap)
        replayed = part.engine.process(part.unsaved) if part.unsaved else []
        alerts = [a for a in replayed if encode_alert(a) not in part.sent]
        part.unsaved.clear()
        by_offset = {r.offset: r for r in records}
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
        return alerts, True

    def _publish_stats(self) -> None:
        self.metrics.set_engine_stats({p: part.stats for (_, p), part in self._partitions.items()})
