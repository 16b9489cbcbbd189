"""Four workers on 16 partitions: SIGKILL one, then two at once; the alerts equal the reference.

The reference is ``run_partitioned`` over the same records with 16
partitions. The stream is produced in three phases. Four ``logiwatch
worker`` processes share the group; while phase two is being consumed one
of them is SIGKILLed, and while phase three is being consumed two more are
SIGKILLed together, so the last survivor takes over twelve partitions it
never owned from snapshots written by three different processes (and the
broker's committed offsets disagree with those snapshots in every way a
kill allows). Phase three carries the final clock ticks, so the silent
parcels' stalls fire only on the survivor. Every expected alert must reach
the alerts topic, and every alert there must equal an expected one.

Runs on one Redis and on a 3-master Redis Cluster; the figures line
(``pytest -s``, ``RELIABILITY worker_fleet ...``) is what docs/reliability.md quotes.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from logiwatch.config import Settings, engine_config
from logiwatch.detectors.codec import decode_alert, encode_alert
from logiwatch.detectors.model import AlertStatus, AnomalyType
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.sim.traffic import generate
from tests.faults.test_alerts_faults import figures
from tests.helpers import wait_until
from tests.integration.test_worker_support import (
    TopicReader,
    WorkerProcess,
    committed_offsets,
    end_offsets_of,
    produce_records,
)

PARTITIONS = 16
WORKERS = 4
TICK_EVERY_MS = 3600_000
SILENT_TYPES = {AnomalyType.STALL, AnomalyType.LIKELY_LOST}


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    return redis_url_both


def _owned(topic: str, log: str) -> set[int]:
    return {int(p) for p in re.findall(rf"restored {re.escape(topic)}\[(\d+)\]", log)}


@pytest.mark.parametrize("pool_epoch_s", [0, 21_600], ids=["alone", "pooled"])
def test_four_workers_lose_one_then_two_at_once_and_the_alerts_equal_the_reference(
    pool_epoch_s: int,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    redis_url: str,
) -> None:
    started = time.monotonic()
    events, _ = generate("default", seed=13, parcels=1200)
    records: list[object] = list(interleave_ticks(events, TICK_EVERY_MS))
    ev, al, dlq = topic_factory("ev", PARTITIONS), topic_factory("al", PARTITIONS), topic_factory("dlq", 1)
    cfg = settings_factory(
        kafka={"topics": {"events": ev, "alerts": al, "dlq": dlq}, "worker_group": f"g-{ev}", "session_timeout_ms": 6000},
        worker={"batch_max_records": 200, "event_time_only": True},
        # per-partition learning (0) and pooled (6 h epochs, the default); the reference follows
        # the settings (engine_config)
        detection={"pool_epoch_s": pool_epoch_s},
    )
    conf = engine_config(cfg)
    expected = {encode_alert(a) for a in run_partitioned(records, PARTITIONS, conf)}  # type: ignore[arg-type]
    s1, s2 = len(records) // 3, 2 * len(records) // 3
    before_last = {encode_alert(a) for a in run_partitioned(records[:s2], PARTITIONS, conf)}  # type: ignore[arg-type]
    silent_late = {
        raw for raw in expected - before_last
        if (a := decode_alert(raw)).alert_type in SILENT_TYPES and a.status is AlertStatus.FIRING
    }  # fmt: skip
    assert silent_late, "the scenario must have stalls that only the last phase's ticks can fire"

    def committed(stop: int | None, what: str) -> None:
        ends = end_offsets_of(records[:stop], PARTITIONS)
        wait_until(lambda: committed_offsets(kafka_bootstrap, cfg.kafka.worker_group, ev, PARTITIONS) == ends, 150, what=what)

    workers = [WorkerProcess(cfg, tmp_path / f"w{i}.log") for i in range(WORKERS)]
    try:
        produce_records(kafka_bootstrap, ev, records[:s1], PARTITIONS)
        wait_until(lambda: all(_owned(ev, w.full_log()) for w in workers), 120, what="all four workers own partitions")
        committed(s1, "phase one committed by four workers")
        produce_records(kafka_bootstrap, ev, records[s1:s2], PARTITIONS)
        workers[0].kill()  # while phase two is being consumed
        killed_one = time.monotonic()
        committed(s2, "phase two committed by the three survivors")
        one_down_s = time.monotonic() - killed_one
        produce_records(kafka_bootstrap, ev, records[s2:], PARTITIONS)
        for w in workers[1:3]:  # two at once, mid phase three
            w.proc.send_signal(signal.SIGKILL)
        for w in workers[1:3]:
            w.kill()  # reaps
        killed_two = time.monotonic()
        committed(None, "everything committed by the last survivor")
        two_down_s = time.monotonic() - killed_two
        survivor = workers[3]
        assert survivor.alive(), survivor.log_text()
        reader = TopicReader(kafka_bootstrap, al)
        try:
            try:
                wait_until(lambda: {r.value for r in reader.poll()} >= expected, 30, what="alerts on the topic")
            except AssertionError:
                pass  # the comparison below names what is missing
            reader.poll()
            got = [r.value for r in reader.records]
        finally:
            reader.close()
        # the killed workers may have committed their partitions' last records before they died,
        # so "everything committed" can come before the survivor's rebalance: wait for the takeover
        # itself rather than read the log too early. On a loaded machine it came 60-70 s after the
        # kill, likely (two clean-clone CI runs at once: the survivor's log holds the restores of rebalance
        # #3, yet a 60 s wait had given up), so allow as long as the commits are allowed
        try:
            wait_until(lambda: len(_owned(ev, survivor.full_log())) == PARTITIONS, 150, what="the survivor owns all")
        except AssertionError:
            pass  # the assertion below names the partitions it restored
        taken_over = _owned(ev, survivor.full_log())
    finally:
        for w in workers:
            w.kill()
    missing = expected - set(got)
    assert not missing, f"{len(missing)} of {len(expected)} alerts lost: {sorted(missing)[:2]}\n{workers[3].log_text()[-1500:]}"
    changed = set(got) - expected
    assert not changed, f"re-emitted alerts differ from the reference: {sorted(changed)[:2]}"
    assert silent_late <= set(got)
    assert len(taken_over) == PARTITIONS, f"the survivor restored {sorted(taken_over)}, not all {PARTITIONS}"
    figures(
        "worker_fleet" + ("_pooled" if pool_epoch_s else ""),
        redis="cluster" if redis_url.startswith("redis+cluster") else "single",
        partitions=PARTITIONS,
        workers=WORKERS,
        records_with_ticks=len(records),
        alerts_expected=len(expected),
        alerts_on_topic=len(got),
        re_emitted=len(got) - len(set(got)),
        one_killed_to_committed_s=round(one_down_s, 1),
        two_killed_to_committed_s=round(two_down_s, 1),
        test_s=round(time.monotonic() - started, 1),
    )
