"""Contradiction: scans that cannot all be true (teleports and impossible sequences).

A teleport is two consecutive located scans further apart than ``max_kmh``
allows for the time between them (only above ``min_km``, so coordinate noise
and same-city hops never count). Impossible sequences are a carrier scan
(dispatch, pickup, hub, delivery run) stamped before the payment, and any
movement scan stamped after the delivery. Each parcel gets at most one
contradiction alert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.protocol import NO_FINDINGS, Contract, DetectorBase, Emits, Lifecycle, ScanContext
from logiwatch.detectors.state import (
    DELIVERED,
    DISPATCHED,
    OUT_FOR_DELIVERY,
    PAID,
    RETURNED,
    TYPES,
    Env,
    Finding,
    ParcelState,
    km_between,
)
from logiwatch.detectors.values import TELEPORT_AT

_Evidence = dict[str, float | int | str | bool | None]
#: km per degree of arc on the sphere km_between uses (radius 6,371 km)
_KM_PER_DEGREE = 6_371.0 * math.pi / 180

#: the alert type's value, read once (an enum member's ``.value`` is a Python-level property)
_CONTRADICTION = AnomalyType.CONTRADICTION.value


class ContradictionDetector(DetectorBase):
    """Catches teleports and impossible scan sequences.

    Parameters
    ----------
    env: the engine's shared environment.
    max_kmh: the fastest plausible movement between two scans.
    min_km: jumps shorter than this are never teleports.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1").paid(5 * H).scan("PICKED_UP", at=2 * H)
    >>> [a.alert_type.value for a in sc.run(detectors=("contradiction",))]
    ['contradiction']
    """

    name = "contradiction"
    contract = Contract(
        emits=(Emits(AnomalyType.CONTRADICTION, Lifecycle.STICKY),),
        provides=(TELEPORT_AT,),
    )

    def __init__(self, env: Env, *, max_kmh: float = 900.0, min_km: float = 300.0) -> None:
        self.max_kmh = float(max_kmh)
        self.min_km = float(min_km)

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        teleport = self._teleport(state, event)
        if teleport is not None:
            TELEPORT_AT.set(state, event.event_time)  # the other detectors ignore this scan
        why = self._sequence(state, event, scan.code) or teleport
        if event.lat is not None and event.lon is not None and scan.latest:
            state.geo = (event.event_time, event.lat, event.lon)
        if why is None or _CONTRADICTION in state.fired:
            return NO_FINDINGS
        state.fired.append(_CONTRADICTION)
        t = event.event_time
        return [
            Finding(
                alert_type=AnomalyType.CONTRADICTION,
                at_ms=t,
                onset_ms=t,
                severity=Severity.WARNING,
                episode=str(t),
                node=event.node_id,
                region=event.region,
                summary=f"Parcel {state.waybill}: {why[0]}",
                evidence=why[1],
            )
        ]

    def _sequence(self, state: ParcelState, event: ScanEvent, code: int) -> tuple[str, _Evidence] | None:
        t = event.event_time
        moving = DISPATCHED <= code <= OUT_FOR_DELIVERY
        if moving or code == DELIVERED:
            first = state.route[0]  # the engine has added this scan: never empty; PAID is usually first
            paid = first[0] if first[1] == PAID else state.first_time(PAID)
            if paid is not None and t < paid:
                return f"{event.event_type.value} stamped before ORDER_PAID", {"kind": "before_payment", "paid_at": paid}
        if code == PAID:
            for e in state.route:
                if (DISPATCHED <= e[1] <= OUT_FOR_DELIVERY or e[1] == DELIVERED) and e[0] < t:
                    return f"{TYPES[e[1]].value} stamped before ORDER_PAID", {"kind": "before_payment", "paid_at": t}
        # only a movement scan can come after the delivery, and a route with a DELIVERED scan
        # has final_at set (by the engine, before detectors run): skip the route walk otherwise
        delivered = state.first_time(DELIVERED) if moving and state.final_at else None
        if delivered is not None and code != DELIVERED and code != RETURNED and moving:
            if t > delivered:
                return f"{event.event_type.value} after DELIVERED", {"kind": "after_delivery", "delivered_at": delivered}
        if code == DELIVERED:
            for e in state.route:
                if DISPATCHED <= e[1] <= OUT_FOR_DELIVERY and e[0] > t:
                    return f"{TYPES[e[1]].value} after DELIVERED", {"kind": "after_delivery", "delivered_at": t}
        return None

    def _teleport(self, state: ParcelState, event: ScanEvent) -> tuple[str, _Evidence] | None:
        if event.lat is None or event.lon is None or state.geo is None:
            return None
        t0, lat0, lon0 = state.geo
        # Cheap upper bound first (meridian then parallel is never shorter than the great
        # circle): most consecutive scans are close, and the haversine is the costly part.
        if (abs(event.lat - lat0) + abs(event.lon - lon0)) * _KM_PER_DEGREE < 0.99 * self.min_km:
            return None
        km = km_between(lat0, lon0, event.lat, event.lon)
        if km < self.min_km:
            return None
        hours = max(abs(event.event_time - t0) / 3.6e6, 1 / 60)
        kmh = km / hours
        if kmh <= self.max_kmh:
            return None
        return (
            f"teleported {km:.0f} km in {hours:.1f} h ({kmh:.0f} km/h) to {event.node_id}",
            {"kind": "teleport", "km": round(km, 1), "hours": round(hours, 3), "kmh": round(kmh), "max_kmh": self.max_kmh},
        )

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        return NO_FINDINGS  # it sets no deadline
