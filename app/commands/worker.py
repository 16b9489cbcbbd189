"""``logiwatch worker``: run the stream processor (a Faust worker).

Consumes ``Settings.kafka.topics.events`` in the consumer group
``Settings.kafka.worker_group`` and emits alerts to the alerts topic, state to
Redis and undecodable records to the dead-letter topic (see
:mod:`logiwatch.streams.worker`). Run several with the same settings to
share the partitions. Prometheus metrics are served on
``Settings.worker.metrics_port`` (0 turns them off). SIGTERM or Ctrl-C stops
it after the batch in hand is checkpointed and committed.
"""

from __future__ import annotations

import argparse
import logging

from logiwatch.commands._kafka import require_topic
from logiwatch.config import Settings, redacted_url
from logiwatch.detectors.hub_stage import HUBS_TOPIC_SUFFIX
from logiwatch.errors import ConfigError, LogiwatchError
from logiwatch.streams.tuning import tune_gc


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap HOST:PORT (default: settings kafka.bootstrap)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port, 0 = off (default: settings)")


def _with_overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    kafka, worker = settings.kafka, settings.worker
    if args.bootstrap:
        if ":" not in args.bootstrap:
            raise ConfigError(f"--bootstrap must be HOST:PORT, got {args.bootstrap!r}")
        kafka = kafka.model_copy(update={"bootstrap": args.bootstrap})
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be 0..65535, got {args.metrics_port}")
        worker = worker.model_copy(update={"metrics_port": args.metrics_port})
    return settings.model_copy(update={"kafka": kafka, "worker": worker})


def _ping_redis(url: str) -> None:
    """One line unless Redis answers: the worker keeps its state there and cannot start without it."""

    import redis
    from redis.exceptions import RedisClusterException

    from logiwatch.redisconn import connect_sync

    client = None
    try:
        # a cluster client connects (and discovers the nodes) as it is built
        client = connect_sync(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise LogiwatchError(f"cannot reach Redis at {redacted_url(url)}: {exc} (start it with 'logiwatch stack up')") from None
    finally:
        if client is not None:
            client.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_overrides(args, settings)
    # Imported here so that `logiwatch --help` stays fast and Faust-free.
    import faust
    from prometheus_client import CollectorRegistry, start_http_server

    from logiwatch.streams.app import build_worker, ensure_topics

    for noisy in ("kafka", "aiokafka"):  # per-connection chatter at INFO
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # The metrics port first: a taken port or a wrong host stops the worker at
    # once, before it touches the broker (whose start-up can take a while).
    registry = CollectorRegistry()
    if settings.worker.metrics_port:
        try:
            start_http_server(
                settings.worker.metrics_port, addr=settings.worker.metrics_host, registry=registry
            )
        except OSError as exc:
            raise LogiwatchError(f"metrics port {settings.worker.metrics_port} unavailable: {exc}") from None
    _ping_redis(settings.redis.url)
    topics = settings.kafka.topics
    # the topic it reads must exist: a misspelt name would be created empty and waited on for ever
    require_topic(settings.kafka.bootstrap, topics.events, "kafka.topics.events", "logiwatch-worker-admin")
    try:
        counts = ensure_topics(
            settings.kafka.bootstrap,
            {
                topics.events: topics.events_partitions,
                topics.shipments: topics.events_partitions,
                topics.alerts: topics.alerts_partitions,
                topics.dlq: topics.dlq_partitions,
                # hub summaries of every partition for the hub stage: one partition, so one stage sees all
                topics.events + HUBS_TOPIC_SUFFIX: 1,
            },
        )
    except Exception as exc:  # kafka-python raises its own tree
        raise LogiwatchError(f"cannot reach Kafka at {settings.kafka.bootstrap}: {exc}") from None
    runtime = build_worker(settings, registry=registry, events_partitions=counts.get(topics.events))
    logging.getLogger(__name__).info(
        "worker: group %s on %s, events %s",
        settings.kafka.worker_group,
        settings.kafka.bootstrap,
        topics.events,
    )
    tune_gc(settings.worker.gc_gen0_threshold)
    worker = faust.Worker(
        runtime.app,
        loglevel=settings.log_level,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    worker.spinner = None  # a terminal spinner would write escape codes into log files
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
