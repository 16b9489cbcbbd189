"""Alertmanager against Debian's real ``prometheus-alertmanager`` started on a free port,
both as a receiver kind in the routes (only what the routes match reaches it, through the
delivery queue) and as the forwarder of every open alert: alerts appear in its API v2 and
in ``amtool alert query``, are re-posted before their ``endsAt`` lapses, resolve there
when logiwatch resolves them, and a silence set in Alertmanager (with amtool) is honoured
there."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from logiwatch.alerts.routing import parse_routes
from logiwatch.detectors.model import AnomalyType, Severity
from tests.helpers import wait_until
from tests.integration.test_alert_service import call
from tests.integration.test_alert_service_harness import TOKEN, ServiceThread, produce, routes, stall

ENSURE = Path(__file__).parents[2] / "scripts" / "ensure-alertmanager.sh"
RESEND_S = 1.0  # endsAt = now + 4 s: a missed re-post would let an alert lapse within the test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    done = subprocess.run(["sh", str(ENSURE)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"cannot install alertmanager: {done.stderr.strip()[-300:]}"
    binary = done.stdout.strip().splitlines()[-1]
    cfg = tmp_path / "am.yml"
    cfg.write_text('route:\n  receiver: "null"\n  group_wait: 1s\nreceivers:\n  - name: "null"\n')
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={cfg}", f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or _ready(url), 30, what="alertmanager ready")
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"")[-500:]
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def am_alerts(url: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?filter=source%3D%22logiwatch%22", timeout=5) as resp:
        return {a["labels"]["alert_id"]: a for a in json.loads(resp.read())}


def severities(url: str, alert_id: str) -> list[str]:
    """The severities under which Alertmanager holds ``alert_id`` active (labels tell alerts apart)."""

    with urllib.request.urlopen(f"{url}/api/v2/alerts?filter=alert_id%3D%22{alert_id}%22", timeout=5) as resp:
        return sorted(a["labels"]["severity"] for a in json.loads(resp.read()))


def amtool(url: str, *args: str) -> str:
    done = subprocess.run(["amtool", f"--alertmanager.url={url}", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_open_alerts_reach_alertmanager_stay_firing_resolve_there_and_its_silences_apply(
    alertmanager: str, kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = settings_factory(
        kafka={"topics": {"alerts": topic, "liability": ltopic}, "alerts_group": f"g-{uuid4().hex}", "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        alerts={"api_port": 0, "api_token": TOKEN, "public_url": "http://console.test", "alertmanager_url": alertmanager, "alertmanager_resend_s": RESEND_S},
    )
    incident = stall(0, alert_id="inc-am", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, node_id="HUB-9", affected_waybills=("WB7",))
    with ServiceThread(settings, routes({})) as svc:
        produce(kafka_bootstrap, topic, [stall(1), stall(2), incident])
        got = wait_until(lambda: (a := am_alerts(alertmanager)) and len(a) == 3 and a, 60, what="alerts in Alertmanager")
        one = got["stall-1"]
        assert one["labels"]["alertname"] == "stall" and one["labels"]["waybill_id"] == "WB1" and one["labels"]["severity"] == "warning"
        assert one["annotations"]["summary"] == stall(1).summary
        assert one["generatorURL"] == "http://console.test/#/parcel/WB1"
        assert got["inc-am"]["generatorURL"] == "http://console.test/#/incident/inc-am"
        assert one["status"]["state"] == "active"
        listed = amtool(alertmanager, "alert", "query", "source=logiwatch", "-o", "json")
        assert {a["labels"]["alert_id"] for a in json.loads(listed)} == {"stall-1", "stall-2", "inc-am"}

        # re-posted before endsAt lapses: still active well past one TTL (4 s), endsAt moved on
        first_end = datetime.fromisoformat(one["endsAt"].replace("Z", "+00:00"))
        time.sleep(4 * RESEND_S + 2)
        later = am_alerts(alertmanager)
        assert later["stall-1"]["status"]["state"] == "active"
        assert datetime.fromisoformat(later["stall-1"]["endsAt"].replace("Z", "+00:00")) > first_end

        # a silence set in Alertmanager is honoured there
        amtool(alertmanager, "silence", "add", "alert_id=stall-2", "--comment=buyer called", "--author=cs", "--duration=1h")
        wait_until(lambda: am_alerts(alertmanager)["stall-2"]["status"]["state"] == "suppressed", 30, what="silenced in Alertmanager")
        assert am_alerts(alertmanager)["stall-2"]["status"]["silencedBy"]

        # resolving in logiwatch resolves it there, on the next round
        status, _ = call("POST", f"{svc.url}/api/alerts/stall-1/resolve", {})
        assert status == 200
        wait_until(lambda: "stall-1" not in am_alerts(alertmanager), 4 * RESEND_S + 5, what="resolved in Alertmanager")
        assert set(am_alerts(alertmanager)) == {"stall-2", "inc-am"}


def test_a_route_to_an_alertmanager_receiver_posts_what_it_matches_keeps_it_firing_and_resolves_it(
    alertmanager: str, kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = settings_factory(
        kafka={"topics": {"alerts": topic, "liability": ltopic}, "alerts_group": f"g-{uuid4().hex}", "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        alerts={"api_port": 0, "api_token": TOKEN, "public_url": "http://console.test"},
    )
    routing = parse_routes(
        {
            "receivers": [
                {"name": "ops-am", "kind": "alertmanager", "url": alertmanager, "allow_private_networks": True, "resend_s": RESEND_S, "retry_schedule_s": [0.2, 0.5, 1.0]}
            ],
            "routes": [{"receiver": "ops-am", "types": ["stall"]}],
        }
    )
    assert routing.receivers["ops-am"].url == alertmanager + "/api/v2/alerts"
    lost = stall(3, alert_id="lost-3", alert_type=AnomalyType.LIKELY_LOST)  # not routed to ops-am
    with ServiceThread(settings, routing) as svc:
        produce(kafka_bootstrap, topic, [stall(1), stall(2), lost])
        got = wait_until(lambda: (a := am_alerts(alertmanager)) and len(a) >= 2 and a, 30, what="routed alerts in Alertmanager")
        assert set(got) == {"stall-1", "stall-2"}
        one = got["stall-1"]
        assert one["labels"]["alertname"] == "stall" and one["labels"]["waybill_id"] == "WB1" and one["generatorURL"] == "http://console.test/#/parcel/WB1"
        listed = amtool(alertmanager, "alert", "query", "source=logiwatch", "-o", "json")
        assert {a["labels"]["alert_id"] for a in json.loads(listed)} == {"stall-1", "stall-2"}
        # the delivery is a notification like any other: on the parcel page, delivered
        status, page = call("GET", f"{svc.url}/api/parcels/WB1")
        assert status == 200 and [(d["receiver"], bool(d["delivered_ms"])) for d in page["deliveries"]] == [("ops-am", True)]

        # re-posted before endsAt (now + 4 x resend_s) lapses
        first_end = datetime.fromisoformat(one["endsAt"].replace("Z", "+00:00"))
        time.sleep(4 * RESEND_S + 2)
        later = am_alerts(alertmanager)
        assert later["stall-1"]["status"]["state"] == "active"
        assert datetime.fromisoformat(later["stall-1"]["endsAt"].replace("Z", "+00:00")) > first_end

        # an escalation ends the alert under its old severity (Alertmanager keys on labels)
        produce(kafka_bootstrap, topic, [stall(2, revision=1, severity=Severity.CRITICAL)])
        wait_until(lambda: "critical" in severities(alertmanager, "stall-2"), 30, what="escalated in Alertmanager")
        assert severities(alertmanager, "stall-2") == ["critical"]  # the warning ended by the same post, not lapsed

        amtool(alertmanager, "silence", "add", "alert_id=stall-1", "--comment=buyer called", "--author=cs", "--duration=1h")
        wait_until(lambda: am_alerts(alertmanager)["stall-1"]["status"]["state"] == "suppressed", 30, what="silenced in Alertmanager")

        # resolved in logiwatch: the resolved notification ends it there, well within one TTL
        status, _ = call("POST", f"{svc.url}/api/alerts/stall-1/resolve", {})
        assert status == 200
        wait_until(lambda: "stall-1" not in am_alerts(alertmanager), 3, what="resolved in Alertmanager")
        assert "lost-3" not in am_alerts(alertmanager)


def test_the_compose_alertmanager_config_is_valid_for_amtool() -> None:
    cfg = Path(__file__).parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
    done = subprocess.run(["amtool", "check-config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
