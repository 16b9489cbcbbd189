"""Early warnings (more than ``last_call_s`` before the promise) are calibrated per carrier.

A calibrated chance of 0.7 days ahead is wrong three times in ten even where the model is right,
and on a milestone feed it is wrong far more often (a slow lane's normal parcel looks like a held
one), while waiting tells more: a parcel not delivered a day before its promise is usually late.
So a chance reaching ``late_probability`` warns early only where the carrier's past early warnings
(as many hours before their promise) were right ``early_precision`` of the time; while none of
their outcomes are known, only within ``early_cold_h`` of the promise; else at the last call.

The traffic is the hand-over feed of ``test_predicted_late_unit``: parcels need ~60 h from the
hand-over on a promise 108 h after it.
"""

from __future__ import annotations

import re

import pytest

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import Alert, AnomalyType
from logiwatch.detectors.testing import H, Scenario
from tests.unit.test_predicted_late_unit import hand_over_traffic

CFG = EngineConfig(min_count=10)


def _decoys(sc: Scenario, at: int, n: int = 8) -> None:
    """Parcels handed over with 50 h of a 120 h promise left (the model says late), all on time."""

    for i in range(n):
        t = at + i * 6 * H
        sc.parcel(f"D{i}", dest=f"d{i % 8}", deliver_within=120 * H).paid(t).picked_up(t + 70 * H).delivered(t + 110 * H)


def _warnings(sc: Scenario) -> dict[str, Alert]:
    alerts = sc.run(config=CFG, detectors=("predicted_late",))
    return {str(a.waybill_id): a for a in alerts if a.alert_type is AnomalyType.PREDICTED_LATE}


def _late_parcel(sc: Scenario, t: int, left_h: int, promise_h: int = 120) -> None:
    """Paid at ``t``, handed over with ``left_h`` of its promise left and never delivered.

    The model's unit is the promise's span: on a 120 h promise the ~60 h transit is half of it,
    so with 48 h left the parcel is late; on a 300 h one with 100 h left, likewise.
    """

    sc.parcel("LATE", dest="d3", deliver_within=promise_h * H).paid(t).picked_up(t + (promise_h - left_h) * H)


def test_a_carrier_whose_early_warnings_were_wrong_is_warned_at_the_last_call() -> None:
    sc = Scenario()
    hand_over_traffic(sc)
    _decoys(sc, 150 * H)
    t = 400 * H  # every decoy is delivered by then: their outcomes are known
    _late_parcel(sc, t, left_h=48)
    got = _warnings(sc)
    # the decoys warned early (nothing known yet, within early_cold_h) and were on time
    assert {f"D{i}" for i in range(8)} <= set(got)
    warn = got["LATE"]
    assert warn.evidence["lead_s"] == 30 * 3600  # the last call, not the hand-over 48 h before
    assert float(str(warn.evidence["probability_late"])) >= 0.7


def test_a_carrier_whose_early_warnings_were_right_is_warned_at_the_hand_over() -> None:
    sc = Scenario()
    hand_over_traffic(sc)
    # the decoys' twins, never delivered: early warnings of this carrier are right
    for i in range(8):
        t = 150 * H + i * 6 * H
        sc.parcel(f"D{i}", dest=f"d{i % 8}", deliver_within=120 * H).paid(t).picked_up(t + 70 * H)
    t = 400 * H
    _late_parcel(sc, t, left_h=100, promise_h=300)  # farther ahead than early_cold_h: only calibration allows it
    got = _warnings(sc)
    warn = got["LATE"]
    assert warn.detected_at == sc.start_ms + t + 200 * H  # at the hand-over
    assert "such early warnings" in warn.summary


@pytest.mark.parametrize(("z", "lead_h"), [(0.0, 100), (1.0, 30)])
def test_a_few_outcomes_barely_right_decide_only_without_the_confidence_margin(z: float, lead_h: int) -> None:
    sc = Scenario()
    hand_over_traffic(sc)
    # six of the decoys' kind: five never delivered, one on time; (5 + 1) / (6 + 2) = 0.75
    for i in range(6):
        t = 150 * H + i * 6 * H
        p = sc.parcel(f"D{i}", dest=f"d{i % 8}", deliver_within=120 * H).paid(t).picked_up(t + 70 * H)
        if i == 0:
            p.delivered(t + 110 * H)
    t = 400 * H
    _late_parcel(sc, t, left_h=100, promise_h=300)
    cfg = EngineConfig(min_count=10, knobs={"predicted_late": {"early_confidence_z": z}})
    alerts = sc.run(config=cfg, detectors=("predicted_late",))
    warn = next(a for a in alerts if a.waybill_id == "LATE" and a.alert_type is AnomalyType.PREDICTED_LATE)
    assert warn.evidence["lead_s"] == lead_h * 3600  # at the hand-over, or only at the last call


def test_with_no_outcomes_known_an_early_warning_waits_for_early_cold_h() -> None:
    sc = Scenario()
    hand_over_traffic(sc)
    t = 150 * H
    _late_parcel(sc, t, left_h=100, promise_h=300)
    warn = _warnings(sc)["LATE"]
    assert warn.evidence["lead_s"] == 72 * 3600
    assert "no outcomes of such warnings known yet" in warn.summary


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("early_precision", 0.0, "early_precision must be in (0, 1]"),
        ("early_precision", 1.5, "early_precision must be in (0, 1]"),
        ("early_min_n", 0, "early_min_n must be >= 1"),
        ("early_cold_h", -1.0, "early_cold_h must be >= 0"),
        ("last_call_s", -1.0, "last_call_s must be >= 0"),
        ("early_confidence_z", -0.5, "early_confidence_z must be >= 0"),
    ],
)
def test_bad_early_knobs_are_refused(knob: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Engine(EngineConfig(knobs={"predicted_late": {knob: value}}))
