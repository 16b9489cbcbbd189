"""Predicted-late on parcels already behind their promise: misrouted, dispatched late, or seen in a cold start.

The ordinary traffic (``Scenario.normal``) runs east -> central -> north in ~50 h on a 96 h
promise; each test's parcel falls behind in one way, and the warning must come when the
evidence is there, not once the silence alone has grown long.
"""

from __future__ import annotations

from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import Alert, AnomalyType
from logiwatch.detectors.testing import H, Scenario

CFG = EngineConfig(min_count=10)
DETECTORS = ("misroute", "predicted_late")


def _warning(alerts: list[Alert], waybill: str) -> Alert:
    return next(a for a in alerts if a.waybill_id == waybill and a.alert_type is AnomalyType.PREDICTED_LATE)


def test_a_misrouted_parcel_is_warned_at_the_wrong_scan_counting_its_way_back() -> None:
    sc = Scenario()
    sc.normal(80, seed=3)
    t = 30 * H
    for i in range(3):  # the south's own parcels locate it
        south = sc.parcel(f"SOUTH{i}", dest="south").paid(i * H).dispatched(i * H + H).picked_up(i * H + 2 * H)
        south.arrived("HUB-D", i * H + 20 * H)
    # leaves HUB-A for the south (29 h the wrong way) while its destination is north; it needs
    # about as long back, and ~35 h from HUB-A onwards: ~t + 104 h against a promise at t + 96 h
    p = sc.parcel("DETOUR", deliver_within=96 * H).paid(t).dispatched(t + 2 * H).picked_up(t + 5 * H)
    p.arrived("HUB-A", t + 7 * H).departed(t + 11 * H).arrived("HUB-D", t + 40 * H)
    alerts = sc.run(config=CFG, detectors=DETECTORS)
    misroute = next(a for a in alerts if a.waybill_id == "DETOUR" and a.alert_type is AnomalyType.MISROUTE)
    warn = _warning(alerts, "DETOUR")
    assert warn.detected_at == misroute.detected_at == sc.start_ms + t + 40 * H
    assert warn.evidence["lead_s"] == 56 * 3600
    assert "misrouted 29.0 h off its way" in warn.summary
    assert [a for a in alerts if a.waybill_id.startswith("N")] == []


def test_a_promise_shorter_than_the_lane_takes_is_warned_at_once_from_the_lanes_time_in_seconds() -> None:
    sc = Scenario()
    sc.normal(80, seed=3)
    t = 80 * H  # the lane's parcels (all paid in the first 27 h) are delivered by then
    # the lane takes ~50 h from payment; this order was promised in 36 h. In units of the
    # promise's span the lane's parcels use about half of it, so that unit alone says "on time"
    # until the silence has grown long
    sc.parcel("TIGHT", deliver_within=36 * H).paid(t)
    alerts = sc.run(config=CFG, detectors=("predicted_late",))
    warn = _warning(alerts, "TIGHT")
    assert warn.detected_at == sc.start_ms + t
    assert warn.evidence["remaining_unit"] == "seconds"
    assert warn.evidence["baseline_key"] == "M-1|0|north"
    assert warn.evidence["probability_late"] >= 0.7
    assert warn.evidence["lead_s"] == 36 * 3600


def test_in_a_cold_start_a_silent_parcel_is_looked_at_again_every_recheck_until_a_key_is_trusted() -> None:
    sc = Scenario()
    sc.normal(80, seed=3)
    # paid with the first parcels, so no key is trusted until ~10 of them are delivered (~52 h);
    # silent at HUB-B from hour 21, a ~30 h stage: late, and warnable well before hour 96
    p = sc.parcel("EARLY", deliver_within=96 * H).paid(0).dispatched(2 * H).picked_up(5 * H)
    p.arrived("HUB-A", 7 * H).departed(11 * H).arrived("HUB-B", 21 * H)
    alerts = sc.run(config=CFG, detectors=("predicted_late",))
    warn = _warning(alerts, "EARLY")
    # a back-off (look again after as long as the parcel has been silent) would look at hours
    # 27, 33, 45 and 69, and warn at hour 69 (27 h ahead); every 6 h it looks at 51 and 57 h,
    # when the stage's keys are trusted, and warns where its silence says so (~32 h ahead)
    assert warn.evidence["lead_s"] >= 30 * 3600
