"""The worker's metrics: names on a fresh registry, engine stats summed over partitions."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from logiwatch.streams.metrics import WorkerMetrics

NAMES = {
    "logiwatch_worker_events_consumed",
    "logiwatch_worker_decode_failures",
    "logiwatch_worker_dlq",
    "logiwatch_worker_alerts_emitted",
    "logiwatch_worker_batch_seconds",
    "logiwatch_worker_consumer_lag",
    "logiwatch_worker_hub_stage_lag",
    "logiwatch_worker_watermark_delay_seconds",
    "logiwatch_worker_event_to_alert_seconds",
    "logiwatch_worker_parcels_in_flight",
    "logiwatch_worker_parcels_by_stage",
    "logiwatch_worker_model_keys",
    "logiwatch_worker_checkpoint_seconds",
    "logiwatch_worker_checkpoint_bytes",
    "logiwatch_worker_redis_errors",
    "logiwatch_worker_join_scans",
}


def test_all_worker_metrics_register_on_the_given_registry() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    assert {m.name for m in registry.collect()} == NAMES
    WorkerMetrics(CollectorRegistry())  # a second worker in the same process does not clash


def test_engine_stats_are_summed_over_partitions() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.set_engine_stats(
        {
            0: {
                "in_flight": 3,
                "learned_keys": 2,
                "cold_keys": 5,
                "parcels_by_stage_HUB_ARRIVED": 2,
                "deadlines": 9,
            },
            1: {"in_flight": 4, "learned_keys": 1, "cold_keys": 0, "parcels_by_stage_HUB_ARRIVED": 1},
        }
    )
    value = registry.get_sample_value
    assert value("logiwatch_worker_parcels_in_flight") == 7
    assert value("logiwatch_worker_model_keys", {"state": "learned"}) == 3
    assert value("logiwatch_worker_model_keys", {"state": "cold"}) == 5
    assert value("logiwatch_worker_parcels_by_stage", {"stage": "HUB_ARRIVED"}) == 3
