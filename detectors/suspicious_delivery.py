"""Suspicious delivery: DELIVERED outside the destination region, or without OUT_FOR_DELIVERY.

A wrong region is known at once. A missing delivery run is only judged once
the allowed lateness has passed after the delivery scan (a deadline), so an
OUT_FOR_DELIVERY that arrives a little out of order never causes a false alarm.
"""

from __future__ import annotations

from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.state import (
    CODES,
    DELIVERED,
    OUT_FOR_DELIVERY,
    DeadlineMixin,
    Env,
    Finding,
    ParcelState,
)


class SuspiciousDeliveryDetector(DeadlineMixin):
    """Catches deliveries that look fake or misdelivered.

    Parameters
    ----------
    env: the engine's shared environment.
    check_region: alert when the delivery scan's region is not the destination.
    check_out_for_delivery: alert when no OUT_FOR_DELIVERY precedes the delivery.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).delivered(30 * H)
    >>> [a.alert_type.value for a in sc.run(detectors=("suspicious_delivery",), until=40 * H)]
    ['suspicious_delivery']
    """

    name = "suspicious_delivery"
    handles = frozenset({DELIVERED})  # the engine calls on_event for delivery scans only

    def __init__(self, env: Env, *, check_region: bool = True, check_out_for_delivery: bool = True) -> None:
        self.env = env
        self.check_region = check_region
        self.check_out_for_delivery = check_out_for_delivery

    def on_event(self, state: ParcelState, event: ScanEvent) -> list[Finding]:
        if CODES[event.event_type] != DELIVERED or AnomalyType.SUSPICIOUS_DELIVERY.value in state.fired:
            return []
        t = event.event_time
        if self.check_region and event.region != state.dest:
            return self._finding(
                state, t, t, f"was delivered in {event.region}, not its destination {state.dest}",
                {"kind": "wrong_region", "delivered_region": event.region},
            )
        if self.check_out_for_delivery:
            self.set_due(state, t + self.env.lateness_ms + 1)
        return []

    def on_deadline(self, state: ParcelState, now_ms: int) -> list[Finding]:
        delivered = state.first_time(DELIVERED)
        if delivered is None or AnomalyType.SUSPICIOUS_DELIVERY.value in state.fired:
            return []
        for e in state.route:
            if e[1] == OUT_FOR_DELIVERY and e[0] <= delivered:
                return []
        return self._finding(
            state, now_ms, delivered, "was marked DELIVERED without an OUT_FOR_DELIVERY scan",
            {"kind": "no_out_for_delivery"},
        )

    def _finding(
        self, state: ParcelState, at_ms: int, onset_ms: int, what: str, evidence: dict[str, float | int | str | bool | None]
    ) -> list[Finding]:
        state.fired.append(AnomalyType.SUSPICIOUS_DELIVERY.value)
        return [
            Finding(
                alert_type=AnomalyType.SUSPICIOUS_DELIVERY,
                at_ms=at_ms,
                onset_ms=onset_ms,
                severity=Severity.CRITICAL,
                summary=f"Parcel {state.waybill} {what}",
                evidence=evidence,
            )
        ]
