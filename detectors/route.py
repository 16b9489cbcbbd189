"""Misroute: a parcel that moves away from its destination, or loops back to a hub it left.

"Away" uses region centroids learned from the coordinates on scans (no map
needed): a hub arrival outside the destination region that is at least
``margin_km`` further from the destination's centroid than the previous hub.
Regions a lane (origin > destination) visits routinely (``common_share`` of
its hub arrivals once the lane has ``min_lane`` of them) are never called
misroutes, which keeps hub-and-spoke detours quiet. A loop is a second arrival
at a hub after arriving at another hub in between.
"""

from __future__ import annotations

from collections.abc import Sequence

from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.protocol import NO_FINDINGS, Contract, DetectorBase, Emits, Lifecycle, ScanContext
from logiwatch.detectors.state import HUB_ARRIVED, Env, Finding, ParcelState, km_between
from logiwatch.detectors.values import TELEPORT_AT

#: the alert type's value, read once (an enum member's ``.value`` is a Python-level property)
_MISROUTE = AnomalyType.MISROUTE.value


class MisrouteDetector(DetectorBase):
    """Catches parcels sent the wrong way or around in a loop.

    Parameters
    ----------
    env: the engine's shared environment.
    margin_km: how much further from the destination a hub must be to count as "away".
    common_share: regions at least this common on the lane are normal.
    min_lane: hub arrivals a lane needs before its habits are trusted.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H) \\
    ...     .departed(4 * H).arrived("HUB-B", 9 * H).departed(10 * H).arrived("HUB-A", 15 * H)
    >>> [a.alert_type.value for a in sc.run(detectors=("misroute",))]
    ['misroute']
    """

    name = "misroute"
    contract = Contract(
        emits=(Emits(AnomalyType.MISROUTE, Lifecycle.STICKY),),
        needs=(TELEPORT_AT,),
        #: region -> [n, sum_lat, sum_lon]: learned centroids for "moves away from destination";
        #: "origin>dest" lane -> {region: hub arrivals seen}: which regions a lane normally visits
        tables=("centroids", "lane_regions"),
    )

    def __init__(
        self, env: Env, *, margin_km: float = 150.0, common_share: float = 0.05, min_lane: int = 40
    ) -> None:
        self.centroids: dict[str, list[float]] = env.table("centroids")
        self.lane_regions: dict[str, dict[str, int]] = env.table("lane_regions")
        self.margin_km = float(margin_km)
        self.common_share = float(common_share)
        self.min_lane = min_lane

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        region = event.region
        if event.lat is not None and event.lon is not None:
            c = self.centroids.get(region)
            if c is None:
                self.centroids[region] = [1.0, event.lat, event.lon]
            elif c[0] < 1000:  # enough to locate a region; stop so sums stay exact and small
                c[0] += 1
                c[1] += event.lat
                c[2] += event.lon
        if scan.code != HUB_ARRIVED or not scan.latest or state.final_at:
            return NO_FINDINGS
        if TELEPORT_AT.get(state) == event.event_time:
            return NO_FINDINGS  # a scan that cannot be true is a contradiction, not a route
        lane = f"{state.origin}>{state.dest}"
        seen = self.lane_regions.get(lane)
        if seen is None:
            seen = self.lane_regions[lane] = {}
        why = self._loop(state, event) or self._away(state, event, seen)
        if why is None:
            seen[region] = seen.get(region, 0) + 1
            seen["_n"] = seen.get("_n", 0) + 1
            return NO_FINDINGS
        if _MISROUTE in state.fired:
            return NO_FINDINGS
        state.fired.append(_MISROUTE)
        t = event.event_time
        return [
            Finding(
                alert_type=AnomalyType.MISROUTE,
                at_ms=t,
                onset_ms=t,
                severity=Severity.WARNING,
                episode=str(t),
                node=event.node_id,
                region=region,
                summary=f"Parcel {state.waybill} for {state.dest} {why[0]}",
                evidence=why[1],
            )
        ]

    def _loop(self, state: ParcelState, event: ScanEvent) -> tuple[str, dict[str, float | int | str | bool | None]] | None:
        node = event.node_id
        hubs = [e for e in state.route[:-1] if e[1] == HUB_ARRIVED]
        for i, e in enumerate(hubs):
            if e[2] == node and any(o[2] != node for o in hubs[i + 1 :]):
                return f"came back to hub {node} (loop)", {"kind": "loop", "hub": node, "first_arrival": e[0]}
        return None

    def _away(
        self, state: ParcelState, event: ScanEvent, seen: dict[str, int]
    ) -> tuple[str, dict[str, float | int | str | bool | None]] | None:
        region = event.region
        if region == state.dest:
            return None
        n = seen.get("_n", 0)
        if n >= self.min_lane and seen.get(region, 0) >= self.common_share * n:
            return None
        prev_region = state.origin
        for e in reversed(state.route[:-1]):
            if e[1] == HUB_ARRIVED:
                prev_region = e[3]
                break
        cd, c1, c0 = self.centroid(state.dest), self.centroid(region), self.centroid(prev_region)
        if cd is None or c1 is None or c0 is None:
            return None
        d1 = km_between(c1[0], c1[1], cd[0], cd[1])
        d0 = km_between(c0[0], c0[1], cd[0], cd[1])
        if d1 <= d0 + self.margin_km:
            return None
        return (
            f"moved away from its destination to {region} ({d0:.0f} km -> {d1:.0f} km)",
            {"kind": "away", "from_region": prev_region, "to_region": region, "km_before": round(d0), "km_after": round(d1),
             "lane_arrivals": n, "lane_share_of_region": round(seen.get(region, 0) / n, 4) if n else None},
        )

    def centroid(self, region: str) -> tuple[float, float] | None:
        c = self.centroids.get(region)
        if c is None or c[0] < 3:
            return None
        return c[1] / c[0], c[2] / c[0]

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        return NO_FINDINGS  # it sets no deadline
