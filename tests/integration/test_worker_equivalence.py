"""The Kafka path and the direct path give identical alerts.

Simulator events with interleaved clock ticks are produced to Tansu (ticks
to every partition), a ``logiwatch worker`` subprocess turns them into
alerts on the alerts topic, and the multiset of full alert records must
equal what ``run_partitioned`` computes in process over the same records
with the same engine configuration. This is what makes backtests, replays
and the live worker agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from logiwatch.config import Settings
from logiwatch.detectors.codec import decode_alert, encode_alert
from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.producer import produce_events
from logiwatch.simulator import generate
from tests.helpers import wait_until
from tests.integration.test_worker_support import TopicReader, WorkerProcess, committed_offsets

TICK_EVERY_MS = 3600_000
PARTITIONS = 4


def test_worker_alerts_equal_the_partitioned_backtest_on_the_same_records(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    events, _labels = generate("default", seed=5, parcels=400)
    events_topic, alerts_topic, dlq_topic = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1)
    cfg = settings_factory(
        kafka={
            "topics": {"events": events_topic, "alerts": alerts_topic, "dlq": dlq_topic},
            "worker_group": f"g-{events_topic}",
        },
        # several batches per partition; the final flush tick is FINAL_HORIZON_MS
        # past the last event, which may be ahead of today's clock
        worker={"batch_max_records": 500, "max_event_future_ms": 90 * 86_400_000},
    )
    expected = run_partitioned(
        interleave_ticks(events, TICK_EVERY_MS),
        PARTITIONS,
        EngineConfig(allowed_lateness_ms=cfg.worker.allowed_lateness_ms),
    )
    assert expected, "the scenario must produce alerts for this test to mean anything"
    stats = produce_events(
        kafka_bootstrap, events_topic, events, tick_every_ms=TICK_EVERY_MS, num_partitions=PARTITIONS
    )
    ends = Counter(partition_for(ev.waybill_id, PARTITIONS) for ev in events)
    ticks_per_partition = stats.ticks // PARTITIONS

    worker = WorkerProcess(cfg, tmp_path / "worker.log")
    reader = TopicReader(kafka_bootstrap, alerts_topic)
    try:
        wait_until(
            lambda: all(
                committed_offsets(kafka_bootstrap, cfg.kafka.worker_group, events_topic, PARTITIONS).get(p)
                == ends[p] + ticks_per_partition
                for p in range(PARTITIONS)
            ),
            timeout=90,
            what="every event and tick committed",
        )
        wait_until(lambda: len(reader.poll()) >= len(expected), timeout=30, what="alerts on the topic")
        reader.poll()
        got = [decode_alert(r.value) for r in reader.records]
        keys = [r.key for r in reader.records]
    finally:
        reader.close()
        worker.stop()
    assert all(k == a.alert_id.encode() for k, a in zip(keys, got, strict=True)), (
        "alerts are keyed by alert_id"
    )
    assert Counter(encode_alert(a) for a in got) == Counter(encode_alert(a) for a in expected), (
        worker.log_text()
    )
