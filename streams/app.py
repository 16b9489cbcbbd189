"""The Faust app factory: wires the batch consumer, the handler, Redis and metrics.

:func:`build_worker` returns a ready-to-run ``LogiwatchApp`` whose consumer
is :class:`~logiwatch.streams.consumer.BatchConsumer` and whose
``batch_handler`` is a :class:`~logiwatch.streams.worker.BatchWorker`. No
agents and no tables: the events topic is registered with Faust's conductor
directly (so the group subscribes to it) and all state goes to Redis
snapshots, because Faust's changelog recovery is unreliable on Tansu. The
group id is ``Settings.kafka.worker_group``; run more workers with the same
settings to scale out, one engine per owned partition.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import redis.asyncio as aioredis
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter

from logiwatch.config import Settings
from logiwatch.detectors.hub_stage import HUBS_TOPIC_SUFFIX
from logiwatch.redisconn import connect
from logiwatch.streams.consumer import BatchCheckpoint, BatchHandler, BatchTransport
from logiwatch.streams.hubs import HubStageRunner
from logiwatch.streams.join import InnerEngine, JoinConfig
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.pool import RedisPool
from logiwatch.streams.records import DecodeLimits
from logiwatch.streams.state import Snapshot, SnapshotStore
from logiwatch.streams.worker import BatchWorker, EngineFactory

log = logging.getLogger(__name__)


class LogiwatchApp(faust.App):
    """A Faust app whose transport hands partition batches to ``batch_handler``."""

    batch_handler: BatchHandler | None = None
    #: writes the due (or, forced, all) snapshots; see BatchWorker.checkpoint
    batch_checkpoint: BatchCheckpoint | None = None
    #: the aiokafka consumer's fetch wait (Faust itself fixes it at 1500 ms)
    fetch_max_wait_ms: int | None = None
    #: topics whose batches in a fetch are handled before the others' (the v2 join's registrations)
    first_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)


class FaustSink:
    """Produces through the app's own (started, flushed-on-commit) producer."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        return await self.app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=list(headers) if headers else None
        )


def real_engine_factory(settings: Settings) -> EngineFactory:
    """Engines from ``logiwatch.detectors.engine`` configured from the settings."""

    from logiwatch.config import engine_config
    from logiwatch.detectors.engine import Engine

    config = engine_config(settings)

    def factory(snap: Snapshot) -> InnerEngine:
        engine: InnerEngine = Engine.restore(config, snap.parcels, snap.models, snap.baselines)
        return engine

    return factory


@dataclass
class WorkerRuntime:
    app: LogiwatchApp
    worker: BatchWorker
    metrics: WorkerMetrics
    redis: aioredis.Redis


def build_worker(
    settings: Settings,
    *,
    engine_factory: EngineFactory | None = None,
    registry: CollectorRegistry | None = None,
    events_partitions: int | None = None,
) -> WorkerRuntime:
    """Build the app and its handler from the settings (nothing starts yet).

    ``events_partitions`` is the events topic's partition count as the broker has it (default:
    ``kafka.topics.events_partitions``): with ``detection.pool_epoch_s`` the partitions pool
    their learning and each epoch waits for that many.
    """

    kafka, wconf = settings.kafka, settings.worker
    app = _faust_app(settings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = WorkerMetrics(registry)
    client = connect(settings.redis.url, decode_responses=False)
    pool = _pool(settings, client, events_partitions, registry)
    store = SnapshotStore(
        client,
        settings.redis.key_prefix,
        metrics,
        should_stop=lambda: bool(app.should_stop),
        compress=wconf.checkpoint_compression,
    )
    hubs_topic = kafka.topics.events + HUBS_TOPIC_SUFFIX
    worker = BatchWorker(
        engine_factory=engine_factory or real_engine_factory(settings),
        store=store,
        sink=FaustSink(app),
        alerts_topic=kafka.topics.alerts,
        dlq_topic=kafka.topics.dlq,
        hubs_topic=hubs_topic,
        hub_stage=_hub_stage(settings, client, hubs_topic, events_partitions, FaustSink(app), metrics, store),
        limits=DecodeLimits(
            max_event_bytes=wconf.max_event_bytes,
            max_past_ms=wconf.max_event_past_ms,
            max_future_ms=wconf.max_event_future_ms,
            event_time_only=wconf.event_time_only,
            shipments_topic=kafka.topics.shipments,
        ),
        metrics=metrics,
        checkpoint_interval_s=wconf.commit_interval_s,
        checkpoint_max_records=wconf.checkpoint_max_records,
        # the Redis round trip stays out of the batch path (alert latency)
        write_behind=True,
        join=JoinConfig(
            wait_ms=wconf.join_wait_ms,
            default_dispatch_ms=wconf.join_default_dispatch_ms,
            default_delivery_ms=wconf.join_default_delivery_ms,
        ),
        pool=pool,
    )
    app.batch_handler = worker.handle
    app.batch_checkpoint = worker.checkpoint
    app.fetch_max_wait_ms = wconf.fetch_max_wait_ms
    # a registration fetched with its parcel's scans is in the join's table before them
    app.first_topics = frozenset({kafka.topics.shipments})
    # Raw bytes in, no Faust (de)serialisation: the handler decodes.
    app.topics.add(app.topic(kafka.topics.events, key_serializer="raw", value_serializer="raw"))
    # Contract v2: registrations, co-partitioned with the events (same
    # partition count), so Faust's assignor gives partition p of both to the
    # same worker and the join finds a parcel's registration in process.
    app.topics.add(app.topic(kafka.topics.shipments, key_serializer="raw", value_serializer="raw"))
    if worker.hub_stage is not None:
        # one partition: the worker that owns it scores hub incidents over every events partition
        app.topics.add(app.topic(hubs_topic, key_serializer="raw", value_serializer="raw"))

    _connect_rebalance(app, worker, kafka.topics.events)
    return WorkerRuntime(app=app, worker=worker, metrics=metrics, redis=client)


def _connect_rebalance(app: LogiwatchApp, worker: BatchWorker, events_topic: str) -> None:
    """Drop the engines of revoked partitions; restore each events partition at assignment."""

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The consumer has already waited for the in-flight batch and
        # committed; the snapshot in Redis is the state, so drop the engines.
        revoked: set[TP] = args[0] if args else kwargs.get("revoked", set())
        for tp in revoked:
            worker.drop(tp.topic, tp.partition)

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # pooled learning: a taken-over partition holding records must run before its next batch
        assigned: set[TP] = args[0] if args else kwargs.get("assigned", set())
        for tp in sorted(assigned):
            if tp.topic == events_topic:
                await worker.adopt(tp.topic, tp.partition)

    app.on_partitions_revoked.connect(on_revoked, weak=False)
    app.on_partitions_assigned.connect(on_assigned, weak=False)


def _faust_app(settings: Settings) -> LogiwatchApp:
    """The Faust app of the worker's consumer group (its batch handler is set by ``build_worker``)."""

    kafka, wconf = settings.kafka, settings.worker
    datadir = Path(settings.stack.state_dir) / "faust" / kafka.worker_group
    datadir.mkdir(parents=True, exist_ok=True)
    return LogiwatchApp(
        kafka.worker_group,
        broker=f"kafka://{kafka.bootstrap}",
        autodiscover=False,
        datadir=str(datadir),
        store="memory://",
        web_enabled=False,
        # Tansu hands out partitions after about half the session timeout.
        broker_session_timeout=kafka.session_timeout_ms / 1000.0,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000.0,
        broker_max_poll_records=wconf.batch_max_records,
        broker_commit_interval=wconf.commit_interval_s,
        broker_commit_every=wconf.batch_max_records * 10,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        stream_wait_empty=True,
        topic_allow_declare=True,
    )


def _pool(
    settings: Settings,
    client: aioredis.Redis,
    partitions: int | None,
    registry: CollectorRegistry,
) -> RedisPool | None:
    """The pooled-learning exchange, when ``detection.pool_epoch_s`` is on and there is more than one partition."""

    n = partitions if partitions is not None else settings.kafka.topics.events_partitions
    if not settings.detection.pool_epoch_s or n < 2:
        return None
    partial = Counter(
        "logiwatch_pool_partial_total",
        "Pooling epochs a partition went on with after pool_wait_s without every partition's deltas",
        registry=registry,
    )
    log.info("learning pooled across the %d partitions of %s at %d s epochs", n, settings.kafka.topics.events, settings.detection.pool_epoch_s)
    return RedisPool(
        client,
        prefix=settings.redis.key_prefix,
        topic=settings.kafka.topics.events,
        partitions=n,
        wait_s=settings.detection.pool_wait_s,
        on_partial=partial.inc,
    )


def _hub_stage(
    settings: Settings,
    client: Any,
    topic: str,
    events_partitions: int | None,
    sink: FaustSink,
    metrics: WorkerMetrics,
    store: SnapshotStore,
) -> HubStageRunner | None:
    from logiwatch.config import engine_config

    config = engine_config(settings)
    if "hub_incident" not in config.detectors:
        return None
    return HubStageRunner(
        client=client,
        prefix=settings.redis.key_prefix,
        topic=topic,
        sources=events_partitions or settings.kafka.topics.events_partitions,
        min_count=config.min_count,
        knobs=config.knobs.get("hub_incident"),
        sink=sink,
        alerts_topic=settings.kafka.topics.alerts,
        metrics=metrics,
        retry=store.retry,
    )


def ensure_topics(bootstrap: str, topics: Mapping[str, int]) -> dict[str, int]:
    """Create the missing topics (name -> partitions); existing ones are left alone.

    Returns each named topic's partition count as the broker reports it.
    """

    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="logiwatch-worker-admin", bootstrap_timeout_ms=10_000
    )
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
        counts = dict(topics)
        for d in admin.describe_topics(list(topics)):
            # the metadata response's field names changed across kafka-python versions
            name = d.get("topic", d.get("name"))
            if name in counts and d.get("partitions"):
                counts[name] = len(d["partitions"])
        return counts
    finally:
        admin.close()
