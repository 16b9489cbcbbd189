"""The reference forecaster of ``bench/late_bound.py``: its Kaplan-Meier estimate and its scoring."""

from __future__ import annotations

import pytest

from logiwatch.bench.late_bound import Parcel, kaplan_meier, score, survival


def test_kaplan_meier_lets_censored_parcels_leave_the_risk_set_only() -> None:
    est = kaplan_meier([(3.0, True), (1.0, True), (2.0, False), (4.0, True)])
    assert survival(est, 0.5) == 1.0
    assert survival(est, 1.0) == pytest.approx(0.75)
    assert survival(est, 2.5) == pytest.approx(0.75)  # the censored one at 2 takes no mass
    assert survival(est, 3.0) == pytest.approx(0.375)  # one of the two still at risk
    assert survival(est, 10.0) == 0.0


def test_a_carrier_whose_slow_parcels_are_late_is_warned_in_time() -> None:
    # 40 parcels take 10 h of a 100 h promise; 10 are never delivered: once a parcel has been
    # silent past every delivery seen, it is late, and there is still > 24 h to the promise
    fast = [Parcel("C", "C|a>b", 0.0, 10.0, 100.0) for _ in range(40)]
    lost = [Parcel("C", "C|a>b", 0.0, None, 100.0) for _ in range(10)]
    warned, true, late = score(fast + lost, 200.0, "in-sample", "promise", 30, 0.8)
    assert (warned, true, late) == (10, 10, 10)
