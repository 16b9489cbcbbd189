"""The pure pipeline decision: dedup, lifecycle, grouping, inhibition, silences, routing."""

from __future__ import annotations

import asyncio

import msgspec

from logiwatch.alerts.model import (
    FIRING,
    RESOLVED,
    AlertState,
    NotificationEvent,
    NotificationKind,
    Receiver,
    Route,
    Silence,
)
from logiwatch.alerts.pipeline import decide
from logiwatch.alerts.routing import RoutingConfig
from logiwatch.alerts.webhooks import post
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity

TO_CRITICAL = NotificationKind(NotificationEvent.ESCALATED, severity=Severity.CRITICAL)

T0 = 1_790_000_000_000
SECRET = "s" * 32
ROUTING = RoutingConfig(
    receivers={n: Receiver(name=n, url=f"https://{n}.example.com/h", secret=SECRET) for n in ("cs", "am")},
    routes=(Route(receiver="cs"), Route(receiver="am", severities=("critical",))),
)


def alert(**over: object) -> Alert:
    base: dict[str, object] = {
        "alert_id": "a1",
        "alert_type": AnomalyType.STALL,
        "status": AlertStatus.FIRING,
        "severity": Severity.WARNING,
        "detected_at": T0,
        "summary": "stalled",
        "waybill_id": "WB1",
        "carrier_id": "C1",
    }
    base.update(over)
    return Alert(**base)  # type: ignore[arg-type]


def test_new_firing_alert_opens_and_notifies_each_matching_receiver() -> None:
    d = decide(alert(), None, ROUTING, T0)
    assert d.outcome == "new" and d.record is not None and d.record.state == AlertState.OPEN
    assert d.notify == [("cs", FIRING)]


def test_redelivered_alert_is_a_duplicate_and_notifies_nobody() -> None:
    first = decide(alert(), None, ROUTING, T0).record
    again = decide(alert(), first, ROUTING, T0 + 5)
    assert again.outcome == "duplicate" and again.record is None and again.notify == []


def test_older_revision_after_newer_is_ignored() -> None:
    rec = decide(alert(revision=3), None, ROUTING, T0).record
    assert decide(alert(revision=2), rec, ROUTING, T0).outcome == "duplicate"


def test_revision_update_without_severity_change_says_nothing_new() -> None:
    rec = decide(alert(), None, ROUTING, T0).record
    d = decide(alert(revision=1, summary="still stalled"), rec, ROUTING, T0 + 1)
    assert d.outcome == "update" and d.notify == [] and d.record is not None and d.record.alert.summary == "still stalled"


def test_severity_rise_is_an_escalation_notification() -> None:
    rec = decide(alert(), None, ROUTING, T0).record
    d = decide(alert(revision=1, severity=Severity.CRITICAL), rec, ROUTING, T0 + 1)
    assert d.notify == [("cs", TO_CRITICAL), ("am", TO_CRITICAL)]


def test_detector_resolution_resolves_and_notifies_only_if_firing_was_sent() -> None:
    rec = decide(alert(), None, ROUTING, T0).record
    d = decide(alert(status=AlertStatus.RESOLVED), rec, ROUTING, T0 + 1)
    assert d.record is not None and d.record.state == AlertState.RESOLVED and d.notify == [("cs", RESOLVED)]
    grouped = decide(alert(incident_id="inc1"), None, ROUTING, T0).record
    assert decide(alert(incident_id="inc1", status=AlertStatus.RESOLVED), grouped, ROUTING, T0 + 1).notify == []


def test_acknowledged_state_survives_detector_updates() -> None:
    rec = decide(alert(), None, ROUTING, T0).record
    assert rec is not None
    acked = msgspec.structs.replace(rec, state=AlertState.ACKNOWLEDGED)
    d = decide(alert(revision=1), acked, ROUTING, T0 + 1)
    assert d.record is not None and d.record.state == AlertState.ACKNOWLEDGED


def test_stall_explained_by_incident_is_inhibited_and_other_parcel_alerts_are_grouped() -> None:
    stall = decide(alert(incident_id="inc1"), None, ROUTING, T0)
    assert stall.notify == [] and stall.suppressed == "inhibited"
    lost = decide(alert(alert_id="a2", alert_type=AnomalyType.LIKELY_LOST, incident_id="inc1"), None, ROUTING, T0)
    assert lost.notify == [] and lost.suppressed == "grouped"
    incident = decide(alert(alert_id="inc1", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, node_id="HUB-1"), None, ROUTING, T0)
    assert incident.notify == [("cs", FIRING)]


def test_incident_gaining_parcels_is_not_renotified() -> None:
    inc = alert(alert_id="inc1", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, affected_waybills=("WB1",))
    rec = decide(inc, None, ROUTING, T0).record
    grown = msgspec.structs.replace(inc, revision=1, affected_waybills=tuple(f"WB{i}" for i in range(900)))
    assert decide(grown, rec, ROUTING, T0 + 1).notify == []


def test_active_silence_mutes_and_expired_silence_does_not() -> None:
    s = Silence(silence_id="s1", matchers=("carrier_id=C1",), starts_at=T0 - 10, ends_at=T0 + 10)
    assert decide(alert(), None, ROUTING, T0, (s,)).suppressed == "silenced"
    assert decide(alert(), None, ROUTING, T0 + 10, (s,)).notify == [("cs", FIRING)]


def test_post_refuses_blocked_targets_without_connecting() -> None:
    import aiohttp

    async def go() -> list[str]:
        out = []
        async with aiohttp.ClientSession() as session:
            for url in ("http://127.0.0.1:9/h", "http://169.254.169.254/latest/meta-data", "http://[::1]:9/h"):
                r = Receiver(name="r", url=url, secret=SECRET)
                out.append((await post(session, r, "msg_x", b"{}")).action)
        from logiwatch.alerts.webhooks import make_session

        async with make_session(allow_private=False) as guarded:
            r = Receiver(name="r", url="http://localhost:9/h", secret=SECRET)
            o = await post(guarded, r, "msg_x", b"{}")
            out.append(o.action + ":" + str(o.error))
        return out

    got = asyncio.run(go())
    assert got[:3] == ["give_up", "give_up", "give_up"]
    assert got[3].startswith("give_up:blocked target") and "localhost" in got[3]
