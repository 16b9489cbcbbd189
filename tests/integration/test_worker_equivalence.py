"""The Kafka path and the direct path give identical alerts.

Simulator events with interleaved clock ticks are produced to Tansu (ticks
to every partition), a ``logiwatch worker`` subprocess turns them into
alerts on the alerts topic, and the multiset of full alert records must
equal what ``run_partitioned`` computes in process over the same records
with the same engine configuration. This is what makes backtests, replays
and the live worker agree: with the worker's wall-clock window off
(``worker.event_time_only``, for replays) also for data that ends today, and
none of our own ticks is ever dead-lettered, also by a live worker.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from logiwatch.cli import main
from logiwatch.config import Settings, engine_config
from logiwatch.detectors.codec import decode_alert, encode_alert, write_jsonl
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.producer import produce_events
from logiwatch.sim.traffic import generate
from tests.helpers import wait_until
from tests.integration.test_worker_support import TopicReader, WorkerProcess, committed_offsets

TICK_EVERY_MS = 3600_000
PARTITIONS = 4


DAY_MS = 86_400_000


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    """Every test here runs on one Redis and on a 3-master Redis Cluster."""

    return redis_url_both


@pytest.mark.parametrize("ending", ["simulator-dates", "today", "pooled", "hub-incidents"])
def test_worker_alerts_equal_the_partitioned_backtest_on_the_same_records(
    ending: str,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    # "today": the order window starts 10 days ago, so the last scans are about a day old and
    # the final tick (FINAL_HORIZON_MS past them) lies far ahead of the wall clock
    start = int(time.time() * 1000) - 10 * DAY_MS if ending == "today" else None
    # "hub-incidents": enough parcels for hub incidents, scored live by the hub stage over the
    # four partitions' summaries on the hubs topic, as the backtest's in-process stage does
    events, _labels = generate("default", seed=5, parcels=1000 if ending == "hub-incidents" else 400, start=start)
    events_topic, alerts_topic, dlq_topic = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1)
    cfg = settings_factory(
        kafka={
            "topics": {"events": events_topic, "alerts": alerts_topic, "dlq": dlq_topic},
            "worker_group": f"g-{events_topic}",
        },
        # several batches per partition; a replay: event time only, so the final flush tick
        # (FINAL_HORIZON_MS past the last event, ahead of today's clock) is accepted
        worker={"batch_max_records": 500, "event_time_only": True},
        # "pooled": learning pooled across the four partitions at 6-hour epochs (the worker's
        # partitions exchange their deltas through Redis, the backtest's in memory), same alerts.
        # The other endings learn per partition (pool_epoch_s = 0; the default is pooled), set explicitly
        # so they stay per partition whichever the default
        detection={"pool_epoch_s": 21_600 if ending == "pooled" else 0},
    )
    expected = run_partitioned(interleave_ticks(events, TICK_EVERY_MS), PARTITIONS, engine_config(cfg))
    assert expected, "the scenario must produce alerts for this test to mean anything"
    if ending == "hub-incidents":
        assert any(a.alert_type.value == "hub_incident" for a in expected), "the scenario must have hub incidents"
    if ending == "pooled":
        alone_cfg = engine_config(settings_factory(detection={"pool_epoch_s": 0}))
        alone = run_partitioned(interleave_ticks(events, TICK_EVERY_MS), PARTITIONS, alone_cfg)
        assert Counter(map(encode_alert, alone)) != Counter(map(encode_alert, expected)), "pooling must matter here"
    stats = produce_events(
        kafka_bootstrap, events_topic, events, tick_every_ms=TICK_EVERY_MS, num_partitions=PARTITIONS
    )
    ends = Counter(partition_for(ev.waybill_id, PARTITIONS) for ev in events)
    ticks_per_partition = stats.ticks // PARTITIONS

    worker = WorkerProcess(cfg, tmp_path / "worker.log")
    reader = TopicReader(kafka_bootstrap, alerts_topic)
    dlq = TopicReader(kafka_bootstrap, dlq_topic)
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
        dead = dlq.poll()
    finally:
        reader.close()
        dlq.close()
        worker.stop()
    assert dead == [], f"{len(dead)} records dead-lettered: {[r.headers for r in dead[:3]]}"
    assert all(k == a.alert_id.encode() for k, a in zip(keys, got, strict=True)), (
        "alerts are keyed by alert_id"
    )
    assert Counter(encode_alert(a) for a in got) == Counter(encode_alert(a) for a in expected), (
        worker.log_text()
    )


def test_a_live_worker_dead_letters_none_of_the_ticks_replay_writes_for_data_ending_today(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    # data ending today: the start is placed so that the last scan lies a few hours before now (a
    # fixed "10 days ago" left the longest journeys up to ~2 days in the future at some hours of
    # the day, beyond the live window, and the test failed by the clock)
    # the span itself depends on the start's hour and weekday (working hours, weekends), so
    # step the start back until the data ends before now
    # (both ways: a start moved back by the probe's span can give a span days shorter, and the
    # data then ended ~5 days ago at some hours; seen at 21:45 UTC on a Wednesday)
    hour = 3_600_000
    now = int(time.time() * 1000)
    start = now - 10 * DAY_MS
    for _ in range(64):
        events, _labels = generate("default", seed=6, parcels=150, start=start)
        end = max(e.event_time for e in events)
        if end > now - hour:
            start -= 3 * hour
        elif end < now - 2 * DAY_MS:
            start += max(3 * hour, (now - 6 * hour - end) // 2)
        else:
            break
    assert now - 2 * DAY_MS <= end <= now + DAY_MS // 2, "the data must end about now"
    log = tmp_path / "events.jsonl"
    write_jsonl(log, events)
    events_topic, alerts_topic, dlq_topic = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1)
    # a live worker: the default wall-clock window (events and ticks at most 1 day ahead)
    cfg = settings_factory(
        kafka={
            "topics": {"events": events_topic, "alerts": alerts_topic, "dlq": dlq_topic},
            "worker_group": f"g-{events_topic}",
        },
    )
    assert not cfg.worker.event_time_only
    config_file = tmp_path / "settings.toml"
    config_file.write_text(f'[kafka]\nbootstrap = "{kafka_bootstrap}"\n')
    code = main(["--config", str(config_file), "replay", str(log), "--topic", events_topic, "--ticks-every-s", "3600"])
    assert code == 0
    ticks = len([r for r in interleave_ticks(sorted(events, key=lambda e: e.event_time), TICK_EVERY_MS)]) - len(events)
    worker = WorkerProcess(cfg, tmp_path / "worker.log")
    dlq = TopicReader(kafka_bootstrap, dlq_topic)
    reader = TopicReader(kafka_bootstrap, alerts_topic)
    try:
        wait_until(
            lambda: sum(v or 0 for v in committed_offsets(kafka_bootstrap, cfg.kafka.worker_group, events_topic, PARTITIONS).values())
            == len(events) + ticks * PARTITIONS,
            timeout=90,
            what="every event and tick committed",
        )
        dead = dlq.poll()
        alerts = reader.poll()
    finally:
        dlq.close()
        reader.close()
        worker.stop()
    assert dead == [], f"{len(dead)} of our own records dead-lettered: {[r.headers for r in dead[:3]]}\n{worker.log_text()}"
    assert alerts, "the replay must produce alerts for this test to mean anything"
