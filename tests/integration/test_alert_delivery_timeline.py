"""Alert delivery as timelines: push an alert at t, expect a request between t1 and t2.

Alertmanager's acceptance tests read this way; here the real alert service
runs on the real broker and Redis and posts to a real local receiver. Every
time is on the service's own clock (:func:`logiwatch.alerts.store.now_ms`):
``t`` is the moment the service decided the alert (``first_seen_ms`` of its
record), arrivals are stamped with the same function by the receiver.

Lower bounds are exact (the service must not act early). Upper bounds are the
documented window plus what the service itself adds: a delivery worker looks
at its queue every :data:`~logiwatch.alerts.delivery.POLL_S`, the escalation
loop every second, and :data:`SCHEDULING_S` covers a request's round trip and
a busy two-core machine. None of these is a speed figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import msgspec
import pytest
import redis

from logiwatch.alerts.delivery import POLL_S
from logiwatch.alerts.model import AlertRecord
from logiwatch.alerts.routing import RoutingConfig, parse_routes
from logiwatch.detectors.model import AnomalyType, Severity
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import (
    SECRET,
    Hit,
    HookReceiver,
    ServiceThread,
    produce,
    service_settings,
    stall,
)

pytestmark = pytest.mark.integration

#: Round trip of one request and event-loop lag on a shared machine.
SCHEDULING_S = 1.0
#: How often ``AlertService._escalate`` looks for due escalations.
ESCALATION_LOOP_S = 1.0
#: ``webhooks.next_delay_s`` jitters a schedule step by +-20%.
JITTER = 0.2


def _routes(url: str, *, retry_step_s: float = 1.0, **top: Any) -> RoutingConfig:
    return parse_routes(
        {
            **top,
            "receivers": [
                {
                    "name": "cs",
                    "url": url,
                    "secret": SECRET,
                    "allow_private_networks": True,
                    "retry_schedule_s": [retry_step_s] * 3,
                    "rate_per_s": 200,
                }
            ],
            "routes": [{"receiver": "cs"}],
        }
    )


def _decided_ms(svc: ServiceThread, alert_id: str) -> int:
    """When the service decided the alert, on its clock (the record's ``first_seen_ms``)."""

    assert svc.service is not None
    client = redis.Redis.from_url(svc.settings.redis.url)
    try:
        raw = client.get(svc.service.store.key("alert", alert_id))
    finally:
        client.close()
    assert raw is not None, f"the service has no record of {alert_id}"
    return msgspec.json.decode(raw, type=AlertRecord).first_seen_ms


def _hits(hook: HookReceiver, event: str | None = None) -> list[Hit]:
    with hook._lock:
        hits = list(hook.hits)
    return [h for h in hits if event is None or h.json()["event"] == event]


@pytest.fixture
def start(
    kafka_bootstrap: str, topic_factory: Callable[..., str], settings_factory: Any
) -> Iterator[Callable[[RoutingConfig], tuple[ServiceThread, str]]]:
    """``start(routing) -> (running service, its alerts topic)``; stopped after the test."""

    running: list[ServiceThread] = []

    def _start(routing: RoutingConfig) -> tuple[ServiceThread, str]:
        topic, ltopic = topic_factory("alerts", 1), topic_factory("liability", 1)
        svc = ServiceThread(service_settings(settings_factory, topic, ltopic, f"g-{uuid4().hex}"), routing)
        running.append(svc.__enter__())
        return svc, topic

    yield _start
    for svc in running:
        svc.__exit__(None, None, None)


@pytest.mark.parametrize(
    "retry_step_s",
    [1.0, 3.0],
    ids=["retry-after-longer-than-the-step", "retry-after-equal-to-the-step"],
)
def test_a_429_with_retry_after_3s_is_retried_no_earlier_than_3s_and_within_the_jitter_bound(
    start: Callable[[RoutingConfig], tuple[ServiceThread, str]], kafka_bootstrap: str, retry_step_s: float
) -> None:
    with HookReceiver() as hook:
        hook.script = [(429, "3")]
        svc, topic = start(_routes(hook.url, retry_step_s=retry_step_s))
        produce(kafka_bootstrap, topic, [stall(1)])
        wait_until(lambda: len(_hits(hook, "alert.firing")) >= 2, timeout=20)
        first, retry = _hits(hook, "alert.firing")[:2]
    assert (first.status, retry.status) == (429, 200)
    assert first.webhook_id == retry.webhook_id  # the same message, retried
    gap_s = (retry.arrived_ms - first.arrived_ms) / 1000
    # Retry-After is a floor; the jittered step wins only when it is longer.
    latest_s = max(3.0, retry_step_s * (1 + JITTER)) + POLL_S + SCHEDULING_S
    assert 3.0 <= gap_s <= latest_s, f"retry came {gap_s:.3f} s after the 429 (window 3.0..{latest_s:.1f} s)"


def test_an_incident_notification_waits_group_wait_while_a_lone_parcel_alert_goes_at_once(
    start: Callable[[RoutingConfig], tuple[ServiceThread, str]], kafka_bootstrap: str
) -> None:
    group_wait_s = 2.0
    incident = stall(
        100,
        alert_id="incident-HUB-1",
        alert_type=AnomalyType.HUB_INCIDENT,
        waybill_id=None,
        summary="HUB-1 stopped scanning",
        affected_waybills=("WB1", "WB2"),
    )
    with HookReceiver() as hook:
        svc, topic = start(_routes(hook.url, group_wait_s=group_wait_s))
        # the lone parcel alert is at another hub: one at HUB-1 would now join the open incident
        # there in the alert service (``link_incident``) and be inhibited
        lone = stall(1, node_id="HUB-2", summary="parcel WB1 stalled at HUB-2")
        produce(kafka_bootstrap, topic, [incident, lone])
        wait_until(lambda: len(_hits(hook)) >= 2, timeout=20)
        by_type = {h.json()["alert"]["alert_type"]: h for h in _hits(hook)}
        t_incident, t_parcel = _decided_ms(svc, incident.alert_id), _decided_ms(svc, "stall-1")
    waited_s = (by_type["hub_incident"].arrived_ms - t_incident) / 1000
    assert group_wait_s <= waited_s <= group_wait_s + POLL_S + SCHEDULING_S, f"incident notified after {waited_s:.3f} s"
    parcel_s = (by_type["stall"].arrived_ms - t_parcel) / 1000
    assert 0 <= parcel_s <= POLL_S + SCHEDULING_S, f"a parcel alert without an incident waited {parcel_s:.3f} s"
    assert by_type["stall"].arrived_ms < by_type["hub_incident"].arrived_ms


def test_an_unacknowledged_warning_escalates_to_critical_after_escalate_after_s_and_not_before(
    start: Callable[[RoutingConfig], tuple[ServiceThread, str]], kafka_bootstrap: str
) -> None:
    escalate_after_s = 3.0
    with HookReceiver() as hook:
        svc, topic = start(_routes(hook.url, escalate_after_s=escalate_after_s))
        produce(kafka_bootstrap, topic, [stall(1, severity=Severity.WARNING)])
        wait_until(lambda: len(_hits(hook, "alert.escalated")) >= 1, timeout=20)
        t = _decided_ms(svc, "stall-1")
        [firing] = _hits(hook, "alert.firing")
        [escalated] = _hits(hook, "alert.escalated")
    assert firing.json()["alert"]["severity"] == "warning"
    assert escalated.json()["alert"]["severity"] == "critical"
    assert firing.webhook_id != escalated.webhook_id
    after_s = (escalated.arrived_ms - t) / 1000
    latest_s = escalate_after_s + ESCALATION_LOOP_S + POLL_S + SCHEDULING_S
    assert escalate_after_s <= after_s <= latest_s, f"escalated {after_s:.3f} s after firing (window {escalate_after_s}..{latest_s:.1f} s)"
