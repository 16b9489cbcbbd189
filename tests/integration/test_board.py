"""The CS console used as an agent would, in a real headless Chromium (Debian's, driven
by Playwright through its executable path) against the real alert service on the real
broker and Redis, fed with what the detectors found in simulated traffic.

The agent filters the queue, searches a waybill, opens the parcel with the keyboard,
marks a charged alert a false alarm and sees the reversal and the zero balance; the
ledger and ``logiwatch liability report`` agree. Bulk acknowledge, the incidents and
liability pages, the accessibility basics (a name on every control, keyboard focus,
text contrast) and "nothing is loaded from outside the service" are checked too.
Screenshots of each page go to the test's tmp dir, and to ``docs/images/`` when
``LOGIWATCH_SCREENSHOTS`` names that folder (``make screenshots``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import pytest
import redis.asyncio as aioredis
from playwright.sync_api import Page, expect, sync_playwright

from logiwatch.commands.liability import _report
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.hub_stage import HubStage
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.detectors.state import ParcelState
from logiwatch.sim import traffic as simulator
from logiwatch.streams.state import SnapshotStore
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import (
    TOKEN,
    HookReceiver,
    ServiceThread,
    produce,
    routes,
    service_settings,
)

ENSURE = Path(__file__).parents[2] / "scripts" / "ensure-chromium.sh"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found:
        return found
    done = subprocess.run(["sh", str(ENSURE)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"cannot install chromium: {done.stderr.strip()[-300:]}"
    return done.stdout.strip().splitlines()[-1]


def simulated() -> tuple[list[Alert], dict[str, bytes]]:
    """What the detectors fire on simulated traffic (resolutions held back so the queue has
    work) and each parcel's last state while in flight, as a worker checkpoints it (the
    engine archives every parcel by the end of the run); the engine is fed as the backtest
    feeds one partition (ticks interleaved, 4,096 at a time)."""

    events, _ = simulator.generate("default", seed=3, parcels=1500)
    records = list(interleave_ticks(events, 60_000))
    config = EngineConfig()
    engine = Engine(config)
    stage = HubStage(1, config.min_count, config.knobs.get("hub_incident"))  # hub incidents
    alerts: list[Alert] = []
    last_state: dict[str, bytes] = {}  # each parcel's state at the last batch it was still in flight
    for i in range(0, len(records), 4096):
        alerts += engine.process(records[i : i + 4096])
        for summary in engine.take_hub_summaries():
            alerts += stage.offer(summary)
        last_state.update((wb, bytes(blob)) for wb, blob in engine.parcel_blobs().items())
    return [a for a in alerts if a.status == AlertStatus.FIRING], last_state


async def checkpoint(settings: Any, states: dict[str, bytes]) -> None:
    """Write the parcel states where the worker would (its SnapshotStore, Kafka's partition)."""

    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        topics, store = settings.kafka.topics, SnapshotStore(client, settings.redis.key_prefix)
        by_partition: dict[int, dict[str, bytes]] = {}
        for wb, blob in states.items():
            by_partition.setdefault(partition_for(wb, topics.events_partitions), {})[wb] = blob
        for partition, upserts in by_partition.items():
            assert await store.save(topics.events, partition, upserts=upserts, deletes=[], models=None, offset=1)
    finally:
        await client.aclose()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def shoot(page: Page, tmp: Path, name: str) -> None:
    page.screenshot(path=str(tmp / f"{name}.png"), full_page=True)
    out = os.environ.get("LOGIWATCH_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"console-{name}.png"), full_page=False)


_ACCESSIBILITY = """() => {
  const problems = [];
  for (const c of document.querySelectorAll('input, select, button, a[href]')) {
    if (c.closest('[hidden]') || c.offsetParent === null) continue;
    const name = (c.labels && c.labels.length ? c.labels[0].textContent : '') || c.getAttribute('aria-label') || c.textContent;
    if (!name || !name.trim()) problems.push('no accessible name: ' + c.outerHTML.slice(0, 80));
    if (c.tabIndex < 0) problems.push('not keyboard reachable: ' + c.outerHTML.slice(0, 80));
  }
  const lum = (rgb) => { const v = rgb.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map(x => x / 255)
    .map(x => x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4); return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const bg = (e) => { for (; e; e = e.parentElement) { const b = getComputedStyle(e).backgroundColor;
    if (b && !b.startsWith('rgba(0, 0, 0, 0)') && b !== 'transparent') return b; } return 'rgb(255, 255, 255)'; };
  for (const e of document.querySelectorAll('td, th, label, a, p, h1, h2, h3, span, caption')) {
    if (e.closest('[hidden]') || e.offsetParent === null || !e.textContent.trim()) continue;
    const a = lum(getComputedStyle(e).color), b = lum(bg(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ': ' + e.outerHTML.slice(0, 80));
  }
  return problems;
}"""


def test_an_agent_filters_opens_a_parcel_marks_a_false_alarm_and_the_ledger_reverses_it(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts, states = simulated()
    charged = next(a for a in alerts if a.alert_type == AnomalyType.LIKELY_LOST)
    wb = charged.waybill_id
    assert wb is not None and wb in states
    route = msgspec.msgpack.decode(states[wb], type=ParcelState).route
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's loop owns this thread
        pool.submit(asyncio.run, checkpoint(settings, {wb: states[wb]})).result()  # the charged parcel is in flight
    with HookReceiver() as hook, ServiceThread(settings, routes({"cs": (hook.url, "generic")})) as svc:
        produce(kafka_bootstrap, topic, alerts)
        wait_until(lambda: svc.consumed == len(alerts), 90, what="simulated alerts consumed")
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(svc.url) else outside.append(r.url))
        page.goto(f"{svc.url}/")
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        page.fill("#agent", "alice")
        page.dispatch_event("#agent", "change")
        expect(page.locator("body")).to_have_attribute("data-loaded", "true")
        rows = page.locator("#queue tbody tr")
        expect(rows).to_have_count(50)  # the first page of the queue
        total = int(page.inner_text("#queue-total"))
        assert total == len({a.alert_id for a in alerts if a.alert_type != AnomalyType.HUB_INCIDENT})
        # severity order: no warning row above a critical one on the first page
        severities = page.locator("#queue tbody tr td:nth-child(2)").all_inner_texts()
        rank = {"info": 0, "warning": 1, "critical": 2}
        assert [rank[s] for s in severities] == sorted((rank[s] for s in severities), reverse=True)
        shoot(page, tmp_path, "queue")
        assert page.evaluate(_ACCESSIBILITY) == []

        # live updates by server-sent events: nothing is re-read while nothing changes, a new
        # alert arrives without a reload, and the agent keeps the focused row and the selection
        expect(page.locator("body")).to_have_attribute("data-live", "true")
        page.locator("#queue-title").click()
        for key in ("j", "j", "x"):
            page.keyboard.press(key)
        expect(page.locator("#selected-count")).to_have_text("1")
        focused = page.locator("#queue tbody tr.focused").get_attribute("data-alert-id")
        reads: list[str] = []
        page.on("request", lambda r: reads.append(r.url) if "/api/queue?" in r.url else None)
        page.wait_for_timeout(6000)  # longer than the 5 s the console used to poll at
        seen = int(page.get_attribute("body", "data-live-events") or 0)
        assert len(reads) <= seen, f"{len(reads)} queue reads after {seen} change events: the console polled"
        other = next(a for a in alerts if a.alert_type not in (AnomalyType.LIKELY_LOST, AnomalyType.HUB_INCIDENT))
        live = msgspec.structs.replace(other, alert_id="live-update-1", waybill_id="WB-LIVE-1", severity=Severity.CRITICAL)
        produce(kafka_bootstrap, topic, [live])
        expect(page.locator("#queue-total")).to_have_text(str(total + 1), timeout=15_000)
        assert int(page.get_attribute("body", "data-live-events") or 0) > seen
        expect(page.locator("#selected-count")).to_have_text("1")
        expect(page.locator("#queue tbody tr.focused")).to_have_attribute("data-alert-id", focused or "")
        page.keyboard.press("x")  # unselect: the bulk step below makes its own selection
        expect(page.locator("#selected-count")).to_have_text("0")

        # filter by type: every row is that type, the count chip agrees
        page.select_option("#f-type", "likely_lost")
        n_lost = len({a.alert_id for a in alerts if a.alert_type == AnomalyType.LIKELY_LOST})
        expect(page.locator("#queue-total")).to_have_text(str(n_lost))
        assert set(page.locator("#queue tbody tr td:nth-child(3)").all_inner_texts()) == {"likely_lost"}
        expect(page.locator('#counts button[data-value="likely_lost"]')).to_have_text(f"likely_lost: {n_lost}")

        # search the waybill, then open it with the keyboard (j/k focus, o opens)
        page.fill("#f-q", wb)
        page.press("#f-q", "Enter")
        expect(page.locator("#queue-total")).to_have_text("1")
        page.locator("#f-q").blur()
        page.keyboard.press("o")
        expect(page.locator("#parcel-wb")).to_have_text(wb)
        timeline = page.locator("#parcel-timeline tbody")
        expect(timeline).to_contain_text("likely_lost")
        expect(timeline).to_contain_text("silent for")  # the evidence in words
        # every scan, from the worker's checkpointed state: time, node, region, detail
        scans = page.locator("#parcel-scans tbody tr")
        expect(scans).to_have_count(len(route))
        first_t, _code, first_node, first_region = route[0]
        assert scans.first.locator("td").all_inner_texts()[:3] == [
            datetime.fromtimestamp(first_t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ"), first_node, first_region
        ]
        expect(page.locator("#parcel-scans-note")).to_contain_text(f"{len(route)} scan(s)")
        ledger = page.locator("#parcel-ledger tbody tr")
        expect(ledger).to_have_count(1)
        charge = float(ledger.first.locator("td.amount").inner_text())
        assert charge > 0
        expect(page.locator("#parcel-deliveries tbody")).to_contain_text("delivered")
        expect(page.locator("#parcel-deliveries tbody tr").first.locator("td").nth(1)).to_have_text("firing")  # the event, in words
        expect(timeline).to_contain_text("firing to cs: delivered")
        shoot(page, tmp_path, "parcel")

        # mark the false alarm with a reason: a reversal, balance back to zero
        page.click(f'#parcel-alerts tr[data-alert-id="{charged.alert_id}"] button[data-action="false-alarm"]')
        page.fill("#fa-reason", "buyer confirms the parcel arrived")
        page.click("#fa-submit")
        expect(ledger).to_have_count(2)
        expect(ledger.nth(1).locator("td").nth(1)).to_have_text("reversal")
        assert float(ledger.nth(1).locator("td.amount").inner_text()) == -charge
        expect(ledger.nth(1).locator("td.balance")).to_have_text("0.00")
        expect(page.locator("#parcel-alerts tbody")).to_contain_text("(false alarm)")
        # marking again changes nothing (idempotent), through the API the button calls
        again = page.evaluate(
            """async ([id, token]) => (await (await fetch(`/api/alerts/${id}/false-alarm`, {method: "POST",
               headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"}, body: "{}"})).json())""",
            [charged.alert_id, TOKEN],
        )
        assert again["recorded"] is False and again["reversals"] == []

        # a parcel no longer in the worker's state says so
        gone = next(a.waybill_id for a in alerts if a.waybill_id and a.waybill_id != wb)
        page.goto(f"{svc.url}/#/parcel/{gone}")
        expect(page.locator("#parcel-scans-note")).to_contain_text("not in the worker's state")
        expect(page.locator("#parcel-scans")).to_be_hidden()

        # the liability report (the CLI) shows the reversal and the totals balance
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's loop owns this thread
            assert pool.submit(asyncio.run, _report(settings, None, None, True)).result() == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        page.goto(f"{svc.url}/#/liability")
        expect(page.locator("#l-entries")).to_have_text(str(report["entries"]))
        assert float(page.inner_text("#l-net")) == pytest.approx(report["net_yuan"])
        carrier = page.locator('#l-party tr[data-name="carrier"] td')
        assert float(carrier.nth(3).inner_text()) == -charge  # reversed column
        assert float(carrier.nth(1).inner_text()) + float(carrier.nth(2).inner_text()) + float(carrier.nth(3).inner_text()) == pytest.approx(
            float(carrier.nth(4).inner_text())
        )
        assert report["by_party_yuan"]["carrier"] == pytest.approx(float(carrier.nth(4).inner_text()))
        expect(page.locator("#feedback")).to_contain_text("likely_lost 1")
        expect(page.locator("#l-chart-party")).to_have_js_property("complete", True)
        assert page.evaluate("document.getElementById('l-chart-party').naturalWidth") > 0
        shoot(page, tmp_path, "liability")

        # bulk acknowledge two alerts from the queue with the keyboard (x selects, a acknowledges)
        page.goto(f"{svc.url}/#/queue")
        page.click("#f-clear")
        expect(rows).to_have_count(50)
        first_two = [rows.nth(i).get_attribute("data-alert-id") for i in (0, 1)]
        page.locator("#queue-title").click()
        page.keyboard.press("x")
        page.keyboard.press("j")
        # the queue reload after the second selection is answered late, after the bulk
        # acknowledge has been shown (as a busy service may): the states it read before the
        # acknowledge must not be painted over the newer ones
        held: list[tuple[Any, Any]] = []

        def queue_read(url: str) -> bool:
            return "/api/queue?" in url

        def hold_first(r: Any) -> None:
            if held:
                r.continue_()
            else:
                held.append((r, r.fetch()))  # read from the service now, handed to the page later

        page.route(queue_read, hold_first)
        page.keyboard.press("x")
        expect(page.locator("#selected-count")).to_have_text("2")
        for _ in range(200):
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the selection did not reload the queue"
        page.keyboard.press("a")
        state_cells = [page.locator(f'#queue tr[data-alert-id="{aid}"] td.state') for aid in first_two]
        for cell in state_cells:
            expect(cell).to_have_text("acknowledged")
        late, answer = held[0]
        with page.expect_response(lambda r: r.request == late.request):
            late.fulfill(response=answer)
        page.unroute(queue_read, hold_first)
        page.wait_for_timeout(300)  # the page has the late answer: time to (not) paint it
        assert [c.inner_text() for c in state_cells] == ["acknowledged", "acknowledged"]

        # incidents: the list, one incident with its chart and parcels
        page.goto(f"{svc.url}/#/incidents")
        inc_rows = page.locator("#incidents tbody tr")
        expect(inc_rows.first).to_be_visible()
        inc_rows.first.locator("a").click()
        expect(page.locator("#incident-detail")).to_be_visible()
        expect(page.locator("#incident-parcels li").first).to_be_visible()
        expect(page.locator("#incident-chart")).to_have_js_property("complete", True)
        assert page.evaluate("document.getElementById('incident-chart').naturalWidth") > 0
        shoot(page, tmp_path, "incidents")
        assert page.evaluate(_ACCESSIBILITY) == []
        assert outside == [], f"the console loaded something from outside the service: {outside[:3]}"
