"""Webhook signing, payload formats, response classification, retry schedule, SSRF guard, redaction."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from pathlib import Path

import jsonschema
import pytest

from logiwatch.alerts.model import (
    FIRING,
    RESOLVED,
    AlertRecord,
    AlertState,
    NotificationEvent,
    PayloadFormat,
    Receiver,
    notification_id,
)
from logiwatch.alerts.webhooks import (
    Rendering,
    blocked_reason,
    classify,
    next_delay_s,
    parse_retry_after,
    redact,
    render,
    sign,
    signed_headers,
    verify,
)
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "webhook-payload.schema.json").read_text())
T0 = 1_790_000_000_000


def record(**over: object) -> AlertRecord:
    base: dict[str, object] = {
        "alert_id": "a1",
        "alert_type": AnomalyType.STALL,
        "status": AlertStatus.FIRING,
        "severity": Severity.WARNING,
        "detected_at": T0,
        "summary": "parcel WB1 stalled at HUB-1 for 30 h",
        "waybill_id": "WB1",
        "carrier_id": "C1",
        "order_amount": 99.5,
        "evidence": {"dwell_s": 108000, "p99_dwell_s": 40000},
    }
    base.update(over)
    return AlertRecord(alert=Alert(**base), state=AlertState.OPEN, first_seen_ms=T0, updated_ms=T0)  # type: ignore[arg-type]


def incident_record() -> AlertRecord:
    return record(
        alert_id="inc1",
        alert_type=AnomalyType.HUB_INCIDENT,
        waybill_id=None,
        node_id="HUB-7",
        window_start=T0 - 3_600_000,
        window_end=T0,
        affected_waybills=tuple(f"WB{i}" for i in range(500)),
        summary="HUB-7 stopped departing parcels",
    )


def independent_signature(secret: str, msg_id: str, ts: str, body: bytes) -> str:
    # Written from the Standard Webhooks spec, not from our code: whsec_ secrets are base64.
    key = base64.b64decode(secret.split("_", 1)[1]) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@pytest.mark.parametrize("secret", ["plain-secret-0123456789-abcdef", "whsec_" + base64.b64encode(b"k" * 32).decode()])
def test_signature_matches_an_independent_standard_webhooks_implementation(secret: str) -> None:
    body = b'{"hello":"world"}'
    headers = signed_headers(secret, "msg_1", body, now_s=1_700_000_000)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == independent_signature(secret, "msg_1", "1700000000", body)
    assert verify(secret, headers, body, now_s=1_700_000_100)


def test_verification_rejects_tampered_body_wrong_secret_and_stale_timestamp() -> None:
    secret = "plain-secret-0123456789-abcdef"
    headers = signed_headers(secret, "msg_1", b"{}", now_s=1_700_000_000)
    assert not verify(secret, headers, b"{ }", now_s=1_700_000_000)
    assert not verify(secret + "x", headers, b"{}", now_s=1_700_000_000)
    assert not verify(secret, headers, b"{}", now_s=1_700_000_000 + 301)
    assert not verify(secret, {}, b"{}")


def test_signature_changes_with_timestamp_but_webhook_id_stays_stable() -> None:
    nid = notification_id("cs", "a1", FIRING)
    assert nid == notification_id("cs", "a1", FIRING) != notification_id("cs2", "a1", FIRING)
    assert sign("s" * 24, nid, 1, b"x") != sign("s" * 24, nid, 2, b"x")


def test_generic_payload_validates_against_the_published_schema() -> None:
    for rec, kind in ((record(), FIRING), (record(status=AlertStatus.RESOLVED), RESOLVED), (incident_record(), FIRING)):
        body = render(PayloadFormat.GENERIC, rec, Rendering(notification_id("cs", "a", kind), "cs", kind.event, "http://board", 500, ("WB1",)))
        payload = json.loads(body)
        jsonschema.validate(payload, SCHEMA)
        assert payload["event"] == f"alert.{kind.key}"


def test_schema_rejects_a_payload_missing_the_alert() -> None:
    body = render(PayloadFormat.GENERIC, record(), Rendering("msg_" + "0" * 24, "cs", NotificationEvent.FIRING, "http://b"))
    payload = json.loads(body)
    del payload["alert"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, SCHEMA)


def test_incident_payload_carries_count_and_link_not_every_parcel() -> None:
    body = render(PayloadFormat.GENERIC, incident_record(), Rendering("msg_" + "1" * 24, "cs", NotificationEvent.FIRING, "http://b", 500, ()))
    payload = json.loads(body)
    assert payload["incident"]["parcel_count"] == 500
    assert len(payload["incident"]["sample_waybills"]) == 20
    assert payload["incident"]["parcels_url"] == "http://b/api/alerts?incident=inc1"
    assert len(body) < 20_000


def test_alertmanager_payload_has_the_v4_shape() -> None:
    p = json.loads(render(PayloadFormat.ALERTMANAGER, record(), Rendering("m", "am", NotificationEvent.FIRING, "http://b")))
    assert p["version"] == "4"
    assert {"receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "groupKey", "truncatedAlerts"} <= set(p)
    a = p["alerts"][0]
    assert {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"} <= set(a)
    assert a["labels"]["alertname"] == "stall" and a["endsAt"] == "0001-01-01T00:00:00Z"
    r = json.loads(render(PayloadFormat.ALERTMANAGER, record(status=AlertStatus.RESOLVED), Rendering("m", "am", NotificationEvent.RESOLVED, "http://b")))
    assert r["status"] == "resolved" and r["alerts"][0]["endsAt"].endswith("Z") and not r["alerts"][0]["endsAt"].startswith("0001")


def test_chat_robot_payload_is_markdown() -> None:
    p = json.loads(render(PayloadFormat.DINGTALK, incident_record(), Rendering("m", "robot", NotificationEvent.FIRING, "http://b", 500)))
    assert p["msgtype"] == "markdown"
    assert "parcels affected**: 500" in p["markdown"]["text"]


@pytest.mark.parametrize(
    "status, action",
    [(200, "ok"), (204, "ok"), (408, "retry"), (429, "retry"), (500, "retry"), (503, "retry"), (410, "disable"), (400, "give_up"), (401, "give_up"), (404, "give_up"), (301, "give_up")],
)
def test_response_classification(status: int, action: str) -> None:
    assert classify(status).action == action


def test_retry_after_is_honoured_in_seconds_and_http_date() -> None:
    assert classify(429, "7").retry_after_s == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412470) == pytest.approx(10)
    assert parse_retry_after("soon") is None
    assert next_delay_s(1, (1.0, 2.0), retry_after_s=30, rng=random.Random(1)) == 30


def test_backoff_follows_schedule_with_jitter_then_dead_letters() -> None:
    schedule = (5.0, 300.0, 1800.0)
    rng = random.Random(7)
    for attempt, base in enumerate(schedule, 1):
        delays = [next_delay_s(attempt, schedule, rng=rng) for _ in range(200)]
        assert all(d is not None and 0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(set(delays)) > 100  # jittered, not lock-step
    assert next_delay_s(len(schedule) + 1, schedule) is None


@pytest.mark.parametrize(
    "address, blocked",
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00:ec2::254", True),
        ("::ffff:127.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)
def test_ssrf_guard_blocks_loopback_private_link_local_and_metadata(address: str, blocked: bool) -> None:
    assert (blocked_reason(address) is not None) is blocked


def test_errors_are_redacted() -> None:
    r = Receiver(name="robot", url="https://oapi.example.com/robot/send?access_token=TOPSECRET", secret="whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")
    text = redact(f"failed POST {r.url} with key {r.secret} / c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", r)
    assert "TOPSECRET" not in text and "c2VjcmV0" not in text
    assert "https://oapi.example.com/robot/send" in text
