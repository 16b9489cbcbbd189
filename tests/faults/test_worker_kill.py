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

import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from logiwatch.config import Settings, engine_config
from logiwatch.detectors.codec import decode_alert, encode_alert
from logiwatch.detectors.model import AlertStatus, AnomalyType
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.sim.traffic import generate
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


def _expected(cfg: Settings, records: list[object]) -> list[bytes]:
    conf = engine_config(cfg)  # the worker's own detection settings (pooled learning on)
    return [encode_alert(a) for a in run_partitioned(records, PARTITIONS, conf)]  # type: ignore[arg-type]


@dataclass
class Scenario:
    """One test's stream on fresh topics, split in two phases, and the alerts it must give."""

    bootstrap: str
    cfg: Settings
    records: list[object]
    split: int  # phase two (the last events and the final far-ahead tick) starts here
    expected: list[bytes]
    logs: Path

    @property
    def topic(self) -> str:
        return self.cfg.kafka.topics.events

    def alone(self) -> Scenario:
        """The same stream with pooled learning off (each partition learns on its own)."""

        detection = self.cfg.detection.model_copy(update={"pool_epoch_s": 0})
        cfg = self.cfg.model_copy(update={"detection": detection})
        return dataclasses.replace(self, cfg=cfg, expected=_expected(cfg, self.records))

    def produce(self, start: int, stop: int | None = None) -> None:
        produce_records(self.bootstrap, self.topic, self.records[start:stop], PARTITIONS)

    def worker(self, name: str) -> WorkerProcess:
        return WorkerProcess(self.cfg, self.logs / f"{name}.log")

    def wait_committed(self, stop: int | None = None) -> None:
        """Wait until the group committed every record of ``records[:stop]``."""

        ends = end_offsets_of(self.records[:stop], PARTITIONS)
        wait_until(
            lambda: (
                committed_offsets(self.bootstrap, self.cfg.kafka.worker_group, self.topic, PARTITIONS) == ends
            ),
            timeout=120,
            what="every record committed",
        )

    def received(self) -> list[bytes]:
        reader = TopicReader(self.bootstrap, self.cfg.kafka.topics.alerts)
        try:
            try:
                wait_until(
                    lambda: reader.covers(self.expected), timeout=30, what="alerts on the topic"
                )
            except AssertionError:
                pass  # the comparison below names what is missing
            reader.poll()
            return [r.value for r in reader.records]
        finally:
            reader.close()

    def finish_on_a_second_worker(self) -> tuple[list[bytes], str]:
        """Produce phase two, start a second worker and return the alerts topic once all is committed, and its log."""

        self.produce(self.split)
        second = self.worker("second")
        try:
            self.wait_committed()
            got = self.received()
        finally:
            second.stop()
        return got, second.log_text()

    def silent_alerts_after_split(self) -> set[bytes]:
        """Stall/lost alerts that exist only because of records produced after the split."""

        before = set(_expected(self.cfg, self.records[: self.split]))
        return {
            raw
            for raw in self.expected
            if raw not in before
            and (a := decode_alert(raw)).alert_type in SILENT_TYPES
            and a.status is AlertStatus.FIRING
        }


@pytest.fixture
def scenario(
    kafka_bootstrap: str,
    worker_topics: tuple[str, str, str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> Scenario:
    events, _ = generate("default", seed=11, parcels=900)
    records: list[object] = list(interleave_ticks(events, TICK_EVERY_MS))
    ev_topic, al_topic, dlq_topic = worker_topics
    cfg = settings_factory(
        kafka={
            "topics": {"events": ev_topic, "alerts": al_topic, "dlq": dlq_topic},
            "worker_group": f"g-{ev_topic}",
            "session_timeout_ms": 6000,
        },
        # The final flush tick is FINAL_HORIZON_MS past the last event, which
        # may be ahead of today's clock: let the worker accept it.
        worker={"batch_max_records": 300, "event_time_only": True},
        detection={"pool_epoch_s": 21_600},  # pooled learning on (6 h epochs, the default since 2026-12-04), set explicitly
    )
    return Scenario(kafka_bootstrap, cfg, records, int(len(records) * 0.6), _expected(cfg, records), tmp_path)


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


def test_sigkilled_worker_restarts_without_losing_or_changing_alerts(scenario: Scenario) -> None:
    silent_after = scenario.silent_alerts_after_split()
    assert silent_after, "the scenario must have stalls that only the later ticks can fire"
    cfg, split = scenario.cfg, scenario.split

    first = scenario.worker("first")
    try:
        scenario.produce(0, split // 3)
        wait_until(
            lambda: all(
                committed_offsets(
                    scenario.bootstrap, cfg.kafka.worker_group, scenario.topic, PARTITIONS
                ).values()
            ),
            timeout=60,
            what="first worker consuming",
        )
        # Kill while the rest of phase one is arriving and being consumed.
        scenario.produce(split // 3, split)
    finally:
        first.kill()
    got, log = scenario.finish_on_a_second_worker()
    _assert_same_alerts(got, scenario.expected, log)
    assert silent_after <= set(got)


def test_survivor_takes_over_a_killed_workers_partitions_with_their_state(scenario: Scenario) -> None:
    # Pooled. Before the worker restored assigned partitions at once, the victim's
    # partitions, all committed but holding records at an epoch, were never restored by the
    # survivor (no batch came) and the survivor's own partitions waited for them for ever.
    split = scenario.split
    victim = scenario.worker("victim")
    survivor = scenario.worker("survivor")
    restored = re.compile(rf"restored {re.escape(scenario.topic)}\[(\d+)\]")
    try:
        scenario.produce(0, split)
        # Both members own partitions and have consumed phase one.
        wait_until(
            lambda: restored.search(victim.full_log()) and restored.search(survivor.full_log()),
            timeout=90,
            what="both workers own partitions",
        )
        scenario.wait_committed(split)
        victim_parts = {int(p) for p in restored.findall(victim.full_log())}
        victim.kill()
        scenario.produce(split)
        scenario.wait_committed()
        got = scenario.received()
        survivor_parts = {int(p) for p in restored.findall(survivor.full_log())}
    finally:
        victim.kill()
        survivor.stop()
    assert victim_parts and victim_parts <= survivor_parts, "the survivor restored the victim's partitions"
    _assert_same_alerts(got, scenario.expected, survivor.log_text())


def test_worker_rebuilds_state_from_the_topic_when_redis_lost_it(scenario: Scenario, redis_url: str) -> None:
    # Pooled: every partition is rebuilt from the topic and re-publishes the same deltas.
    cfg, split = scenario.cfg, scenario.split
    first = scenario.worker("first")
    try:
        scenario.produce(0, split)
        scenario.wait_committed(split)
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
    got, log = scenario.finish_on_a_second_worker()
    assert "seeking back" in log
    _assert_same_alerts(got, scenario.expected, log)
