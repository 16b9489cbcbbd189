"""predicted-late learns how often a parcel that stalled (was misrouted, had an abnormal leg) was late.

The outcome of every such alert is counted per alert type, carrier and hours left to the promise
when it fired; once a handful of parcels show that a stall with that much time left usually ends
late, the next one warns at the stall itself, days before the promise. Where such stalls ended on
time, it does not.
"""

from __future__ import annotations

from logiwatch.detectors.model import Alert
from logiwatch.detectors.testing import H, Scenario

DETECTORS = ("stall", "predicted_late")


def _scenario(stalled_ones_late: bool) -> Scenario:
    sc = Scenario()
    for i in range(40):  # HUB-A's normal dwell is 2 h
        _ = sc.parcel(f"N{i}", deliver_within=200 * H).paid(0).dispatched(H).picked_up(2 * H) \
            .arrived("HUB-A", 3 * H).departed(5 * H).delivered(20 * H)
    for i in range(8):  # each stalls at HUB-A ~40 h before its promise
        t0 = (30 + i * 100) * H
        end = t0 + (70 if stalled_ones_late else 40) * H
        _ = sc.parcel(f"S{i}", deliver_within=52 * H).paid(t0).dispatched(t0 + H).picked_up(t0 + 2 * H) \
            .arrived("HUB-A", t0 + 3 * H).departed(end - 2 * H).delivered(end)
    t0 = 1000 * H
    _ = sc.parcel("WB1", deliver_within=52 * H).paid(t0).dispatched(t0 + H).picked_up(t0 + 2 * H) \
        .arrived("HUB-A", t0 + 3 * H)
    return sc


def _first(alerts: list[Alert], typ: str) -> Alert | None:
    return next((a for a in alerts if a.waybill_id == "WB1" and a.alert_type.value == typ), None)


def test_a_stall_like_those_that_ended_late_warns_at_once() -> None:
    alerts = _scenario(stalled_ones_late=True).run(detectors=DETECTORS, until=1100 * H)
    stall, late = _first(alerts, "stall"), _first(alerts, "predicted_late")
    assert stall is not None and late is not None
    assert late.detected_at == stall.detected_at
    assert str(late.evidence["baseline_key"]).startswith("stall|")
    assert late.evidence["baseline_n"] == 8
    assert late.evidence["lead_s"] >= 24 * 3600


def test_stalls_that_ended_on_time_do_not_warn_at_the_stall() -> None:
    alerts = _scenario(stalled_ones_late=False).run(detectors=DETECTORS, until=1100 * H)
    stall, late = _first(alerts, "stall"), _first(alerts, "predicted_late")
    assert stall is not None
    assert late is None or not str(late.evidence["baseline_key"]).startswith("stall|")
