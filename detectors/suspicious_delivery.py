"""Suspicious delivery: DELIVERED outside the destination region, or without OUT_FOR_DELIVERY.

A wrong region is known at once. A missing delivery run is only judged once
the allowed lateness has passed after the delivery scan (a deadline), so an
OUT_FOR_DELIVERY that arrives a little out of order never causes a false alarm,
and only for a carrier whose feed is known to send OUT_FOR_DELIVERY: the
engine keeps a feed profile per carrier (the share of its delivered parcels
whose scans included OUT_FOR_DELIVERY, a hub scan, DISPATCHED), learned at
each delivery, and the rule applies once ``feed_min_parcels`` deliveries show
a share of at least ``feed_min_share``. A carrier that never scans the
delivery run raises nothing; the evidence names the profile used.
"""

from __future__ import annotations

from collections.abc import Sequence

from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.protocol import NO_FINDINGS, Contract, DetectorBase, Emits, Lifecycle, ScanContext
from logiwatch.detectors.state import (
    DELIVERED,
    DISPATCHED,
    FEED_OFD,
    HUB_ARRIVED,
    HUB_DEPARTED,
    OUT_FOR_DELIVERY,
    Env,
    Finding,
    ParcelState,
)

#: the alert type's value, read once (an enum member's ``.value`` is a Python-level property)
_SUSPICIOUS_DELIVERY = AnomalyType.SUSPICIOUS_DELIVERY.value


class SuspiciousDeliveryDetector(DetectorBase):
    """Catches deliveries that look fake or misdelivered.

    Parameters
    ----------
    env: the engine's shared environment.
    check_region: alert when the delivery scan's region is not the destination.
    check_out_for_delivery: alert when no OUT_FOR_DELIVERY precedes the delivery (where the feed sends it).
    feed_min_parcels, feed_min_share: the carrier's feed counts as sending OUT_FOR_DELIVERY once this
        many of its parcels were delivered and at least this share of them had it.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> for i in range(60):  # this carrier scans its delivery runs
    ...     _ = sc.parcel(f"N{i}").paid(0).dispatched(H).picked_up(2 * H).out_for_delivery(20 * H).delivered(22 * H)
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).delivered(30 * H)
    >>> [a.waybill_id for a in sc.run(detectors=("suspicious_delivery",), until=40 * H)]
    ['WB1']
    """

    name = "suspicious_delivery"
    contract = Contract(
        handles=frozenset({DELIVERED}),  # the engine calls on_event for delivery scans only
        emits=(Emits(AnomalyType.SUSPICIOUS_DELIVERY, Lifecycle.STICKY),),
    )

    def __init__(
        self,
        env: Env,
        *,
        check_region: bool = True,
        check_out_for_delivery: bool = True,
        feed_min_parcels: int = 50,
        feed_min_share: float = 0.8,
    ) -> None:
        if feed_min_parcels < 1 or not 0.0 < feed_min_share <= 1.0:
            raise ValueError("suspicious_delivery: feed_min_parcels >= 1 and 0 < feed_min_share <= 1")
        self.env = env
        self.check_region = check_region
        self.check_out_for_delivery = check_out_for_delivery
        self.feed_min_parcels = feed_min_parcels
        self.feed_min_share = float(feed_min_share)

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        if scan.code != DELIVERED or _SUSPICIOUS_DELIVERY in state.fired:
            return NO_FINDINGS
        t = event.event_time
        if self.check_region and event.region != state.dest:
            return self._finding(
                state, t, t, f"was delivered in {event.region}, not its destination {state.dest}",
                {"kind": "wrong_region", "delivered_region": event.region},
            )
        # judged (and the carrier's feed profile counted) once out-of-order scans had time to arrive
        self.set_due(state, t + self.env.lateness_ms + 1)
        return NO_FINDINGS

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        delivered = state.first_time(DELIVERED)
        if delivered is None or _SUSPICIOUS_DELIVERY in state.fired:
            return NO_FINDINGS
        ofd = hub = dispatched = False
        for e in state.route:
            code = e[1]
            if code == OUT_FOR_DELIVERY and e[0] <= delivered:
                ofd = True
            elif code == HUB_ARRIVED or code == HUB_DEPARTED:
                hub = True
            elif code == DISPATCHED:
                dispatched = True
        # the carrier's profile before this parcel decides; then this parcel joins it
        share, n = self.env.feed_share(state.carrier, FEED_OFD)
        self.env.count_feed(state.carrier, ofd, hub, dispatched)
        if ofd or not self.check_out_for_delivery:
            return NO_FINDINGS
        if n < self.feed_min_parcels or share < self.feed_min_share:
            return NO_FINDINGS  # this carrier's feed is not known to scan its delivery runs
        return self._finding(
            state,
            now_ms,
            delivered,
            "was marked DELIVERED without an OUT_FOR_DELIVERY scan",
            {
                "kind": "no_out_for_delivery",
                "feed_profile": f"{state.carrier}: {share:.1%} of {n} delivered parcels had OUT_FOR_DELIVERY",
                "feed_ofd_share": round(share, 4),
                "feed_parcels": n,
            },
        )

    def _finding(
        self, state: ParcelState, at_ms: int, onset_ms: int, what: str, evidence: dict[str, float | int | str | bool | None]
    ) -> list[Finding]:
        state.fired.append(_SUSPICIOUS_DELIVERY)
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
