"""A SIGKILLed ``logiwatch alerts serve`` restarts without losing or re-notifying alerts.

The real CLI runs in a subprocess against the real broker, Redis and a
slow local receiver; it is killed while deliveries are in flight and while
consumed offsets may be uncommitted, then started again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from logiwatch import stack
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import SECRET, TOKEN, HookReceiver, produce, stall

BIN = Path(sys.executable).with_name("logiwatch")


def write_config(tmp_path: Path, bootstrap: str, redis_url: str, prefix: str, topic: str, ltopic: str, hook_url: str, port: int) -> Path:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f"""
[[receivers]]
name = "cs"
url = "{hook_url}"
secret = "{SECRET}"
allow_private_networks = true
retry_schedule_s = [0.2, 0.5, 1, 1, 1, 1, 1, 1]
rate_per_s = 100

[[routes]]
receiver = "cs"
"""
    )
    cfg = tmp_path / "logiwatch.toml"
    cfg.write_text(
        f"""
log_level = "INFO"
[kafka]
bootstrap = "{bootstrap}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
alerts_group = "g-{uuid4().hex}"
[kafka.topics]
alerts = "{topic}"
liability = "{ltopic}"
[redis]
url = "{redis_url}"
key_prefix = "{prefix}"
[alerts]
routes_file = "{routes}"
api_port = {port}
api_token = "{TOKEN}"
"""
    )
    return cfg


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_")}
    with open(log, "ab") as fh:
        return subprocess.Popen([str(BIN), "--config", str(cfg), "alerts", "serve"], stdout=fh, stderr=subprocess.STDOUT, env=env)


def receivers(port: int) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/receivers", timeout=5) as resp:
            data: list[dict[str, Any]] = json.loads(resp.read())["receivers"]
            return data
    except OSError:
        return []


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    """On one Redis and on a 3-master Redis Cluster."""

    return redis_url_both


def test_sigkilled_service_restarts_without_losing_or_renotifying_alerts(
    kafka_bootstrap: str, topic_factory: Callable[..., str], redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    port = stack.free_port()
    alerts = [stall(i) for i in range(60)]
    log = tmp_path / "service.log"
    with HookReceiver() as hook:
        hook.delay_s = 0.25  # slow enough that the kill lands mid-delivery (about 4 s for all)
        cfg = write_config(tmp_path, kafka_bootstrap, redis_url, redis_prefix, topic, ltopic, hook.url, port)
        proc = start(cfg, log)
        try:
            wait_until(lambda: receivers(port), 30, what=f"service API up ({log.read_text()[-500:]})")
            produce(kafka_bootstrap, topic, alerts)
            wait_until(lambda: len(hook.ok_hits()) >= 8, 60, what="some deliveries before the kill")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert len(hook.ok_counts()) < len(alerts), "killed too late to test anything"
            hook.delay_s = 0.0
            restarted_at = time.monotonic()  # anything arriving before this was sent by the killed process
            proc = start(cfg, log)
            wait_until(lambda: len(hook.ok_counts()) == len(alerts), 90, what=f"every alert after restart ({log.read_text()[-800:]})")
            wait_until(lambda: (r := receivers(port)) and r[0]["queued"] == 0, 30, what="queue drained")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        counts = hook.ok_counts()
        by_alert: dict[str, set[str]] = {}
        for h in hook.ok_hits():
            by_alert.setdefault(h.json()["alert"]["alert_id"], set()).add(h.webhook_id)
        assert set(by_alert) == {a.alert_id for a in alerts}, "an alert was lost"
        assert all(len(ids) == 1 for ids in by_alert.values()), "an alert was notified under two webhook-ids"
        repeats = {wid for wid, n in counts.items() if n > 1}
        # At-least-once with a stable id: only an attempt in flight at the kill may arrive twice,
        # and it carries the same webhook-id, which receivers deduplicate on.
        sent_by_killed = {h.webhook_id for h in hook.hits if h.arrived < restarted_at}
        assert len(repeats) <= 4 and repeats <= sent_by_killed, repeats
        assert proc.returncode == 0, log.read_text()[-1000:]
