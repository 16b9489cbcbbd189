"""A broker restart: the worker and the alert service reconnect, without crashing or looping.

Tansu keeps everything in memory, so a restart loses every topic and
committed offset; this test therefore asserts reconnection and clean
behaviour, not durability. A private broker runs on its own port under a
real ``logiwatch worker`` and a real ``logiwatch alerts serve``. After traffic
flows end to end, the broker is stopped, left down for a while (both
services must stay up), started again on the same port, and the topics are
re-created as ``logiwatch stack up`` would. New events must then be
consumed and committed by the worker's group on the new broker, new alert
records must reach the webhook receiver through the alert service, and the
liability entry a new likely-lost alert charges must be published on the new
broker (the publisher rebuilds its producer after failed sends).
(The worker's Redis snapshots name offsets of the lost log, so the test
re-produces that log before the new events; with a durable broker that is
what the broker itself would hold.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from logiwatch import stack
from logiwatch.config import Settings
from logiwatch.detectors.hub_stage import HUBS_TOPIC_SUFFIX
from logiwatch.detectors.model import AnomalyType
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.sim.traffic import generate
from tests.faults.test_alerts_faults import AlertsServe, FaultReceiver, figures, receiver_toml
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import produce, stall
from tests.integration.test_worker_support import (
    WorkerProcess,
    committed_offsets,
    end_offsets_of,
    produce_records,
)

pytestmark = pytest.mark.slow

PARTITIONS = 4
DOWN_S = 8.0


def published_evidence(bootstrap: str, topic: str) -> set[str]:
    """Every alert id named as evidence by the liability entries on ``topic`` so far."""

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=1000,
    )
    try:
        return {aid for rec in consumer for aid in json.loads(rec.value).get("evidence", [])}
    finally:
        consumer.close()


def test_worker_and_alert_service_reconnect_after_the_broker_restarts_on_the_same_port(
    settings_factory: Callable[..., Settings],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    port = stack.free_port()
    broker = stack.start_tansu(port, tmp_path / "tansu", timeout=60.0)
    bootstrap = broker.url
    hook = FaultReceiver("cs")
    hook.__enter__()
    hook.up()
    svc = AlertsServe(tmp_path, bootstrap, redis_url, redis_prefix + "alerts:", receiver_toml(hook))
    ev_topic, dlq_topic = f"ev-{port}", f"dlq-{port}"
    # the hub stage's topic too, as `logiwatch stack up` creates it (stack.stack_topics)
    topics = {ev_topic: PARTITIONS, ev_topic + HUBS_TOPIC_SUFFIX: 1, svc.topic: 2, dlq_topic: 1, svc.ltopic: 1}
    stack.create_topics(bootstrap, topics)
    cfg = settings_factory(
        kafka={
            "bootstrap": bootstrap,
            "topics": {"events": ev_topic, "alerts": svc.topic, "dlq": dlq_topic},
            "worker_group": f"g-{ev_topic}",
            "session_timeout_ms": 6000,
        },
        # the final flush tick lies far past the simulated events, beyond the default 24 h future bound
        worker={"batch_max_records": 300, "event_time_only": True},
    )
    before, _ = generate("default", seed=5, parcels=200)
    after, _ = generate("default", seed=6, parcels=200)
    first: list[object] = list(interleave_ticks(before, 3600_000))
    second: list[object] = list(interleave_ticks(after, 3600_000))
    worker = WorkerProcess(cfg, tmp_path / "worker.log")
    group = cfg.kafka.worker_group
    try:
        svc.start()
        wait_until(lambda: svc.receivers(), 40, what=f"alert service up: {svc.log_tail()}")
        produce_records(bootstrap, ev_topic, first, PARTITIONS)
        ends = end_offsets_of(first, PARTITIONS)
        wait_until(
            lambda: committed_offsets(bootstrap, group, ev_topic, PARTITIONS) == ends,
            90,
            what=f"first stream committed: {worker.log_text()[-800:]}",
        )
        wait_until(lambda: hook.ok_hits(), 60, what="alerts delivered before the restart")
        delivered_before = len(hook.ok_hits())

        broker.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: time.monotonic() - stopped_at >= DOWN_S, DOWN_S + 2, interval=0.2)
        assert worker.alive(), f"worker died with the broker down: {worker.log_text()[-1500:]}"
        assert svc.alive(), f"alert service died with the broker down: {svc.log_tail()}"
        broker = stack.start_tansu(port, tmp_path / "tansu", timeout=60.0)
        restarted_at = time.monotonic()
        stack.create_topics(bootstrap, topics)  # memory storage: the restart lost them

        # The worker's group, on the new broker, consumes and commits a new stream. Its
        # Redis snapshots still name offsets in the log the restart lost, so the lost log is
        # produced again first (as a durable broker would still hold it), then new events.
        produce_records(bootstrap, ev_topic, first + second, PARTITIONS)
        new_ends = end_offsets_of(first + second, PARTITIONS)
        wait_until(
            lambda: committed_offsets(bootstrap, group, ev_topic, PARTITIONS) == new_ends,
            120,
            what=f"worker reconnected and committed: {worker.log_text()[-1500:]}",
        )
        worker_back_s = time.monotonic() - restarted_at
        # The alert service, on the new broker, consumes and delivers new alerts.
        fresh = [stall(10_000 + i, alert_id=f"after-restart-{port}-{i}") for i in range(5)]
        lost = stall(20_000, alert_id=f"lost-after-restart-{port}", alert_type=AnomalyType.LIKELY_LOST)
        produce(bootstrap, svc.topic, [*fresh, lost])
        wait_until(
            lambda: {a.alert_id for a in fresh} <= hook.delivered_alerts(),
            120,
            what=f"alert service reconnected and delivered: {svc.log_tail()}",
        )
        service_back_s = time.monotonic() - restarted_at
        # The charge for the lost parcel reaches the liability topic of the new broker.
        wait_until(
            lambda: lost.alert_id in published_evidence(bootstrap, svc.ltopic),
            120,
            what=f"liability entry published after the restart: {svc.log_tail()}",
        )
        liability_back_s = time.monotonic() - restarted_at
        assert worker.alive() and svc.alive()
        assert svc.starts == 1, "the alert service had to be restarted"
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        service_log = svc.log_path.read_text(errors="replace")
    finally:
        worker.stop()
        svc.stop()
        hook.__exit__()
        broker.stop()
    figures(
        "broker_restart",
        down_s=DOWN_S,
        events_before=len(before),
        events_after=len(after),
        deliveries_before=delivered_before,
        worker_committed_new_stream_after_s=round(worker_back_s, 1),
        alert_service_delivered_after_s=round(service_back_s, 1),
        liability_published_after_s=round(liability_back_s, 1),
        tracebacks_in_worker_log=worker_log.count("Traceback"),
        tracebacks_in_service_log=service_log.count("Traceback"),
    )
