"""One parcel's journey through the network: order, dispatch, pickup, hubs and trucks, last mile.

:func:`new_parcel` draws an order (merchant, carrier, destination, amount,
paid time) and the platform's promises; :func:`journey` moves it step by step
with the habits of the real thing (merchant cut-offs, carrier pickup rounds
and days off, hub sorting that is slower at night and on Sundays, scheduled
trucks that may be full, delivery waves, failed deliveries and returns). At
each step it asks :mod:`~logiwatch.sim.anomalies` whether the parcel's
injected anomaly changes it, and :func:`finish` completes the labels
(:mod:`~logiwatch.sim.labels`). The draws come in a fixed order from the
run's generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from logiwatch.detectors.model import AnomalyType, EventType
from logiwatch.sim import anomalies, labels
from logiwatch.sim.context import Parcel, SimContext
from logiwatch.sim.network import (
    CARRIER_BY_ID,
    CATEGORIES,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    Carrier,
    Hub,
    hour_of_day,
    next_slot,
    weekday,
)

A = AnomalyType


def new_parcel(ctx: SimContext, index: int) -> Parcel:
    """Parcel ``index`` of the run with its journey made (scans and labels)."""

    rng, net = ctx.rng, ctx.net
    merchant = net.merchants[rng.choices(ctx.merchant_idx, cum_weights=ctx.merchant_cum)[0]]
    carrier = CARRIER_BY_ID[rng.choice(merchant.carriers)]
    dest = rng.choices(ctx.dest_names, cum_weights=ctx.dest_cum)[0]
    if rng.random() < 0.15:
        dest = merchant.node.region  # same-region orders
    category = merchant.category if rng.random() < 0.8 else rng.choice(CATEGORIES)[0]
    median_amount = next(c[2] for c in CATEGORIES if c[0] == category)
    amount = round(min(median_amount * rng.lognormvariate(0.0, 0.6), 50_000.0), 2)
    day = rng.choices(range(len(ctx.day_cum)), cum_weights=ctx.day_cum)[0]
    hour = rng.choices(range(24), cum_weights=ctx.hour_cum)[0]
    paid = ctx.start_ms + day * DAY_MS + hour * HOUR_MS + rng.randrange(HOUR_MS)
    route = net.route(merchant.outlet.hub_id, dest)
    lane = ctx.lane_factor(merchant.node.region, dest)
    sla = ctx.lane_sla_days(route, merchant, carrier, lane)
    p = Parcel(
        waybill=f"WB{ctx.seed}-{index:07d}",
        order_id=f"OD{ctx.seed}-{index:07d}",
        merchant=merchant,
        carrier=carrier,
        dest=dest,
        category=category,
        amount=amount,
        paid=paid,
        promised_dispatch_by=paid + 48 * HOUR_MS,
        promised_delivery_by=_promised_delivery(ctx, carrier, paid, sla),
    )
    p.feed = ctx.feed_of.get(carrier.carrier_id, "full")
    p.haul = ctx.sc.transit_factor * lane
    if ctx.sc.haul_sigma > 0:
        p.haul *= rng.lognormvariate(0.0, ctx.sc.haul_sigma)
    if ctx.sc.delay_rate > 0 and rng.random() < ctx.sc.delay_rate:
        p.haul *= rng.uniform(*ctx.sc.delay_factor)
    journey(ctx, p, route, anomalies.pick_anomaly(ctx, p))
    return p


def _promised_delivery(ctx: SimContext, carrier: Carrier, paid: int, sla_days: int) -> int:
    """The end of the promise's last day; the platform knows the carrier's calendar (each day off adds one)."""

    off = ctx.carrier_off(carrier)
    last_day = paid // DAY_MS + sla_days
    d = paid // DAY_MS
    while d <= last_day:
        if off(d):
            last_day += 1
        d += 1
    return (last_day + 1) * DAY_MS - MINUTE_MS - ctx.sc.promise_tz_h * HOUR_MS


def journey(ctx: SimContext, p: Parcel, route: tuple[str, ...], anomaly: AnomalyType | None) -> None:
    """The parcel's scans in order: 1. paid, 2. dispatched, 3. picked up, 4. each hub and leg, 5. the last mile."""

    off = ctx.carrier_off(p.carrier)
    p.scan(EventType.ORDER_PAID, p.merchant.node, p.paid)
    dispatch = _dispatch(ctx, p, anomaly)
    pickup = _pickup(ctx, p, dispatch, off, anomaly)
    t = pickup + int(ctx.rng.uniform(1.0, 3.0) * HOUR_MS)
    plan = anomalies.plan_route(ctx, p, route, anomaly)
    last_depart = t
    for i, hub_id in enumerate(plan.route):
        hub = ctx.net.hubs[hub_id]
        arrived = t
        p.scan(EventType.HUB_ARRIVED, hub.node, arrived)
        if hub_id == plan.misroute_hub:
            p.label(A.MISROUTE, arrived, hub_id, f"sent to {hub_id}, away from {p.dest}")
        if i == plan.lost_at:
            anomalies.lose(p, hub_id, arrived)
            finish(ctx, p)
            return
        last_depart = _hub_visit(ctx, p, hub, arrived, stalls=i == plan.stall_at)
        if i + 1 < len(plan.route):
            t = _leg(ctx, p, hub, ctx.net.hubs[plan.route[i + 1]], last_depart, slow=i == plan.slow_leg)
    _last_mile(ctx, p, last_depart, off, anomaly)


def _dispatch(ctx: SimContext, p: Parcel, anomaly: AnomalyType | None) -> int:
    """Same working day if paid before the merchant's cut-off; slow merchants a working day later."""

    m = p.merchant
    day = p.paid // DAY_MS
    if not (hour_of_day(p.paid) < m.cutoff_h and ctx.merchant_works(m, day)):
        day += 1
        while not ctx.merchant_works(m, day):
            day += 1
    if m.slow:
        day += 1
        while not ctx.merchant_works(m, day):
            day += 1
    dispatch = day * DAY_MS + int((m.cutoff_h + ctx.rng.uniform(0.5, 3.0)) * HOUR_MS)
    if dispatch > p.promised_dispatch_by - 20 * MINUTE_MS:
        # merchants rush to keep the dispatch promise: only an injected anomaly breaks it
        dispatch = p.promised_dispatch_by - int(ctx.rng.uniform(20, 120) * MINUTE_MS)
    if anomaly is A.LATE_DISPATCH:
        dispatch = anomalies.late_dispatch(ctx, p)
    p.scan(EventType.DISPATCHED, m.node, dispatch)
    return dispatch


def _pickup(ctx: SimContext, p: Parcel, dispatch: int, off: Callable[[int], bool], anomaly: AnomalyType | None) -> int:
    """The carrier's next pickup round (none on its days off)."""

    c = p.carrier
    pickup = next_slot(dispatch + 30 * MINUTE_MS, c.pickup_hours, off) + int(ctx.rng.uniform(0, 60) * MINUTE_MS)
    if anomaly is A.PICKUP_TIMEOUT:
        pickup = anomalies.pickup_timeout(ctx, p, dispatch)
    p.scan(EventType.PICKED_UP, p.merchant.outlet.node, pickup)
    return pickup


def _hub_visit(ctx: SimContext, p: Parcel, hub: Hub, arrived: int, stalls: bool) -> int:
    """Sorting, then the next truck out (or a later one: full, stalled, the hub down); returns the departure."""

    rng, sc = ctx.rng, ctx.sc
    factor = sc.hub_slowdown
    if hour_of_day(arrived) < 6.0:
        factor *= 1.4  # night shift (UTC 0-6) sorts slower
    if weekday(arrived) == 6:
        factor *= 1.2
    ready = arrived + int(hub.processing_median_h * rng.lognormvariate(0.0, 0.35) * factor * HOUR_MS)
    d = ctx.departure(hub, ready)
    if sc.overflow_prob and rng.random() < sc.overflow_prob:
        d = ctx.departure(hub, d + MINUTE_MS)  # truck full: wait for the next one
    if stalls:
        d = anomalies.stall(ctx, p, hub, arrived)
    held = anomalies.incident_hold(ctx, p, hub, arrived, d)
    if held is not None:
        d = held
    elif rng.random() < 0.02:
        when = arrived + int((d - arrived) * rng.uniform(0.2, 0.8))
        p.scan(EventType.EXCEPTION, hub.node, when, rng.choice(("WEATHER_DELAY", "RESORTED")))
    p.scan(EventType.HUB_DEPARTED, hub.node, d)
    p.visits.append((hub.node.node_id, arrived, d))
    return d


def _leg(ctx: SimContext, p: Parcel, hub: Hub, nxt: Hub, departs: int, slow: bool) -> int:
    """The line-haul truck to the next hub; returns its arrival."""

    c, sc = p.carrier, ctx.sc
    # trucks vary, but within bounds: only an injected anomaly makes a leg take days
    spread = min(
        max(ctx.rng.lognormvariate(0.0, c.transit_sigma), math.exp(-2 * c.transit_sigma)), math.exp(2 * c.transit_sigma)
    )
    hours = ctx.leg_hours_nominal(hub, nxt, c) * spread
    hours *= sc.linehaul_slowdown * (1.1 if weekday(departs) >= 5 else 1.0)
    if p.haul != 1.0:
        hours *= p.haul
    if slow:
        hours = anomalies.slow_leg(ctx, p, hub, nxt, departs, hours)
    return departs + int(max(hours, 0.5) * HOUR_MS)


def _delivery_time(ctx: SimContext, out_at: int) -> int:
    return out_at + int(min(max(ctx.rng.lognormvariate(math.log(2.5), 0.5), 0.3), 9.0) * HOUR_MS)


def _last_mile(ctx: SimContext, p: Parcel, last_depart: int, off: Callable[[int], bool], anomaly: AnomalyType | None) -> None:
    """Station, delivery waves (none on the carrier's days off), a failed attempt or two, delivered or returned."""

    rng, net, c = ctx.rng, ctx.net, p.carrier
    station = net.stations[p.dest][rng.randrange(len(net.stations[p.dest]))]
    area = net.customer_areas[station.node_id]
    at_station = last_depart + int(rng.uniform(1.0, 3.0) * HOUR_MS)
    ofd = next_slot(at_station + 45 * MINUTE_MS, c.delivery_waves_h, off) + int(rng.uniform(0, 30) * MINUTE_MS)
    ofd_scan = p.scan(EventType.OUT_FOR_DELIVERY, station, ofd)
    failed = rng.random() < c.failed_delivery_rate
    done = _delivery_time(ctx, ofd)
    if failed:
        fail_t = ofd + int(rng.uniform(1.0, 6.0) * HOUR_MS)
        p.scan(EventType.DELIVERY_FAILED, area, fail_t, "CUSTOMER_ABSENT")
        ofd2 = next_slot(fail_t + 10 * HOUR_MS, c.delivery_waves_h, off) + int(rng.uniform(0, 30) * MINUTE_MS)
        p.scan(EventType.OUT_FOR_DELIVERY, station, ofd2)
        if rng.random() < 0.12:
            fail2 = ofd2 + int(rng.uniform(1.0, 6.0) * HOUR_MS)
            p.scan(EventType.DELIVERY_FAILED, area, fail2, "REFUSED")
            p.scan(EventType.RETURNED, station, fail2 + int(rng.uniform(2.0, 6.0) * HOUR_MS), "RETURN_TO_SENDER")
            finish(ctx, p, anomaly)
            return
        done = _delivery_time(ctx, ofd2)
    delivered = p.scan(EventType.DELIVERED, area, done)
    if anomaly is A.SUSPICIOUS_DELIVERY:
        anomalies.suspicious_delivery(ctx, p, delivered, ofd_scan, area, failed)
    finish(ctx, p, anomaly)


def finish(ctx: SimContext, p: Parcel, anomaly: AnomalyType | None = None) -> None:
    """The journey is over: apply the feed, inject a contradiction, label incidents and the promise."""

    labels.apply_feed(p)
    if anomaly is A.CONTRADICTION:
        anomalies.contradict(ctx, p)
    labels.label_incidents(ctx, p)
    labels.label_promise(p)
