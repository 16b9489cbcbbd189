"""Predicted-late measures remaining time in the promise's whole span, so a late hand-over shows at once.

The carrier's feed starts at the hand-over (picked up, delivered) over eight lanes whose own keys
stay too young to decide (five parcels each against ``min_count`` 10): only the carrier's
distribution, in the promise's unit, speaks. Its parcels need ~60 h from the hand-over on a
promise 108 h after it. One parcel's payment is in the feed too (a merchant's order joined to the
carrier's scans), and it is handed over 72 h after it on a 120 h promise: it still needs the
lane's ~60 h and has 48 h left, so it is late, and the hand-over is the scan that shows it.
Measured in the span the promise had left at the scan (the unit before 2026-12-03), the same
~60 h looked like a share of those 48 h, and nothing warned before the silence grew long.
"""

from __future__ import annotations

import random

from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import AnomalyType
from logiwatch.detectors.predicted_late import promise_unit_ms
from logiwatch.detectors.state import ParcelState
from logiwatch.detectors.testing import H, Scenario

CFG = EngineConfig(min_count=10)


def hand_over_traffic(sc: Scenario, n: int = 40) -> None:
    rng = random.Random(7)
    for i in range(n):
        pickup = i * H
        delivered = pickup + int(60 * H * rng.lognormvariate(0.0, 0.12))
        sc.parcel(f"N{i}", dest=f"d{i % 8}", deliver_within=108 * H).picked_up(pickup).delivered(delivered)


def test_a_parcel_handed_over_late_is_warned_at_the_hand_over() -> None:
    sc = Scenario()
    hand_over_traffic(sc)
    t = 150 * H  # every ordinary parcel is delivered by then
    sc.parcel("LATE", dest="d3", deliver_within=120 * H).paid(t).picked_up(t + 72 * H)
    alerts = sc.run(config=CFG, detectors=("predicted_late",))
    warnings = [a for a in alerts if a.alert_type is AnomalyType.PREDICTED_LATE]
    assert [a.waybill_id for a in warnings] == ["LATE"]
    warn = warnings[0]
    assert warn.detected_at == sc.start_ms + t + 72 * H
    assert warn.evidence["lead_s"] == 48 * 3600
    assert warn.evidence["remaining_unit"] == "promise"
    assert warn.evidence["baseline_key"] == "C1|2"
    assert warn.evidence["probability_late"] >= 0.9


def test_a_parcel_handed_over_on_time_is_not_warned() -> None:
    sc = Scenario()
    hand_over_traffic(sc)
    t = 150 * H
    sc.parcel("ONTIME", dest="d3", deliver_within=120 * H).paid(t).picked_up(t + 12 * H).delivered(t + 75 * H)
    alerts = sc.run(config=CFG, detectors=("predicted_late",))
    assert [a for a in alerts if a.alert_type is AnomalyType.PREDICTED_LATE] == []


def test_the_unit_is_the_span_from_the_first_scan_to_the_promise() -> None:
    state = ParcelState("W", "O", "M", "C", "books", 1.0, "east", "north", 0, 0)
    assert promise_unit_ms(state, 100, 40) == 60  # no scan yet: what the promise leaves
    state.route.append((10, 0, "M-1", "east"))
    assert promise_unit_ms(state, 100, 40) == 90
    assert promise_unit_ms(state, 100, 5) == 95  # a scan older than the first one known
    assert promise_unit_ms(state, 100, 100) == 90
    assert promise_unit_ms(state, 10, 10) == 1  # never zero
