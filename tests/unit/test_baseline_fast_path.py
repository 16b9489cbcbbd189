"""The baselines' fast paths give the very same floats as the straightforward code they replace.

The references below are the readers and the quantile computation as they were before the fast
path (issue 14 item 2): grid constants read off ``GRID``, every bin visited, ``isinf``/``max``
calls. The fast versions are compared bit for bit on random histograms and quantile tuples
(seeded, so a failure repeats).
"""

from __future__ import annotations

import random
import struct
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from math import exp, inf, isinf, isnan, log

from logiwatch.detectors.baselines import (
    GRID,
    LO_LOG2,
    NBINS,
    RES,
    TAIL_POWER,
    DurationBaseline,
    Quantiles,
    expand_prior,
    quantile_at,
    survival_at,
)


def _survival_ref(q: Quantiles, value_s: float) -> float:
    if value_s <= 0:
        return 1.0
    first = q[0]
    if value_s <= first:
        return 1.0 - GRID[0] * value_s / first if first > 0 else 1.0 - GRID[0]
    i = bisect_left(q, value_s)
    if i < len(q):
        hi = q[i]
        if isinf(hi):
            return 1.0 - GRID[i - 1]
        lo = q[i - 1]
        if hi <= lo:
            return 1.0 - GRID[i]
        frac = (log(value_s) - log(lo)) / (log(hi) - log(lo))
        return 1.0 - (GRID[i - 1] + frac * (GRID[i] - GRID[i - 1]))
    return (1.0 - GRID[-1]) * (q[-1] / value_s) ** TAIL_POWER


def _quantile_ref(q: Quantiles, p: float) -> float:
    if p <= GRID[0]:
        return q[0] * max(p, 0.0) / GRID[0]
    i = bisect_left(GRID, p)
    if i >= len(GRID):
        return inf if isinf(q[-1]) else q[-1] * ((1.0 - GRID[-1]) / max(1.0 - p, 1e-12)) ** (1.0 / TAIL_POWER)
    if GRID[i] == p:
        return q[i]
    lo, hi = q[i - 1], q[i]
    if isinf(hi):
        return inf
    frac = (p - GRID[i - 1]) / (GRID[i] - GRID[i - 1])
    return exp(log(lo) + frac * (log(hi) - log(lo))) if lo > 0 else hi * frac


def _compute_ref(h: Sequence[int], cens: Sequence[int] | None) -> list[float]:
    n = h[0]
    out: list[float] = []
    if cens is None:
        targets = [q * n for q in GRID]
        cum = 0.0
        ti = 0
        for b in range(NBINS):
            c = h[1 + b]
            while ti < len(targets) and cum + c >= targets[ti] and c > 0:
                frac = (targets[ti] - cum) / c
                out.append(float(2.0 ** (LO_LOG2 + b / RES + frac / RES)))
                ti += 1
            cum += c
            if ti == len(targets):
                break
        while len(out) < len(targets):
            out.append(float(2.0 ** (LO_LOG2 + NBINS / RES)))
        return out
    at_risk = float(n)
    dead = 0.0
    ti = 0
    for b in range(NBINS):
        d = h[1 + b]
        if d and at_risk > 0:
            after = 1.0 - (1.0 - dead) * (1.0 - d / at_risk)
            while ti < len(GRID) and after >= GRID[ti]:
                frac = (GRID[ti] - dead) / (after - dead)
                out.append(float(2.0 ** (LO_LOG2 + (b + frac) / RES)))
                ti += 1
            dead = after
        at_risk -= d + cens[b]
        if ti == len(GRID):
            break
    while len(out) < len(GRID):
        out.append(inf)
    return out


def _bits(x: float) -> bytes:
    return b"nan" if isnan(x) else struct.pack("<d", x)


def _histogram(rng: random.Random) -> tuple[array[int], array[int] | None]:
    h = array("i", [0] * (NBINS + 1))
    centre, spread = rng.randrange(NBINS), rng.choice((1, 3, 10, 40))
    for _ in range(rng.randrange(1, 300)):
        h[1 + min(NBINS - 1, max(0, int(rng.gauss(centre, spread))))] += rng.choice((1, 1, 2, 9))
    h[0] = sum(h[1:])
    cens = None
    if rng.random() < 0.5:
        cens = array("i", [0] * NBINS)
        for _ in range(rng.randrange(0, 60)):
            cens[rng.randrange(NBINS)] += 1
            h[0] += 1
    return h, cens


def test_quantiles_survival_and_quantile_readers_are_bit_identical_to_the_reference() -> None:
    rng = random.Random(14)
    tuples: list[Quantiles] = [expand_prior((10.0, 20.0, 40.0, 80.0, 100.0, 150.0))]
    for _ in range(3000):
        h, cens = _histogram(rng)
        got, want = DurationBaseline._compute(h, cens), _compute_ref(h, cens)
        assert [_bits(x) for x in got] == [_bits(x) for x in want]
        tuples.append(tuple(got))
        tuples.append(tuple(v * rng.uniform(0.05, 5.0) for v in got))
    for q in tuples:
        finite = [v for v in q if not isinf(v)] or [1.0]
        values = [0.0, -3.0, q[0], q[7], q[-1], finite[-1] * 10, rng.uniform(0.0, 30.0)]
        values += [rng.uniform(0.0, 2.0 * finite[-1]) for _ in range(6)]
        for v in values:
            assert _bits(survival_at(q, v)) == _bits(_survival_ref(q, v)), (q, v)
        ps = [0.0, -0.0, -0.5, 0.004, 0.01, 0.5, 0.999, 0.9995, 1.0, 1.5, *GRID]
        ps += [rng.random() for _ in range(6)] + [1.0 - rng.random() * 1e-3]
        for p in ps:
            assert _bits(quantile_at(q, p)) == _bits(_quantile_ref(q, p)), (q, p)


def test_learning_fast_path_gives_the_same_histograms_as_the_pooled_path() -> None:
    # the pooled path keeps the plain loop; unpooled learning must count exactly as it does
    rng = random.Random(15)
    plain = DurationBaseline((30.0, 60.0, 120.0, 600.0, 900.0, 1800.0), min_count=5)
    pooled = DurationBaseline((30.0, 60.0, 120.0, 600.0, 900.0, 1800.0), min_count=5)
    pooled.pooled = True
    chains = [("a", "b", "c"), ("a", "d"), ("e",), ("b", "e", "f")]
    for _ in range(5000):
        keys, v = rng.choice(chains), rng.choice((rng.expovariate(1 / 300), rng.uniform(0, 8), 1e6, -1.0))
        if rng.random() < 0.1:
            plain.learn_censored(keys, v)
            pooled.learn_censored(keys, v)
        else:
            plain.learn(keys, v)
            pooled.learn(keys, v)
        if rng.random() < 0.2:
            assert plain.warm_quantiles(keys) == pooled.warm_quantiles(keys)
    assert plain.hist == pooled.hist and plain.cache == pooled.cache and plain.cens == pooled.cens
