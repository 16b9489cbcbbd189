"""Baseline histograms are compact C-int arrays: same numbers, same exported lists, saturating counts."""

from __future__ import annotations

from array import array

import msgspec

from logiwatch.detectors.baselines import COUNT_MAX, NBINS, DurationBaseline

PRIOR = (30.0, 60.0, 120.0, 600.0, 900.0, 1800.0)


def test_export_is_plain_lists_and_a_round_trip_gives_the_same_quantiles() -> None:
    b = DurationBaseline(PRIOR, min_count=3)
    for s in (100, 110, 120, 130, 5000):
        b.learn(("k",), s)
    b.learn_censored(("k",), 900)
    q = b.quantiles(("k",))
    blob = msgspec.msgpack.encode(b.export())  # lists: msgpack has no array type
    data = msgspec.msgpack.decode(blob)
    assert isinstance(data["hist"]["k"], list) and len(data["hist"]["k"]) == NBINS + 1
    c = DurationBaseline(PRIOR, min_count=3)
    c.load(data)
    assert isinstance(c.hist["k"], array) and c.hist == b.hist and c.cens == b.cens
    assert c.quantiles(("k",)) == q
    # the checkpoint's changed entries are lists too, and load back the same
    changed = msgspec.msgpack.decode(msgspec.msgpack.encode(b.take_changed()))
    d = DurationBaseline(PRIOR, min_count=3)
    d.load_entries(changed)
    assert d.hist == b.hist and d.cens == b.cens


def test_counts_saturate_instead_of_overflowing() -> None:
    b = DurationBaseline(PRIOR, min_count=3)
    b.learn(("k",), 100)
    h = b.hist["k"]
    h[0] = COUNT_MAX - 1
    b.learn(("k",), 100)
    b.learn(("k",), 100)  # would overflow a C int
    b.learn_censored(("k",), 100)
    assert b.hist["k"][0] == COUNT_MAX
    b.merge({"k": [{0: 5}, {}]})
    assert b.hist["k"][0] == COUNT_MAX
    b.merge({"k": [{0: 7}, {}]}, sign=-1)
    assert b.hist["k"][0] == COUNT_MAX - 7
