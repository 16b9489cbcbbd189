"""The worker's (and the ingest receiver's) Prometheus metrics, built on a caller-supplied registry.

Everything the stream shell counts lives here so that tests can build a fresh
``CollectorRegistry`` per worker and read values back, and so that the names
stay in one place (``logiwatch_worker_<thing>_<unit>``, bounded labels: the
partition, a DLQ reason code, an alert type/status/severity, a parcel stage).
The core never sees these objects; the shell feeds them from batch outcomes
and from ``Engine.stats()``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class WorkerCounters:
    """The worker's own counters, summed over partitions and reasons."""

    consumed: int = 0
    dlq: Tally[str] = field(default_factory=Tally)
    alerts: Tally[tuple[str, str]] = field(default_factory=Tally)  # (type, status) -> n

    @property
    def dead_letters(self) -> int:
        return sum(self.dlq.values())

    @property
    def alerts_total(self) -> int:
        return sum(self.alerts.values())


def parse_worker_metrics(text: str) -> WorkerCounters:
    """The worker's counters from its Prometheus text exposition (what ``logiwatch demo`` shows)."""

    from prometheus_client.parser import text_string_to_metric_families

    out = WorkerCounters()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "logiwatch_worker_events_consumed_total":
                out.consumed += int(s.value)
            elif s.name == "logiwatch_worker_dlq_total":
                out.dlq[s.labels.get("reason", "?")] += int(s.value)
            elif s.name == "logiwatch_worker_alerts_emitted_total":
                out.alerts[(s.labels.get("type", "?"), s.labels.get("status", "?"))] += int(s.value)
    return out


def sum_samples(text: str, name: str) -> int:
    """The sum of one metric's samples in a Prometheus text exposition."""

    from prometheus_client.parser import text_string_to_metric_families

    return int(
        sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)
    )


class WorkerMetrics:
    """The worker's counters, gauges and histograms on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._consumption(registry)
        self._parcels(registry)
        self._state(registry)

    def _consumption(self, r: CollectorRegistry) -> None:
        """What the worker read and what became of it: alerts, dead letters, join outcomes, latency."""

        self.events_consumed = Counter(
            "logiwatch_worker_events_consumed_total",
            "Records consumed from the events topic (scans, ticks and dead letters).",
            ["topic", "partition"],
            registry=r,
        )
        self.decode_failures = Counter(
            "logiwatch_worker_decode_failures_total",
            "Records that failed to decode or validate, by reason code.",
            ["reason"],
            registry=r,
        )
        self.dlq = Counter(
            "logiwatch_worker_dlq_total", "Records written to the dead-letter topic, by reason code.", ["reason"], registry=r
        )
        self.alerts_emitted = Counter(
            "logiwatch_worker_alerts_emitted_total",
            "Alerts produced to the alerts topic.",
            ["type", "status", "severity"],
            registry=r,
        )
        self.join_scans = Counter(
            "logiwatch_worker_join_scans_total",
            "Contract v2 scans by join outcome: joined to a registration, waited for one, "
            "or sent on with defaults (no registration within worker.join_wait_ms).",
            ["outcome"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "logiwatch_worker_batch_seconds",
            "Wall time to handle one fetched partition batch, checkpoint included.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_alert = Histogram(
            "logiwatch_worker_event_to_alert_seconds",
            "From the Kafka timestamp of the batch's last record to the alert being acknowledged.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def _parcels(self, r: CollectorRegistry) -> None:
        """Where the partitions stand: lag, watermark, parcels in flight, learned baselines."""

        self.consumer_lag = Gauge(
            "logiwatch_worker_consumer_lag", "Records behind the fetch high watermark, per partition.", ["partition"], registry=r
        )
        self.hub_stage_lag = Gauge(
            "logiwatch_worker_hub_stage_lag",
            "Hub summaries behind the hubs topic's fetch high watermark (set by the worker holding the hub stage).",
            registry=r,
        )
        self.watermark_delay = Gauge(
            "logiwatch_worker_watermark_delay_seconds",
            "Wall clock minus the partition's event-time watermark.",
            ["partition"],
            registry=r,
        )
        self.parcels_in_flight = Gauge(
            "logiwatch_worker_parcels_in_flight", "Parcels with live state in this worker's engines.", registry=r
        )
        self.parcels_by_stage = Gauge(
            "logiwatch_worker_parcels_by_stage", "In-flight parcels by journey stage.", ["stage"], registry=r
        )
        self.model_keys = Gauge(
            "logiwatch_worker_model_keys",
            "Baseline keys that have learned enough (learned) or still use priors (cold).",
            ["state"],
            registry=r,
        )

    def _state(self, r: CollectorRegistry) -> None:
        """The state snapshots in Redis: how long, how many bytes, how many failed calls."""

        self.checkpoint_seconds = Histogram(
            "logiwatch_worker_checkpoint_seconds",
            "Wall time of one state checkpoint (one Redis pipeline).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.checkpoint_bytes = Counter(
            "logiwatch_worker_checkpoint_bytes_total",
            "Bytes of state written to Redis by checkpoints, by part: parcels, models (the core blob) "
            "and baselines (the changed keys only).",
            ["part"],
            registry=r,
        )
        self.redis_errors = Counter(
            "logiwatch_worker_redis_errors_total", "Failed Redis calls (each is retried with backoff).", registry=r
        )

    def set_engine_stats(self, per_partition: Mapping[int, Mapping[str, float]]) -> None:
        """Sum ``Engine.stats()`` over this worker's partitions into the gauges.

        Recognised keys: ``in_flight``, ``learned_keys``, ``cold_keys`` and
        ``parcels_by_stage_<STAGE>``; others are ignored. Baseline keys are
        summed too: each partition's engine learns its own baselines.
        """

        in_flight = learned = cold = 0.0
        stages: dict[str, float] = {}
        for stats in per_partition.values():
            in_flight += stats.get("in_flight", 0.0)
            learned += stats.get("learned_keys", 0.0)
            cold += stats.get("cold_keys", 0.0)
            for key, value in stats.items():
                if key.startswith("parcels_by_stage_"):
                    stage = key[len("parcels_by_stage_") :]
                    stages[stage] = stages.get(stage, 0.0) + value
        self.parcels_in_flight.set(in_flight)
        self.model_keys.labels(state="learned").set(learned)
        self.model_keys.labels(state="cold").set(cold)
        for stage, value in stages.items():
            self.parcels_by_stage.labels(stage=stage).set(value)


class IngestMetrics:
    """The receiver's counters on a caller-supplied registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.pushes = Counter(
            "logiwatch_ingest_pushes_total",
            "Feed pushes received, by feed and outcome (accepted, rejected reason, unavailable).",
            ["feed", "outcome"],
            registry=registry,
        )
        self.scans = Counter(
            "logiwatch_ingest_scans_total",
            "Scans in accepted pushes, by feed and outcome (produced, duplicate).",
            ["feed", "outcome"],
            registry=registry,
        )
        self.push_seconds = Histogram(
            "logiwatch_ingest_push_seconds",
            "Wall time from a push's body to its answer, produce acknowledgements included.",
            ["feed"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
