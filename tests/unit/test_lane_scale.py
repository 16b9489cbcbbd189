"""A warm parent's distribution moved to where a cold lane's few parcels lie (predicted_late on day promises)."""

from __future__ import annotations

import pytest

from logiwatch.detectors.baselines import P50, DurationBaseline

CHAIN = ("lane", "carrier")


def _baseline() -> DurationBaseline:
    b = DurationBaseline((10.0, 20.0, 40.0, 80.0, 100.0, 150.0), min_count=30)
    for i in range(200):  # the carrier: medians around 1,000 s
        b.learn(("carrier",), 800.0 + i * 2)
    return b


def test_a_warm_first_key_is_not_scaled() -> None:
    b = _baseline()
    got = b.scaled_warm_quantiles(("carrier",), 10.0)
    assert got is not None and got[1] == 1.0
    assert got[0] == b.warm_quantiles(("carrier",))


def test_a_cold_lane_moves_the_parent_by_its_median_shrunk_by_its_count() -> None:
    b = _baseline()
    parent = b.warm_quantiles(CHAIN)
    assert parent is not None
    for _ in range(10):  # ten parcels of a lane four times faster than the carrier
        b.learn(("lane",), 250.0)
    q10, f10 = b.scaled_warm_quantiles(CHAIN, 10.0) or ((), 0.0)
    # half trusted (10 of 10 + 10): the median moves half way in log scale, about 2x faster
    assert 0.4 < f10 < 0.6
    assert q10[P50] == pytest.approx(parent[P50] * f10)
    for _ in range(19):
        b.learn(("lane",), 250.0)
    _, f29 = b.scaled_warm_quantiles(CHAIN, 10.0) or ((), 0.0)
    assert f29 < f10  # more parcels of its own: trusted more


def test_no_warm_key_gives_none_and_a_restore_gives_the_same_factor() -> None:
    b = DurationBaseline((10.0, 20.0, 40.0, 80.0, 100.0, 150.0), min_count=30)
    b.learn(("lane", "carrier"), 5.0)
    assert b.scaled_warm_quantiles(CHAIN, 10.0) is None
    b = _baseline()
    for _ in range(5):
        b.learn_censored(("lane",), 5000.0)  # censored "at least" values count at their bin
    c = DurationBaseline((10.0, 20.0, 40.0, 80.0, 100.0, 150.0), min_count=30)
    c.load(b.export())
    assert c.scaled_warm_quantiles(CHAIN, 10.0) == b.scaled_warm_quantiles(CHAIN, 10.0)
    assert (b.scaled_warm_quantiles(CHAIN, 10.0) or ((), 0.0))[1] > 1.0
