"""Each detector on a timeline it must catch, and on ordinary traffic it must leave alone."""

from __future__ import annotations

import pytest

from logiwatch.detectors.baselines import P50, P99, DurationBaseline
from logiwatch.detectors.calendar import DAY_MS, Calendar, double_11
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.hub_stage import link_incident
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType
from logiwatch.detectors.testing import DAY, H, M, Scenario

CFG = EngineConfig(min_count=10)


def _types(alerts: list[Alert], waybill: str) -> list[str]:
    return [a.alert_type.value for a in alerts if a.waybill_id == waybill and a.status is AlertStatus.FIRING]


def _warm(n: int = 80) -> Scenario:
    sc = Scenario()
    sc.normal(n, seed=3)
    return sc


def test_normal_traffic_raises_no_alert_once_baselines_are_warm() -> None:
    sc = _warm(150)
    alerts = sc.run(config=CFG)
    late = [a for a in alerts if a.waybill_id not in {p.waybill for p in sc.parcels[:40]}]
    assert late == []


def test_stall_at_a_hub_fires_once_with_learned_evidence_and_resolves_when_moved() -> None:
    sc = _warm()
    t = 30 * H
    p = sc.parcel("STUCK", deliver_within=20 * DAY).paid(t).dispatched(t + 2 * H).picked_up(t + 5 * H)
    p.arrived("HUB-A", t + 7 * H).departed(t + 11 * H).arrived("HUB-B", t + 21 * H)
    p.departed(t + 21 * H + 3 * DAY).arrived("HUB-C", t + 33 * H + 3 * DAY).departed(t + 36 * H + 3 * DAY)
    p.out_for_delivery(t + 40 * H + 3 * DAY).delivered(t + 42 * H + 3 * DAY)
    alerts = sc.run(config=CFG, all_alerts=True)
    stall = [a for a in alerts if a.waybill_id == "STUCK" and a.alert_type is AnomalyType.STALL]
    assert [a.status for a in stall] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    ev = stall[0].evidence
    assert stall[0].node_id == "HUB-B" and stall[0].onset_at == sc.start_ms + t + 21 * H
    assert ev["baseline_key"] != "prior" and isinstance(ev["baseline_n"], int) and ev["baseline_n"] >= 10
    assert ev["dwell_s"] > ev["expected_dwell_p99_s"]
    assert 0.0 <= ev["probability_overdue"] <= 1.0
    assert "likely_lost" not in _types(alerts, "STUCK")


def test_a_parcel_silent_for_good_is_stalled_then_likely_lost_naming_the_stall() -> None:
    sc = _warm()
    t = 30 * H
    sc.parcel("LOST").paid(t).dispatched(t + 2 * H).picked_up(t + 5 * H).arrived("HUB-A", t + 7 * H)
    alerts = sc.run(config=CFG)
    stall = next(a for a in alerts if a.waybill_id == "LOST" and a.alert_type is AnomalyType.STALL)
    lost = next(a for a in alerts if a.waybill_id == "LOST" and a.alert_type is AnomalyType.LIKELY_LOST)
    assert lost.evidence["stall_alert_id"] == stall.alert_id
    assert lost.detected_at > stall.detected_at


GRACE_2H = EngineConfig(knobs={"late_dispatch": {"grace_s": 2 * 3600}})


def test_late_dispatch_fires_at_the_promise_by_default_and_resolves_on_dispatch() -> None:
    sc = Scenario()
    sc.parcel("LATE", dispatch_within=24 * H).paid(0).dispatched(40 * H)
    alerts = sc.run(detectors=("late_dispatch",), all_alerts=True)
    assert [(a.status, a.detected_at - sc.start_ms) for a in alerts] == [
        (AlertStatus.FIRING, 24 * H),
        (AlertStatus.RESOLVED, 40 * H),
    ]


def test_late_dispatch_fires_after_the_promise_plus_a_configured_grace() -> None:
    sc = Scenario()
    sc.parcel("LATE", dispatch_within=24 * H).paid(0).dispatched(40 * H)
    alerts = sc.run(config=GRACE_2H, detectors=("late_dispatch",), all_alerts=True)
    assert [(a.status, a.detected_at - sc.start_ms) for a in alerts] == [
        (AlertStatus.FIRING, 26 * H),
        (AlertStatus.RESOLVED, 40 * H),
    ]


def test_late_dispatch_stays_quiet_when_dispatched_within_grace() -> None:
    sc = Scenario()
    sc.parcel("OK", dispatch_within=24 * H).paid(0).dispatched(25 * H)
    assert sc.run(config=GRACE_2H, detectors=("late_dispatch",)) == []


def test_pickup_timeout_moves_past_the_carriers_day_off() -> None:
    sc = Scenario()  # starts on a Monday
    sc.parcel("P").paid(0).dispatched(4 * H)
    base = sc.run(detectors=("pickup_timeout",))
    off_days = frozenset(("C1", d) for d in range(7) if d != 0)  # works Mondays only
    cal = sc.run(config=EngineConfig(calendar=Calendar(carrier_days_off=off_days)), detectors=("pickup_timeout",))
    assert len(base) == len(cal) == 1
    assert cal[0].detected_at - base[0].detected_at >= 2 * DAY


def test_abnormal_segment_fires_in_transit_and_not_again_on_arrival() -> None:
    sc = _warm()
    t = 30 * H
    p = sc.parcel("SLOW", deliver_within=20 * DAY).paid(t).dispatched(t + 2 * H).picked_up(t + 5 * H)
    p.arrived("HUB-A", t + 7 * H).departed(t + 11 * H).arrived("HUB-B", t + 11 * H + 4 * DAY)
    p.departed(t + 14 * H + 4 * DAY).arrived("HUB-C", t + 26 * H + 4 * DAY).departed(t + 29 * H + 4 * DAY)
    p.out_for_delivery(t + 32 * H + 4 * DAY).delivered(t + 34 * H + 4 * DAY)
    alerts = sc.run(config=CFG, all_alerts=True)
    seg = [a for a in alerts if a.waybill_id == "SLOW" and a.alert_type is AnomalyType.ABNORMAL_SEGMENT]
    assert [a.status for a in seg] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert seg[0].evidence["in_transit"] is True
    assert "stall" not in _types(alerts, "SLOW")


def test_misroute_catches_a_loop_and_a_move_away_from_the_destination() -> None:
    sc = _warm()
    t = 30 * H
    loop = sc.parcel("LOOP").paid(t).dispatched(t + H).picked_up(t + 2 * H).arrived("HUB-A", t + 3 * H)
    loop.departed(t + 4 * H).arrived("HUB-B", t + 12 * H).departed(t + 13 * H).arrived("HUB-A", t + 20 * H)
    away = sc.parcel("AWAY").paid(t).dispatched(t + H).picked_up(t + 2 * H).arrived("HUB-A", t + 3 * H)
    away.departed(t + 4 * H).arrived("HUB-D", t + 20 * H)  # south, for a northern destination
    south = sc.parcel("SOUTH", dest="south").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H)
    south.departed(4 * H).arrived("HUB-D", 20 * H).departed(22 * H).out_for_delivery(26 * H).delivered(28 * H)
    alerts = sc.run(config=CFG, detectors=("contradiction", "misroute"))
    assert _types(alerts, "LOOP") == ["misroute"]
    assert _types(alerts, "AWAY") == ["misroute"]
    assert [a.evidence["kind"] for a in alerts if a.waybill_id in ("LOOP", "AWAY")] == ["loop", "away"]
    assert all(a.waybill_id in ("LOOP", "AWAY") for a in alerts)  # the lane's own route is normal


def test_contradictions_teleport_and_impossible_sequences() -> None:
    sc = Scenario()
    tele = sc.parcel("TELE").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H).departed(4 * H)
    tele.arrived("HUB-C", 4 * H + 30 * M)  # Shanghai -> Beijing in 30 min
    sc.parcel("EARLY").paid(5 * H).picked_up(2 * H)
    after = sc.parcel("AFTER").paid(0).dispatched(H).picked_up(2 * H).out_for_delivery(30 * H)
    after.delivered(32 * H).out_for_delivery(35 * H)
    alerts = sc.run(detectors=("contradiction",))
    kinds = {a.waybill_id: a.evidence["kind"] for a in alerts}
    assert kinds == {"TELE": "teleport", "EARLY": "before_payment", "AFTER": "after_delivery"}
    assert len(alerts) == 3  # once per parcel


def test_suspicious_delivery_wrong_region_or_no_delivery_run_but_not_a_slightly_late_scan() -> None:
    sc = Scenario()
    for i in range(60):  # this carrier's feed scans its delivery runs
        sc.parcel(f"N{i}").paid(0).picked_up(H).out_for_delivery(10 * H).delivered(12 * H)
    sc.parcel("WRONG").paid(0).picked_up(H).out_for_delivery(20 * H).delivered(22 * H, region="south", node="CUST-S")
    sc.parcel("NOOFD").paid(0).picked_up(H).delivered(22 * H)
    sc.parcel("FINE").paid(0).picked_up(H).out_for_delivery(20 * H).delivered(22 * H)
    events = sc.events()
    # FINE's OUT_FOR_DELIVERY arrives 3 minutes after its DELIVERED (within the allowed lateness)
    ofd = next(e for e in events if e.waybill_id == "FINE" and e.event_type.value == "OUT_FOR_DELIVERY")
    events.remove(ofd)
    events.insert(events.index(next(e for e in events if e.waybill_id == "FINE" and e.event_type.value == "DELIVERED")) + 1, ofd)
    alerts = sc.run(detectors=("suspicious_delivery",), events=events, until=40 * H)
    assert {a.waybill_id: a.evidence["kind"] for a in alerts} == {"WRONG": "wrong_region", "NOOFD": "no_out_for_delivery"}
    noofd = next(a for a in alerts if a.waybill_id == "NOOFD")
    assert noofd.evidence["feed_parcels"] >= 60 and noofd.evidence["feed_ofd_share"] == 1.0


def test_suspicious_delivery_ignores_a_missing_delivery_run_where_the_carrier_feed_never_sends_one() -> None:
    sc = Scenario()
    for i in range(200):  # a milestone-only feed: paid, handed over, delivered
        sc.parcel(f"M{i}").paid(0).picked_up(H).delivered((30 + i % 40) * H)
    assert sc.run(detectors=("suspicious_delivery",), until=100 * H) == []


def test_predicted_late_warns_long_before_the_promise_when_a_parcel_stalls() -> None:
    sc = _warm()
    t = 30 * H
    p = sc.parcel("RISK", deliver_within=80 * H).paid(t).dispatched(t + 2 * H).picked_up(t + 5 * H)
    p.arrived("HUB-A", t + 7 * H).departed(t + 11 * H).arrived("HUB-B", t + 21 * H)
    alerts = sc.run(config=CFG)
    warn = next(a for a in alerts if a.waybill_id == "RISK" and a.alert_type is AnomalyType.PREDICTED_LATE)
    assert warn.predicted_lateness_s is not None and warn.predicted_lateness_s >= 0
    assert warn.promised_delivery_by is not None and warn.promised_delivery_by - warn.detected_at >= 12 * H
    normal = [a for a in alerts if a.alert_type is AnomalyType.PREDICTED_LATE and a.waybill_id != "RISK"]
    assert normal == []


def test_hub_incident_names_the_hub_window_and_parcels_and_its_stalls_link_to_it() -> None:
    sc = Scenario()
    sc.normal(150, seed=5, start_every=15 * M)
    # from hour 52 (the hub's baseline is warm), everything arriving at HUB-B waits 30 h
    for i in range(20):
        t = 52 * H + i * 10 * M
        p = sc.parcel(f"INC{i}", deliver_within=20 * DAY).paid(t - 12 * H).dispatched(t - 10 * H)
        p.picked_up(t - 8 * H).arrived("HUB-A", t - 6 * H).departed(t - 3 * H).arrived("HUB-B", t)
        p.departed(t + 30 * H)
    alerts = sc.run(config=CFG, all_alerts=True)
    inc = [a for a in alerts if a.alert_type is AnomalyType.HUB_INCIDENT]
    assert inc and inc[0].status is AlertStatus.FIRING and inc[0].node_id == "HUB-B"
    assert inc[0].incident_id == inc[0].alert_id
    assert inc[0].window_start is not None and inc[0].window_end is not None
    assert inc[0].window_start <= inc[0].window_end
    assert {f"INC{i}" for i in range(5)} <= set(inc[0].affected_waybills)
    assert all(b.revision > a.revision for a, b in zip(inc, inc[1:], strict=False) if b.status is AlertStatus.FIRING)
    stalls = [a for a in alerts if a.alert_type is AnomalyType.STALL and a.status is AlertStatus.FIRING]
    # the alert service links them (the newest copy of the incident it holds when the stall arrives)
    linked = [link_incident(a, [b for b in inc if b.detected_at <= a.detected_at][-1:]) for a in stalls]
    assert stalls and all(a.incident_id == inc[0].alert_id for a in linked if a.waybill_id.startswith("INC"))


def test_baseline_quantiles_follow_the_data_and_learning_is_protected() -> None:
    b = DurationBaseline((1, 2, 3, 4, 5, 6), min_count=20, clip_factor=1.5)
    for i in range(200):
        b.learn(("k",), 3600 + (i % 10) * 60)
    q = b.quantiles(("k",))
    assert 3300 < q[P50] < 4300 and q[P99] < 5000  # 19 % bins
    for _ in range(20):  # a stuck parcel's three days, repeatedly
        b.learn(("k",), 3 * 86400)
    assert b.quantiles(("k",))[P50] < 4300
    assert b.quantiles(("k",))[P99] < 3 * 86400 / 4
    assert b.survival(("k",), 10) > 0.99 and b.survival(("k",), 20 * 86400) < 1e-3


def test_baseline_export_round_trips_exactly() -> None:
    import msgspec

    b = DurationBaseline((1, 2, 3, 4, 5, 6), min_count=5)
    for i in range(50):
        b.learn(("a", "b"), 100 + i)
    b.quantiles(("a",))
    c = DurationBaseline((1, 2, 3, 4, 5, 6), min_count=5)
    c.load(msgspec.msgpack.decode(msgspec.msgpack.encode(b.export())))
    assert c.hist == b.hist and c.cache == b.cache
    assert c.quantiles(("a",)) == b.quantiles(("a",))


def test_calendar_peak_factor_and_holidays() -> None:
    peak = double_11(2026, factor=2.0)
    cal = Calendar(holidays=frozenset({peak[0] // DAY_MS}), peaks=(peak,))
    assert cal.peak_factor(peak[0]) == 2.0 and cal.peak_factor(peak[1]) == 1.0
    assert cal.extend("any", peak[0] - H, 2 * H) == 2 * H + DAY_MS


@pytest.mark.parametrize("name", ["stall", "predicted_late", "hub_incident"])
def test_knobs_reach_the_detector_constructor(name: str) -> None:
    with pytest.raises(TypeError, match="no_such_knob"):
        Engine(EngineConfig(knobs={name: {"no_such_knob": 1.0}}))


def test_a_knob_changes_the_decision() -> None:
    sc = Scenario()
    sc.parcel("LATE", dispatch_within=24 * H).paid(0).dispatched(27 * H)
    assert len(sc.run(detectors=("late_dispatch",))) == 1
    relaxed = EngineConfig(knobs={"late_dispatch": {"grace_s": 4 * 3600}})
    assert sc.run(config=relaxed, detectors=("late_dispatch",)) == []
