"""The anomalies the simulator injects, each with the label that says where and when it began.

A parcel gets at most one per-parcel anomaly (:func:`pick_anomaly`, at the
scenario's rate times the carrier's reliability factor); the journey asks
this module at each step whether and how it changes: a late dispatch, a
pickup that never comes, a misroute through a wrong gateway, a stall, a
loss, a slow line-haul leg, a suspicious delivery, a contradiction in the
scans. Hub incidents (:func:`plan_incidents`) are network-wide: every parcel
at the hub during the window waits for the backlog to clear. Every draw comes
from the run's generator in the journey's order.
"""

from __future__ import annotations

from dataclasses import dataclass

from logiwatch.detectors.model import AnomalyType, EventType
from logiwatch.sim.context import Incident, Parcel, Scan, SimContext
from logiwatch.sim.network import DAY_MS, HOUR_MS, MINUTE_MS, Hub, Node, haversine_km, node_km
from logiwatch.sim.scenarios import FEEDS

A = AnomalyType


def plan_incidents(ctx: SimContext) -> None:
    """Pick the gateways that go down and when (6-12 h each), into ``ctx.incidents``."""

    rng = ctx.rng
    gateways = list(ctx.net.gateway.values())
    days = len(ctx.sc.day_weights)
    for k, hub_id in enumerate(rng.sample(gateways, min(ctx.sc.incidents, len(gateways)))):
        # in the busy middle of the window, once baselines have warmed up
        start = ctx.start_ms + int(rng.uniform(1.5, days + 0.5) * DAY_MS)
        start -= start % (15 * MINUTE_MS)
        end = start + rng.randint(24, 48) * 15 * MINUTE_MS  # 6-12 h
        inc = Incident(f"INC-{ctx.seed}-{k + 1}-{hub_id}", hub_id, start, end)
        ctx.incidents.append(inc)
        ctx.incidents_at[hub_id] = inc


def pick_anomaly(ctx: SimContext, p: Parcel) -> AnomalyType | None:
    """The parcel's one injected anomaly, or ``None``; also ``None`` when its feed could not show it."""

    u = ctx.rng.random()
    acc = 0.0
    for kind, rate in ctx.sc.rates:
        acc += rate * p.carrier.anomaly_factor
        if u < acc:
            return kind if kind in FEEDS[p.feed][1] else None
    return None


def late_dispatch(ctx: SimContext, p: Parcel) -> int:
    p.label(A.LATE_DISPATCH, p.promised_dispatch_by, p.merchant.node.node_id, "dispatched after promised_dispatch_by")
    return p.promised_dispatch_by + int(ctx.rng.uniform(24, 72) * HOUR_MS)


def pickup_timeout(ctx: SimContext, p: Parcel, dispatch: int) -> int:
    p.label(A.PICKUP_TIMEOUT, dispatch, p.merchant.node.node_id, "picked up 72-120 h after dispatch")
    return dispatch + int(ctx.rng.uniform(72, 120) * HOUR_MS)


@dataclass(frozen=True)
class HubPlan:
    """Where along the (possibly misrouted) route the parcel's anomaly strikes; -1 or ``None``: nowhere."""

    route: list[str]
    misroute_hub: str | None = None
    stall_at: int = -1
    lost_at: int = -1
    slow_leg: int = -1


def plan_route(ctx: SimContext, p: Parcel, route: tuple[str, ...], anomaly: AnomalyType | None) -> HubPlan:
    """The route the parcel really takes and the hub or leg its anomaly hits."""

    rng = ctx.rng
    route_l = list(route)
    misroute_hub = _misroute(ctx, p, route_l) if anomaly is A.MISROUTE else None
    return HubPlan(
        route=route_l,
        misroute_hub=misroute_hub,
        stall_at=rng.randrange(len(route_l)) if anomaly is A.STALL else -1,
        lost_at=rng.randrange(len(route_l)) if anomaly is A.LIKELY_LOST else -1,
        slow_leg=rng.randrange(len(route_l) - 1) if anomaly is A.ABNORMAL_SEGMENT and len(route_l) > 1 else -1,
    )


def _misroute(ctx: SimContext, p: Parcel, route_l: list[str]) -> str | None:
    """Send the parcel through a gateway farther from its destination (``route_l`` is changed in place)."""

    rng, net = ctx.rng, ctx.net
    k = rng.randrange(len(route_l))
    here = net.hubs[route_l[k]].node
    dest_spec = net.regions[p.dest]
    here_to_dest = haversine_km(here.lat, here.lon, dest_spec.lat, dest_spec.lon)
    wrong = [
        gw
        for region, gw in net.gateway.items()
        if region != p.dest
        and gw not in route_l
        and haversine_km(net.hubs[gw].node.lat, net.hubs[gw].node.lon, dest_spec.lat, dest_spec.lon) > here_to_dest + 400
        and node_km(here, net.hubs[gw].node) < 1800
    ]
    if not wrong:
        return None
    misroute_hub = rng.choice(wrong)
    back = route_l[k + 1] if k + 1 < len(route_l) else route_l[k]
    if k + 1 < len(route_l):
        route_l.insert(k + 1, misroute_hub)
    else:
        route_l[k + 1 : k + 1] = [misroute_hub, back]
    return misroute_hub


def lose(p: Parcel, hub_id: str, arrived: int) -> None:
    """The parcel goes silent for good after arriving at ``hub_id``."""

    p.visits.append((hub_id, arrived, None))
    p.label(A.LIKELY_LOST, arrived, hub_id, "silent for good after HUB_ARRIVED")
    p.label(A.STALL, arrived, hub_id, "lost parcel: stalled first, then silent for good")


def stall(ctx: SimContext, p: Parcel, hub: Hub, arrived: int) -> int:
    """The departure of a parcel stuck for 6-10x the hub's normal p95 dwell (truck gap + slow sorting)."""

    sc = ctx.sc
    normal_p95_h = (24.0 / len(hub.departures_h) + 2.5 * hub.processing_median_h * sc.hub_slowdown) * (
        1.0 + sc.overflow_prob
    )
    d = ctx.departure(hub, arrived + int(ctx.rng.uniform(6.0, 10.0) * normal_p95_h * HOUR_MS))
    p.label(A.STALL, arrived, hub.node.node_id, f"dwell {(d - arrived) / HOUR_MS:.1f} h at {hub.node.node_id}")
    return d


def incident_hold(ctx: SimContext, p: Parcel, hub: Hub, arrived: int, departs: int) -> int | None:
    """The departure when the hub is down meanwhile (nothing leaves before the backlog clears), else ``None``."""

    rng = ctx.rng
    inc = ctx.incidents_at.get(hub.node.node_id)
    if inc is None or not (arrived < inc.end_ms and departs >= inc.start_ms):
        return None
    d = max(departs, ctx.departure(hub, inc.end_ms + int(rng.uniform(1.0, 4.0) * HOUR_MS)))
    if rng.random() < 0.5:
        when = max(arrived, inc.start_ms) + int(rng.uniform(0.5, 2.0) * HOUR_MS)
        p.scan(EventType.EXCEPTION, hub.node, min(when, d - MINUTE_MS), "HUB_DELAY")
    return d


def slow_leg(ctx: SimContext, p: Parcel, hub: Hub, nxt: Hub, departs: int, hours: float) -> float:
    """A line-haul leg that takes 4-7x its time plus half a day."""

    hours = hours * ctx.rng.uniform(4.0, 7.0) + 12.0
    p.label(A.ABNORMAL_SEGMENT, departs, hub.node.node_id, f"{hub.node.node_id}->{nxt.node.node_id} took {hours:.1f} h")
    return hours


def suspicious_delivery(
    ctx: SimContext, p: Parcel, delivered: Scan, ofd_scan: Scan, area: Node, failed: bool
) -> None:
    """A delivery claimed in the wrong region (no GPS fix), or without the courier going out."""

    rng, net = ctx.rng, ctx.net
    no_ofd_feed = EventType.OUT_FOR_DELIVERY not in (FEEDS[p.feed][0] or frozenset(EventType))
    if failed or no_ofd_feed or rng.random() < 0.5:
        others = [r for r in ctx.dest_names if r != p.dest]
        wrong_region = others[rng.randrange(len(others))]
        wrong_area = net.customer_areas[net.stations[wrong_region][0].node_id]
        # the courier app reports no GPS fix: the claim is the region, not a teleport
        delivered.node = wrong_area
        delivered.no_coords = True
        p.label(A.SUSPICIOUS_DELIVERY, delivered.time, wrong_area.node_id, f"delivered in {wrong_region}, not {p.dest}")
    else:
        p.scans.remove(ofd_scan)
        p.label(A.SUSPICIOUS_DELIVERY, delivered.time, area.node_id, "delivered without OUT_FOR_DELIVERY")


def contradict(ctx: SimContext, p: Parcel) -> None:
    """Scans that cannot all be true: a teleport, OUT_FOR_DELIVERY after DELIVERED, or a pickup before payment."""

    rng, net = ctx.rng, ctx.net
    variant = rng.random()
    departs = [s for s in p.scans if s.etype is EventType.HUB_DEPARTED]
    final = next((s for s in p.scans if s.etype is EventType.DELIVERED), None)
    if variant < 0.5 and departs:
        dep = departs[rng.randrange(len(departs))]
        after = p.scans[p.scans.index(dep) + 1]
        far = [h.node for h in net.hubs.values() if h.gateway and node_km(h.node, dep.node) > 1000]
        if far:
            ghost = far[rng.randrange(len(far))]
            gap = min(int(rng.uniform(15, 60) * MINUTE_MS), (after.time - dep.time) // 2)
            when = dep.time + max(gap, MINUTE_MS)
            p.scans.insert(p.scans.index(after), Scan(EventType.HUB_ARRIVED, ghost, when, when))
            p.label(A.CONTRADICTION, when, ghost.node_id, f"teleport: {dep.node.node_id}->{ghost.node_id}")
    elif variant < 0.75 and final is not None:
        when = final.time + int(rng.uniform(30, 180) * MINUTE_MS)
        station = next(s.node for s in p.scans if s.etype is EventType.OUT_FOR_DELIVERY)
        p.scans.append(Scan(EventType.OUT_FOR_DELIVERY, station, when, when))
        p.label(A.CONTRADICTION, when, station.node_id, "OUT_FOR_DELIVERY after DELIVERED")
    else:
        pick = next(s for s in p.scans if s.etype is EventType.PICKED_UP)
        # a scanner with a wrong clock: stamped before the order existed, sent when it happened
        pick.time = p.paid - int(rng.uniform(1.0, 6.0) * HOUR_MS)
        p.label(A.CONTRADICTION, pick.time, pick.node.node_id, "PICKED_UP stamped before ORDER_PAID")
