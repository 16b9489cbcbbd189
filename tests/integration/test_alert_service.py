"""The alert service end to end: real Tansu, real Redis, a real local HTTP receiver.

Timelines: alerts are produced to the alerts topic; the test waits (never
sleeps) until the receiver has seen what it should, then checks exact counts.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from kafka import KafkaConsumer

from logiwatch.alerts.store import AlertKeys
from logiwatch.commands.alerts import _redrive
from logiwatch.commands.liability import _report
from logiwatch.detectors.model import AnomalyType, Severity
from logiwatch.redisconn import connect, connect_sync
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import (
    HOUR,
    T0,
    TOKEN,
    HookReceiver,
    ServiceThread,
    produce,
    routes,
    service_settings,
    stall,
)


def call(method: str, url: str, body: Any = None, token: str | None = TOKEN, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def queues_empty(svc: ServiceThread) -> bool:
    _, data = call("GET", f"{svc.url}/api/receivers", token=None)
    return all(r["queued"] == 0 for r in data["receivers"])


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    """Every test here runs on one Redis and on a 3-master Redis Cluster."""

    return redis_url_both


def test_failing_receiver_gets_every_alert_exactly_once_after_it_recovers_with_valid_signatures(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    alerts = [stall(i) for i in range(25)]
    with HookReceiver() as hook:
        hook.fail_with = 500
        with ServiceThread(settings, routes({"cs": (hook.url, "generic")})) as svc:
            produce(kafka_bootstrap, topic, alerts)
            wait_until(lambda: len({h.webhook_id for h in hook.hits}) == 25, 60, what="every alert attempted while failing")
            hook.fail_with, hook.retry_after = 429, "1"
            wait_until(lambda: sum(1 for h in hook.hits if h.status == 429) >= 5, 30, what="throttled attempts")
            hook.fail_with = None  # the receiver recovers
            wait_until(lambda: len(hook.ok_counts()) == 25, 60, what="every alert delivered after recovery")
            wait_until(lambda: queues_empty(svc), 30, what="queue drained")
            counts = hook.ok_counts()
            assert set(counts.values()) == {1}, f"some alert delivered twice: {counts}"
            delivered = {h.json()["alert"]["alert_id"] for h in hook.ok_hits()}
            assert delivered == {a.alert_id for a in alerts}
            assert all(h.verified for h in hook.hits), "a signature failed independent verification"
            # the id is stable across retries: every attempt for an alert used the same webhook-id
            ids_per_alert: dict[str, set[str]] = {}
            for h in hook.hits:
                ids_per_alert.setdefault(h.json()["alert"]["alert_id"], set()).add(h.webhook_id)
            assert all(len(ids) == 1 for ids in ids_per_alert.values())
            assert svc.metric("logiwatch_alerts_retries_total", {"receiver": "cs"}) >= 25
            assert svc.metric("logiwatch_alerts_notifications_total", {"receiver": "cs", "outcome": "ok"}) == 25
            # redelivering the same records (a replay) notifies nobody again
            produce(kafka_bootstrap, topic, alerts[:5])
            wait_until(lambda: svc.consumed >= 30, 30, what="replayed records consumed")
            assert svc.metric("logiwatch_alerts_decisions_total", {"outcome": "duplicate"}) == 5
            assert len(hook.ok_counts()) == 25 and set(hook.ok_counts().values()) == {1}


def test_incident_with_many_parcels_yields_one_notification_per_receiver_and_inhibits_their_stalls(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    n = 150
    incident = stall(
        0,
        alert_id="inc-hub-7",
        alert_type=AnomalyType.HUB_INCIDENT,
        severity=Severity.CRITICAL,
        waybill_id=None,
        node_id="HUB-7",
        summary="HUB-7 stopped departing parcels",
        window_start=T0 - HOUR,
        window_end=T0,
        affected_waybills=tuple(f"WB{i}" for i in range(1, n + 1)),
    )
    parcels = [stall(i, incident_id="inc-hub-7", node_id="HUB-7") for i in range(1, n + 1)]
    unrelated = stall(999, node_id="HUB-2")
    with HookReceiver() as generic, HookReceiver() as am:
        rt = routes({"cs": (generic.url, "generic"), "am": (am.url, "alertmanager")}, group_wait_s=0.5)
        with ServiceThread(settings, rt) as svc:
            produce(kafka_bootstrap, topic, [*parcels[:50], incident, *parcels[50:], unrelated])
            wait_until(lambda: svc.consumed == n + 2, 60, what="all alerts consumed")
            wait_until(lambda: len(generic.ok_hits()) >= 2 and len(am.ok_hits()) >= 2, 30, what="notifications")
            wait_until(lambda: queues_empty(svc), 30, what="queues drained")
            for hook in (generic, am):
                assert len(hook.ok_hits()) == 2, [h.body[:120] for h in hook.ok_hits()]
            bodies = {h.json()["alert"]["alert_id"]: h.json() for h in generic.ok_hits()}
            assert set(bodies) == {"inc-hub-7", "stall-999"}
            assert bodies["inc-hub-7"]["incident"]["parcel_count"] == n
            am_alerts = [h.json()["alerts"][0]["labels"]["alertname"] for h in am.ok_hits()]
            assert sorted(am_alerts) == ["hub_incident", "stall"]
            _, listed = call("GET", f"{svc.url}/api/alerts?incident=inc-hub-7&limit=1000", token=None)
            assert listed["count"] == n and all(r["suppressed"] == "inhibited" for r in listed["alerts"])
            _, inc = call("GET", f"{svc.url}/api/incidents", token=None)
            assert inc["incidents"][0]["parcel_count"] == n


def test_stalls_arriving_while_their_hub_incident_is_open_are_linked_and_inhibited(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    # the parcel engines no longer know incidents (the hub stage scores them): the service links
    # a stall at a hub whose incident it holds open (detectors.hub_stage.link_incident)
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    incident = stall(
        0, alert_id="inc-hub-8", alert_type=AnomalyType.HUB_INCIDENT, severity=Severity.CRITICAL, waybill_id=None,
        node_id="HUB-8", window_start=T0 - HOUR, window_end=T0, affected_waybills=("WB1", "WB2", "WB3"),
    )
    parcels = [stall(i, node_id="HUB-8") for i in (1, 2, 3)]
    with HookReceiver() as generic:
        rt = routes({"cs": (generic.url, "generic")}, group_wait_s=0.5)
        with ServiceThread(settings, rt) as svc:
            produce(kafka_bootstrap, topic, [incident])
            wait_until(lambda: svc.consumed == 1, 60, what="the incident consumed")
            produce(kafka_bootstrap, topic, parcels)
            wait_until(lambda: svc.consumed == 4, 60, what="the stalls consumed")
            wait_until(lambda: queues_empty(svc), 30, what="queues drained")
            _, listed = call("GET", f"{svc.url}/api/alerts?incident=inc-hub-8&limit=100", token=None)
            assert listed["count"] == 3 and all(r["suppressed"] == "inhibited" for r in listed["alerts"])
            ids = {h.json()["alert"]["alert_id"] for h in generic.ok_hits()}
            assert ids == {"inc-hub-8"}


def test_stalls_stored_before_their_hub_incident_join_it_when_it_arrives(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    # the hub stage's incident can reach the service after the stalls it explains: those it
    # names, at its hub, join it then (Pipeline.link_earlier); a stall elsewhere stays alone
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    incident = stall(
        0, alert_id="inc-hub-9", alert_type=AnomalyType.HUB_INCIDENT, severity=Severity.CRITICAL, waybill_id=None,
        node_id="HUB-9", window_start=T0 - HOUR, window_end=T0, affected_waybills=("WB1", "WB2", "WB4"),
    )
    early = [stall(i, node_id="HUB-9") for i in (1, 2, 3)] + [stall(4, node_id="HUB-OTHER")]
    with HookReceiver() as generic:
        rt = routes({"cs": (generic.url, "generic")}, group_wait_s=0.5)
        with ServiceThread(settings, rt) as svc:
            produce(kafka_bootstrap, topic, early)
            wait_until(lambda: svc.consumed == 4, 60, what="the stalls consumed")
            wait_until(lambda: queues_empty(svc), 30, what="the stalls notified")
            produce(kafka_bootstrap, topic, [incident])
            wait_until(lambda: svc.consumed == 5, 60, what="the incident consumed")
            wait_until(lambda: queues_empty(svc), 30, what="queues drained")
            _, listed = call("GET", f"{svc.url}/api/alerts?incident=inc-hub-9&limit=100", token=None)
            _, alone = call("GET", f"{svc.url}/api/alerts?waybill=WB3&limit=10", token=None)
            _, elsewhere = call("GET", f"{svc.url}/api/alerts?waybill=WB4&limit=10", token=None)
            hits = {h.json()["alert"]["alert_id"] for h in generic.ok_hits()}
    linked = {r["alert"]["waybill_id"] for r in listed["alerts"]}
    assert linked == {"WB1", "WB2"}, linked  # WB3 is not named; WB4's stall is at another hub
    assert all(r["alert"]["incident_id"] == "inc-hub-9" for r in listed["alerts"])
    assert [r["alert"]["incident_id"] for r in alone["alerts"]] == [None]
    assert [r["alert"]["incident_id"] for r in elsewhere["alerts"]] == [None]
    # the stalls had been notified alone before the incident; the incident is notified once
    assert {a.alert_id for a in early} | {"inc-hub-9"} == hits


def read_topic(bootstrap: str, topic: str, want: int) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=1000)
    got: list[dict[str, Any]] = []
    try:
        def more() -> bool:
            for rec in consumer:
                got.append(json.loads(rec.value))
            return len(got) >= want

        wait_until(more, 60, what=f"{want} records on {topic}")
    finally:
        consumer.close()
    return got


def test_late_incident_reattributes_charge_with_reversal_and_new_entry_published_and_balanced(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    late = stall(1, alert_id="late-1", alert_type=AnomalyType.LATE_DISPATCH, order_amount=300.0, summary="not dispatched in time")
    lost = stall(2, alert_id="lost-2", alert_type=AnomalyType.LIKELY_LOST, order_amount=50.0)
    with ServiceThread(settings, routes({})) as svc:
        produce(kafka_bootstrap, topic, [late, lost])
        wait_until(lambda: call("GET", f"{svc.url}/api/liability/totals", token=None)[1]["entries"] == 2, 60, what="two charges")
        _, totals = call("GET", f"{svc.url}/api/liability/totals", token=None)
        assert totals["by_party_yuan"] == {"carrier": 50.0, "merchant": 90.0}
        incident = stall(0, alert_id="inc-late", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, affected_waybills=("WB1", "WB2"), detected_at=T0 + HOUR)
        produce(kafka_bootstrap, topic, [incident])
        wait_until(lambda: call("GET", f"{svc.url}/api/liability/totals", token=None)[1]["entries"] == 6, 60, what="re-attribution entries")
        _, totals = call("GET", f"{svc.url}/api/liability/totals", token=None)
        assert totals["by_party_yuan"] == {"carrier": 0.0, "merchant": 0.0, "platform": 140.0}
        assert totals["net_yuan"] == 140.0  # money moved, none created or lost
        _, parcel = call("GET", f"{svc.url}/api/parcels/WB1", token=None)
        kinds = [(e["kind"], e["party"], e["amount_fen"]) for e in parcel["liability"]]
        assert kinds == [("charge", "merchant", 9000), ("reversal", "merchant", -9000), ("charge", "platform", 9000)]
        assert {"late-1", "inc-late"} <= set(parcel["liability"][2]["evidence"])
        published = read_topic(kafka_bootstrap, ltopic, 6)
        assert len(published) == 6
        assert sum(e["amount_fen"] for e in published) == 14000
        assert [e["kind"] for e in published if e["waybill_id"] == "WB1"] == ["charge", "reversal", "charge"]
        # replaying every alert appends nothing
        produce(kafka_bootstrap, topic, [late, lost, incident])
        wait_until(lambda: svc.consumed >= 6, 30, what="replay consumed")
        assert call("GET", f"{svc.url}/api/liability/totals", token=None)[1]["entries"] == 6
        assert svc.metric("logiwatch_liability_amount_yuan", {"party": "platform", "rule": "platform-hub-incident"}) == 140.0
    # the report command prints the same figures
    assert asyncio.run(_report(settings, None, None, True)) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["by_party_yuan"] == {"carrier": 0.0, "merchant": 0.0, "platform": 140.0} and report["entries"] == 6
    assert asyncio.run(_report(settings, T0 + HOUR + 1, None, True)) == 0  # after the incident: nothing
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["entries"] == 0


def test_api_rejects_bad_tokens_and_bad_input_with_json_errors_and_records_feedback(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any, redis_url: str
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    with ServiceThread(settings, routes({})) as svc:
        produce(kafka_bootstrap, topic, [stall(1), stall(2)])
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(topic, key=b"junk", value=b"not json at all")
        producer.flush(30)
        producer.close()
        wait_until(lambda: svc.consumed == 3, 60, what="alerts consumed")
        assert svc.metric("logiwatch_alerts_bad_records_total", {"reason": "bad_json"}) == 1
        base = svc.url
        assert call("POST", f"{base}/api/alerts/stall-1/ack", token=None)[0] == 401
        status, err = call("POST", f"{base}/api/alerts/stall-1/ack", token="wrong")
        assert status == 401 and err == {"error": "invalid bearer token"}
        for method, path, raw, code in [
            ("POST", "/api/alerts/stall-1/ack", b"{not json", 400),
            ("POST", "/api/alerts/stall-1/ack", b"[1,2]", 400),
            ("POST", "/api/alerts/stall-1/ack", b'{"by": 7}', 400),
            ("POST", "/api/alerts/nope/ack", b"{}", 404),
            ("GET", "/api/alerts?state=weird", None, 400),
            ("GET", "/api/alerts?limit=abc", None, 400),
            ("GET", "/api/liability/totals?since=yesterday", None, 400),
            ("POST", "/api/silences", b'{"matchers": ["carrier=C1"], "ends_at": "2030-01-01T00:00:00Z"}', 400),
            ("POST", "/api/silences", b'{"matchers": ["carrier_id=C1"], "ends_at": "2030-01-01T00:00:00"}', 400),
            ("POST", "/api/alerts/stall-1/false-alarm", b"x" * 20000, 413),
            ("GET", "/api/nothing-here", None, 404),
        ]:
            status, body = call(method, base + path, raw=raw)
            assert status == code, (path, raw, status, body)
            assert isinstance(body.get("error"), str) and "Traceback" not in body["error"] and "\n" not in body["error"]
        status, acked = call("POST", f"{base}/api/alerts/stall-1/ack", {"by": "alice"})
        assert status == 200 and acked["state"] == "acknowledged" and acked["acknowledged_by"] == "alice"
        status, fb = call("POST", f"{base}/api/alerts/stall-2/false-alarm", {"note": "scanner outage"})
        assert status == 200 and fb["recorded"] is True
        assert call("POST", f"{base}/api/alerts/stall-2/false-alarm", {})[1]["recorded"] is False  # counted once
        r = connect_sync(redis_url)
        try:
            [bad] = r.hvals(AlertKeys(settings.redis.key_prefix).key("bad"))  # kept, not lost
            assert b"bad_json" in bad and b"not json at all" in bad
            assert r.sismember(fb["suppression_key"], "WB2")
            assert fb["suppression_key"] == f"{settings.redis.key_prefix}suppress:stall"
        finally:
            r.close()
        assert svc.metric("logiwatch_alerts_false_alarms_total", {"type": "stall"}) == 1
        status, resolved = call("POST", f"{base}/api/alerts/stall-1/resolve", {})
        assert status == 200 and resolved["state"] == "resolved"
        status, sil = call("POST", f"{base}/api/silences", {"matchers": ["carrier_id=C1"], "ends_at": "2030-01-01T00:00:00Z"})
        assert status == 201 and sil["matchers"] == ["carrier_id=C1"]
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'logiwatch_alerts_open{severity="warning",type="stall"} 1.0' in text
        assert "logiwatch_alerts_received_total" in text


def test_rejected_notification_is_dead_lettered_then_redriven_with_the_same_webhook_id(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    with HookReceiver() as hook:
        hook.fail_with = 400  # a 4xx other than 408/410/429: give up at once and record
        with ServiceThread(settings, routes({"cs": (hook.url, "generic")})) as svc:
            produce(kafka_bootstrap, topic, [stall(1), stall(2)])
            wait_until(lambda: call("GET", f"{svc.url}/api/receivers", token=None)[1]["receivers"][0]["dead_letters"] == 2, 60, what="dead letters")
            assert len(hook.hits) == 2 and svc.metric("logiwatch_alerts_dead_letters_total", {"receiver": "cs"}) == 2
            first_ids = {h.webhook_id for h in hook.hits}
            hook.fail_with = None
            assert asyncio.run(_redrive(settings, ["cs"])) == 0
            wait_until(lambda: len(hook.ok_hits()) == 2, 30, what="redriven deliveries")
            assert {h.webhook_id for h in hook.ok_hits()} == first_ids
            # 410 Gone disables the endpoint until it is redriven
            hook.fail_with = 410
            produce(kafka_bootstrap, topic, [stall(3), stall(4)])
            wait_until(lambda: call("GET", f"{svc.url}/api/receivers", token=None)[1]["receivers"][0]["disabled"], 60, what="disabled")
            gone = sum(1 for h in hook.hits if h.status == 410)
            assert 1 <= gone <= 2  # attempts already in flight may finish
            produce(kafka_bootstrap, topic, [stall(5)])
            wait_until(lambda: svc.consumed == 5, 30, what="alert for the disabled receiver consumed")
            wait_until(lambda: call("GET", f"{svc.url}/api/receivers", token=None)[1]["receivers"][0]["queued"] >= 1, 30, what="queued")
            assert sum(1 for h in hook.hits if h.status == 410) == gone  # nothing more is sent to a gone endpoint
            assert not any(h.json()["alert"]["alert_id"] == "stall-5" for h in hook.hits)


def test_unacknowledged_alert_escalates_once_per_step_and_acknowledged_one_does_not(redis_url: str, redis_prefix: str) -> None:

    from logiwatch.alerts.model import AlertState
    from logiwatch.alerts.pipeline import Pipeline
    from logiwatch.alerts.store import AlertStore

    async def scenario() -> list[list[str]]:
        client = connect(redis_url)
        try:
            pipe = Pipeline(AlertStore(client, redis_prefix), routes({"cs": ("http://127.0.0.1:9/h", "generic")}, escalate_after_s=60))
            now = 1_800_000_000_000
            await pipe.process(stall(1, severity=Severity.INFO), now)
            await pipe.process(stall(2, severity=Severity.INFO), now)
            await pipe.set_state("stall-2", AlertState.ACKNOWLEDGED, "alice", now + 1)
            steps = []
            for t in (now + 59_000, now + 60_000, now + 61_000, now + 120_000, now + 500_000):
                steps.append([n.kind.key + ":" + n.alert_id for n in await pipe.escalate_due(t)])
            return steps
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [[], ["escalated-warning:stall-1"], [], ["escalated-critical:stall-1"], []]


def test_demo_runner_prints_verified_notifications_and_liability_summary(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> None:
    from logiwatch.demo import run_alerts_demo

    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}")
    lines: list[str] = []
    late = stall(1, alert_id="late-1", alert_type=AnomalyType.LATE_DISPATCH, order_amount=100.0)
    produce(kafka_bootstrap, topic, [late, stall(2)])

    async def go() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_alerts_demo(settings, stop, lines.append))
        while sum("webhook alert.firing" in line for line in lines) < 2:
            await asyncio.sleep(0.05)  # polling the printed lines, bounded by the timeout below
        stop.set()
        return await task

    summary = asyncio.run(asyncio.wait_for(go(), 90))
    assert summary["notifications"] == 2 and summary["bad_signatures"] == 0
    assert summary["by_party_yuan"] == {"merchant": 30.0}
    assert any(line.startswith("liability (yuan): merchant 30.00") for line in lines)
