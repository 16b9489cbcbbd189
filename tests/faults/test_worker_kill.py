"""SIGKILL the worker mid-stream: no alert is lost, none changes, stalls still fire.

The reference is ``run_partitioned`` over the same records. The stream is
produced in two phases; the worker is killed with SIGKILL while phase one
is being consumed (state snapshots in Redis and committed offsets then
disagree in every possible way), and phase two, which carries the clock
ticks that make silent parcels' deadlines fire, is produced after the
restart. Every expected alert must arrive, and every alert record that
arrives (re-emissions included) must be identical to an expected one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from logiwatch.config import Settings
from logiwatch.detectors.codec import decode_alert, encode_alert
from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import AlertStatus, AnomalyType
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.simulator import generate
from tests.helpers import wait_until
from tests.integration.test_worker_support import (
    TopicReader,
    WorkerProcess,
    committed_offsets,
    end_offsets_of,
    produce_records,
)

PARTITIONS = 4
TICK_EVERY_MS = 3600_000
SILENT_TYPES = {AnomalyType.STALL, AnomalyType.LIKELY_LOST}


def _scenario(
    topic_factory: Callable[..., str], settings_factory: Callable[..., Settings], **worker: object
) -> tuple[Settings, list[object], int]:
    events, _ = generate("default", seed=11, parcels=900)
    records: list[object] = list(interleave_ticks(events, TICK_EVERY_MS))
    ev_topic, al_topic, dlq_topic = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1)
    cfg = settings_factory(
        kafka={
            "topics": {"events": ev_topic, "alerts": al_topic, "dlq": dlq_topic},
            "worker_group": f"g-{ev_topic}",
            "session_timeout_ms": 6000,
        },
        # The final flush tick is FINAL_HORIZON_MS past the last event, which
        # may be ahead of today's clock: let the worker accept it.
        worker={"batch_max_records": 300, "max_event_future_ms": 90 * 86_400_000, **worker},
    )
    # Phase two holds the last events and the final far-ahead tick.
    return cfg, records, int(len(records) * 0.6)


def _expected(cfg: Settings, records: list[object]) -> list[bytes]:
    conf = EngineConfig(allowed_lateness_ms=cfg.worker.allowed_lateness_ms)
    return [encode_alert(a) for a in run_partitioned(records, PARTITIONS, conf)]  # type: ignore[arg-type]


def _wait_all_committed(bootstrap: str, cfg: Settings, records: list[object]) -> None:
    ends = end_offsets_of(records, PARTITIONS)
    wait_until(
        lambda: (
            committed_offsets(bootstrap, cfg.kafka.worker_group, cfg.kafka.topics.events, PARTITIONS) == ends
        ),
        timeout=120,
        what="every record committed",
    )


def _received(bootstrap: str, cfg: Settings, at_least: int) -> list[bytes]:
    reader = TopicReader(bootstrap, cfg.kafka.topics.alerts)
    try:
        try:
            wait_until(lambda: len(reader.poll()) >= at_least, timeout=30, what="alerts on the topic")
        except AssertionError:
            pass  # the comparison below names what is missing
        reader.poll()
        return [r.value for r in reader.records]
    finally:
        reader.close()


def _assert_same_alerts(got: list[bytes], expected: list[bytes], log: str) -> None:
    missing = set(expected) - set(got)
    where = Counter(
        (partition_for(a.waybill_id, PARTITIONS) if a.waybill_id else None, a.alert_type.value)
        for a in map(decode_alert, missing)
    )
    assert not missing, f"{len(missing)} of {len(set(expected))} alerts lost: {dict(where)}\n{log}"
    changed = set(got) - set(expected)
    assert not changed, f"re-emitted alerts differ: {sorted(changed)[:2]}"
    by_id: dict[str, set[bytes]] = {}
    for raw in expected:
        by_id.setdefault(decode_alert(raw).alert_id, set()).add(raw)
    for raw in got:
        assert raw in by_id[decode_alert(raw).alert_id]


def _silent_alerts_after(
    cfg: Settings, records: list[object], split: int, expected: list[bytes]
) -> set[bytes]:
    """Stall/lost alerts that exist only because of records produced after the split."""

    before = set(_expected(cfg, records[:split]))
    return {
        raw
        for raw in expected
        if raw not in before
        and (a := decode_alert(raw)).alert_type in SILENT_TYPES
        and a.status is AlertStatus.FIRING
    }


def test_sigkilled_worker_restarts_without_losing_or_changing_alerts(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    cfg, records, split = _scenario(topic_factory, settings_factory)
    expected = _expected(cfg, records)
    silent_after = _silent_alerts_after(cfg, records, split, expected)
    assert silent_after, "the scenario must have stalls that only the later ticks can fire"
    bootstrap, topic = kafka_bootstrap, cfg.kafka.topics.events

    first = WorkerProcess(cfg, tmp_path / "first.log")
    try:
        produce_records(bootstrap, topic, records[: split // 3], PARTITIONS)
        wait_until(
            lambda: all(committed_offsets(bootstrap, cfg.kafka.worker_group, topic, PARTITIONS).values()),
            timeout=60,
            what="first worker consuming",
        )
        # Kill while the rest of phase one is arriving and being consumed.
        produce_records(bootstrap, topic, records[split // 3 : split], PARTITIONS)
    finally:
        first.kill()
    produce_records(bootstrap, topic, records[split:], PARTITIONS)
    second = WorkerProcess(cfg, tmp_path / "second.log")
    try:
        _wait_all_committed(bootstrap, cfg, records)
        got = _received(bootstrap, cfg, len(expected))
    finally:
        second.stop()
    _assert_same_alerts(got, expected, second.log_text())
    assert silent_after <= set(got)


def test_survivor_takes_over_a_killed_workers_partitions_with_their_state(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    cfg, records, split = _scenario(topic_factory, settings_factory)
    expected = _expected(cfg, records)
    bootstrap, topic = kafka_bootstrap, cfg.kafka.topics.events

    victim = WorkerProcess(cfg, tmp_path / "victim.log")
    survivor = WorkerProcess(cfg, tmp_path / "survivor.log")
    restored = re.compile(rf"restored {re.escape(topic)}\[(\d+)\]")
    try:
        produce_records(bootstrap, topic, records[:split], PARTITIONS)
        # Both members own partitions and have consumed phase one.
        wait_until(
            lambda: restored.search(victim.log_text()) and restored.search(survivor.log_text()),
            timeout=90,
            what="both workers own partitions",
        )
        _wait_all_committed(bootstrap, cfg, records[:split])
        victim_parts = {int(p) for p in restored.findall(victim.log_text())}
        victim.kill()
        produce_records(bootstrap, topic, records[split:], PARTITIONS)
        _wait_all_committed(bootstrap, cfg, records)
        got = _received(bootstrap, cfg, len(expected))
        survivor_parts = {int(p) for p in restored.findall(survivor.log_text())}
    finally:
        victim.kill()
        survivor.stop()
    assert victim_parts and victim_parts <= survivor_parts, "the survivor restored the victim's partitions"
    _assert_same_alerts(got, expected, survivor.log_text())


def test_worker_rebuilds_state_from_the_topic_when_redis_lost_it(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    redis_url: str,
    tmp_path: Path,
) -> None:
    cfg, records, split = _scenario(topic_factory, settings_factory)
    expected = _expected(cfg, records)
    bootstrap, topic = kafka_bootstrap, cfg.kafka.topics.events

    first = WorkerProcess(cfg, tmp_path / "first.log")
    try:
        produce_records(bootstrap, topic, records[:split], PARTITIONS)
        _wait_all_committed(bootstrap, cfg, records[:split])
    finally:
        first.stop()
    # Redis loses everything (a restart without persistence); the committed
    # offsets are now ahead of the (missing) state.
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{cfg.redis.key_prefix}*"))
        assert keys, "the first worker wrote snapshots"
        client.delete(*keys)
    finally:
        client.close()
    produce_records(bootstrap, topic, records[split:], PARTITIONS)
    second = WorkerProcess(cfg, tmp_path / "second.log")
    try:
        _wait_all_committed(bootstrap, cfg, records)
        got = _received(bootstrap, cfg, len(expected))
    finally:
        second.stop()
    assert "seeking back" in second.log_text()
    _assert_same_alerts(got, expected, second.log_text())
