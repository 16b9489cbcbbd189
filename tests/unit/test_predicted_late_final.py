"""Warnings in the promise's last day are calibrated per carrier, like the early ones.

A last-day warning cannot give the day of lead CS needs to act, and on a milestone feed the
model's tail is least known just there (a parcel silent for two days is either a normal weekend
parcel or a held one): so within ``final_h`` of the promise a chance reaching
``late_probability`` warns only where the carrier's past such warnings (in the same band of
chance) were right ``final_precision`` of the time, or while none of their outcomes are known;
otherwise the broken promise itself says it.

The traffic is the hand-over feed of ``test_predicted_late_unit`` (parcels need ~60 h from the
hand-over); ``last_call_s`` and ``final_h`` are 60 h here, so that a parcel handed over with 50 h
left is judged at its hand-over, in its last "day".
"""

from __future__ import annotations

import re

import pytest

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import Alert, AnomalyType
from logiwatch.detectors.testing import H, Scenario
from tests.unit.test_predicted_late_unit import hand_over_traffic

KNOBS = {"last_call_s": 60 * 3600.0, "final_h": 60.0}


def _warnings(sc: Scenario, **knobs: float) -> dict[str, Alert]:
    cfg = EngineConfig(min_count=10, knobs={"predicted_late": {**KNOBS, **knobs}})
    alerts = sc.run(config=cfg, detectors=("predicted_late",))
    return {str(a.waybill_id): a for a in alerts if a.alert_type is AnomalyType.PREDICTED_LATE}


def _decoys(sc: Scenario, delivered: bool) -> None:
    """Eight parcels handed over with 50 h of a 120 h promise left (the model says late), 20 h apart.

    Each one's outcome is known 40 h after its hand-over: by the eighth's, five are known.
    """

    for i in range(8):
        t = 150 * H + i * 20 * H
        p = sc.parcel(f"D{i}", dest=f"d{i % 8}", deliver_within=120 * H).paid(t).picked_up(t + 70 * H)
        if delivered:
            p.delivered(t + 110 * H)  # on time after all


def _traffic(decoys_delivered: bool) -> Scenario:
    """The hand-over feed, the decoys, and a late parcel handed over with 48 h left once they are known."""

    sc = Scenario()
    hand_over_traffic(sc)
    _decoys(sc, decoys_delivered)
    t = 400 * H  # every decoy's outcome is known by then
    sc.parcel("LATE", dest="d3", deliver_within=120 * H).paid(t).picked_up(t + 72 * H)
    return sc


def test_a_carrier_whose_last_day_warnings_were_wrong_waits_for_the_promise() -> None:
    sc = _traffic(decoys_delivered=True)
    got = _warnings(sc)
    # the first decoys warned (nothing known yet), the last no longer (five were wrong)
    assert {"D0", "D1", "D2"} <= set(got)
    assert "D7" not in got
    warn = got["LATE"]
    assert warn.evidence["lead_s"] == 0
    assert "the promise has passed" in warn.summary


def test_a_carrier_whose_last_day_warnings_were_right_is_warned_at_the_hand_over() -> None:
    sc = _traffic(decoys_delivered=False)
    warn = _warnings(sc)["LATE"]
    assert warn.evidence["lead_s"] == 48 * 3600  # at the hand-over
    assert "such last-day warnings" in warn.summary


def test_final_h_zero_is_the_old_behaviour() -> None:
    sc = _traffic(decoys_delivered=True)
    got = _warnings(sc, final_h=0.0)
    assert {f"D{i}" for i in range(8)} <= set(got)
    assert got["LATE"].evidence["lead_s"] == 48 * 3600


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("final_h", -1.0, "final_h must be >= 0"),
        ("final_precision", 1.5, "final_precision must be in [0, 1]"),
    ],
)
def test_bad_final_knobs_are_refused(knob: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Engine(EngineConfig(knobs={"predicted_late": {knob: value}}))
