"""The CS board in a real headless Chromium: it lists open alerts and incidents, and
acknowledging through the call its buttons make changes what it shows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from logiwatch.detectors.model import AnomalyType
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import (
    TOKEN,
    ServiceThread,
    produce,
    routes,
    service_settings,
    stall,
)

ENSURE = Path(__file__).parents[2] / "scripts" / "ensure-chromium.sh"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found:
        return found
    done = subprocess.run(["sh", str(ENSURE)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"cannot install chromium: {done.stderr.strip()[-300:]}"
    return done.stdout.strip().splitlines()[-1]


def dump_dom(browser: str, url: str) -> str:
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=8000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-500:]
    return done.stdout


def row_state(dom: str, alert_id: str) -> str | None:
    m = re.search(rf'<tr data-alert-id="{re.escape(alert_id)}" class="(\w+)">', dom)
    return m.group(1) if m else None


def test_board_lists_open_alerts_and_incidents_and_acknowledge_updates_it(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    browser = chromium()
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    incident = stall(0, alert_id="inc-board", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, node_id="HUB-9", affected_waybills=("WB7", "WB8"))
    with ServiceThread(settings, routes({})) as svc:
        produce(kafka_bootstrap, topic, [stall(1), stall(2, summary="<b>not html</b>"), incident])
        wait_until(lambda: svc.consumed == 3, 60, what="alerts consumed")
        dom = dump_dom(browser, f"{svc.url}/")
        assert 'data-loaded="true"' in dom, dom[:2000]
        assert row_state(dom, "stall-1") == "open" and row_state(dom, "stall-2") == "open"
        assert row_state(dom, "inc-board") == "open"
        assert "HUB-9" in dom and '<span id="alert-count">2</span>' in dom and '<span id="incident-count">1</span>' in dom
        assert "&lt;b&gt;not html&lt;/b&gt;" in dom  # alert text is shown as text, never as markup
        # the board's Acknowledge button makes exactly this call
        req = urllib.request.Request(
            f"{svc.url}/api/alerts/stall-1/ack",
            data=json.dumps({"by": "board"}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        dom = dump_dom(browser, f"{svc.url}/")
        assert row_state(dom, "stall-1") == "acknowledged" and row_state(dom, "stall-2") == "open"
        board_js = (Path(__file__).parents[2] / "alerts" / "static" / "board.html").read_text()
        assert "/api/alerts/${encodeURIComponent(alertId)}/${action}" in board_js and '"Bearer "' in board_js
