"""Redis frozen, then killed and restarted, under load: the services pause, resume and lose nothing.

A private ``redis-server`` (the binary ``logiwatch stack`` uses, here with an
append-only file so a restart keeps its data, as a production Redis would)
backs a real ``logiwatch worker`` and a real ``logiwatch alerts serve``. While
simulator events stream into the broker, Redis is first frozen (SIGSTOP:
unreachable, connections hang) and later SIGKILLed and restarted on the
same port. Both services must still be running afterwards; every alert the
in-process reference produces must reach the alerts topic unchanged, every
alert on the topic must be in the alert service, every notification must be
delivered to the receiver under its stable webhook-id, and the worker's
state must come back from Redis rather than be rebuilt from nothing.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from logiwatch import stack
from logiwatch.alerts.model import FIRING, RESOLVED, NotificationEvent, NotificationKind, notification_id
from logiwatch.config import Settings, engine_config
from logiwatch.detectors.codec import decode_alert, encode_alert
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.sim.traffic import generate
from tests.faults.test_alerts_faults import AlertsServe, FaultReceiver, figures, receiver_toml
from tests.helpers import wait_until
from tests.integration.test_worker_support import (
    TopicReader,
    WorkerProcess,
    committed_offsets,
    end_offsets_of,
    produce_records,
)

pytestmark = pytest.mark.slow

PARTITIONS = 4
FREEZE_S = 5.0
DOWN_S = 6.0


class PersistentRedis:
    """A private redis-server with an fsync-always append-only file, restartable on its port."""

    def __init__(self, workdir: Path) -> None:
        self.port = stack.free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            str(stack.redis_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
        ]  # fmt: skip
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(lambda: stack.redis_reachable(self.url, timeout=0.5), 20, what="private redis answers")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def offsets(self, pattern: str) -> dict[str, int]:
        """Partition -> snapshot offset for the worker's offset keys matching ``pattern``."""

        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            return {k.decode().rsplit(":", 1)[1].rstrip("}"): int(client.get(k) or -1) for k in client.scan_iter(match=pattern)}
        finally:
            client.close()

    def keys(self) -> set[str]:
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            return {k.decode() for k in client.scan_iter(count=1000)}
        finally:
            client.close()


@pytest.mark.parametrize("pool_epoch_s", [0, 21_600], ids=["alone", "pooled"])
def test_redis_frozen_then_killed_and_restarted_under_load_loses_no_alert_and_restores_state(
    pool_epoch_s: int,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    events, _ = generate("default", seed=23, parcels=900)
    records: list[object] = list(interleave_ticks(events, 3600_000))
    ev_topic, al_topic, dlq_topic = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1)
    store = PersistentRedis(tmp_path / "redis")
    store.start()
    cfg = settings_factory(
        kafka={
            "topics": {"events": ev_topic, "alerts": al_topic, "dlq": dlq_topic},
            "worker_group": f"g-{ev_topic}",
            "session_timeout_ms": 6000,
        },
        redis={"url": store.url},
        # the final flush tick lies far past the simulated events, beyond the default 24 h future bound
        worker={"batch_max_records": 300, "event_time_only": True},
        detection={"pool_epoch_s": pool_epoch_s},
    )
    # Per-partition learning (0) and pooled (6 h epochs, the default). Pooled, the outage once left
    # some alerts' "resolved" on the alerts topic ahead of their "firing", so the service never
    # notified them: the pool round after a batch released that partition's held records and
    # sent their alerts before the batch's own (tests/unit/test_worker_pool_order.py)
    expected = [encode_alert(a) for a in run_partitioned(records, PARTITIONS, engine_config(cfg))]  # type: ignore[arg-type]
    hook = FaultReceiver("cs")
    hook.__enter__()
    hook.up()
    svc = AlertsServe(tmp_path, kafka_bootstrap, store.url, cfg.redis.key_prefix + "alerts:", receiver_toml(hook))
    # The service reads what the worker writes: point it at the worker's alerts topic.
    svc.config.write_text(svc.config.read_text().replace(f'alerts = "{svc.topic}"', f'alerts = "{al_topic}"'))
    worker = WorkerProcess(cfg, tmp_path / "worker.log")
    producer_error: list[BaseException] = []
    chunks = [records[i : i + 400] for i in range(0, len(records), 400)]
    keys_before_kill: set[str] = set()

    def produce_slowly() -> None:
        try:
            for chunk in chunks:
                produce_records(kafka_bootstrap, ev_topic, chunk, PARTITIONS)
                time.sleep(0.6)  # pacing so that the faults land mid-stream, not a test wait
        except BaseException as exc:  # surfaced to the test below
            producer_error.append(exc)

    feeder = threading.Thread(target=produce_slowly, daemon=True)
    try:
        svc.start()
        wait_until(lambda: svc.receivers(), 40, what=f"alert service up: {svc.log_tail()}")
        feeder.start()
        wait_until(
            lambda: any(committed_offsets(kafka_bootstrap, cfg.kafka.worker_group, ev_topic, PARTITIONS).values()),
            60,
            what=f"worker consuming: {worker.log_text()[-800:]}",
        )
        # Fault 1: Redis unreachable (frozen) for a while under load.
        store.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_until(lambda: time.monotonic() - frozen_at >= FREEZE_S, FREEZE_S + 2, interval=0.2)
        assert worker.alive() and svc.alive(), "a service died while Redis was frozen"
        store.signal(signal.SIGCONT)
        wait_until(lambda: len(hook.ok_hits()) > 0, 60, what="deliveries after the freeze")
        # Fault 2: Redis killed and restarted on the same port while records keep coming.
        keys_before_kill = store.keys()
        store.kill()
        killed_at = time.monotonic()
        wait_until(lambda: time.monotonic() - killed_at >= DOWN_S, DOWN_S + 2, interval=0.2)
        assert worker.alive() and svc.alive(), "a service died while Redis was down"
        store.start()
        keys_after_restart = store.keys()
        feeder.join(120)
        assert not producer_error, producer_error
        ends = end_offsets_of(records, PARTITIONS)
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, cfg.kafka.worker_group, ev_topic, PARTITIONS) == ends,
            120,
            what=f"every record committed: {worker.log_text()[-800:]}",
        )
        reader = TopicReader(kafka_bootstrap, al_topic)
        try:
            wait_until(lambda: reader.covers(expected), 60, what="alerts on the topic")
            reader.poll()
            got = [r.value for r in reader.records]
        finally:
            reader.close()
        topic_ids = {decode_alert(raw).alert_id for raw in got}
        wait_until(lambda: svc.consumed() >= len(got), 60, what="alert service consumed the topic")
        wait_until(lambda: all(q["queued"] == 0 for q in svc.receivers().values()), 60, what="deliveries drained")
        snapshot_offsets = store.offsets(f"{cfg.redis.key_prefix}*offset:{{{ev_topic}:*")
        listed = svc.get("/api/alerts?limit=5000")
        queues = svc.receivers()
        assert worker.alive() and svc.alive(), f"{worker.log_text()[-800:]}\n{svc.log_tail()}"
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        service_log = svc.log_path.read_text(errors="replace")
    finally:
        worker.stop()
        svc.close()
        hook.__exit__()
        store.stop()
    missing = set(expected) - set(got)
    assert not missing, f"{len(missing)} alerts lost, e.g. {sorted(missing)[:2]}"
    assert set(got) <= set(expected), "a re-emitted alert differs from the reference"
    records_in_service = {item["alert"]["alert_id"]: item for item in listed["alerts"]}
    assert set(records_in_service) == topic_ids, "the alert service lost or invented alerts"
    assert all(q["dead_letters"] == 0 for q in queues.values()), queues
    notified = {aid for aid, item in records_in_service.items() if item.get("suppressed") is None}
    delivered = hook.delivered_alerts()
    assert notified <= delivered, f"{len(notified - delivered)} notifications never delivered, e.g. {sorted(notified - delivered)[:3]}"
    kinds = (FIRING, RESOLVED, NotificationKind(NotificationEvent.ESCALATED))
    allowed_ids = {notification_id("cs", aid, kind) for aid in topic_ids for kind in kinds}
    assert {h.webhook_id for h in hook.ok_hits()} <= allowed_ids, "a delivery carried an unstable webhook-id"
    # State came back with Redis: the AOF kept the snapshots, the worker never found its
    # committed offsets ahead of its state, and each partition's snapshot covers exactly
    # what was committed.
    # Work lists (notification queues, the escalation set) vanish when they drain, as Redis
    # deletes an empty key, so a key count taken just before the kill races the deliveries.
    # Compare the keys that are never emptied: the worker's snapshot offsets, models and
    # baselines, and the alert service's records.
    # (the service runs under the prefix + "alerts:", and its store adds "alerts:" again)
    kinds = tuple(cfg.redis.key_prefix + kind for kind in ("offset:", "models:", "baselines:", "alerts:alerts:alert:"))
    durable = {k for k in keys_before_kill if k.startswith(kinds)}
    assert durable and durable <= keys_after_restart, sorted(durable - keys_after_restart)[:5]
    written = {kind for kind in kinds for k in durable if k.startswith(kind)}
    assert written == set(kinds), f"nothing of some kind was written before the kill: {written}"
    worker_pauses = worker_log.count("consumption paused")
    service_pauses = service_log.count("Redis unavailable")
    assert worker_pauses and service_pauses, "the faults never reached the services: nothing was tested"
    assert "ahead of the state snapshot" not in worker_log
    assert snapshot_offsets == {str(p): n for p, n in ends.items()}, snapshot_offsets
    figures(
        "redis_freeze_and_restart" + ("_pooled" if pool_epoch_s else ""),
        events=len(events),
        records_with_ticks=len(records),
        alerts_expected=len(expected),
        alert_records_on_topic=len(got),
        faults=[f"SIGSTOP redis {FREEZE_S:.0f} s", f"SIGKILL redis, restart after {DOWN_S:.0f} s"],
        notifications_delivered=len({h.webhook_id for h in hook.ok_hits()}),
        same_id_redeliveries=len(hook.ok_hits()) - len({h.webhook_id for h in hook.ok_hits()}),
        lost=0,
        redis_keys_before_kill=len(keys_before_kill),
        redis_keys_after_restart=len(keys_after_restart),
        durable_keys_kept=len(durable),
        worker_redis_retries_logged=worker_pauses,
        service_redis_retries_logged=service_pauses,
    )
