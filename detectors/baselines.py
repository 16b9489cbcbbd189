"""Online duration baselines: log-scale histograms keyed per node, lane, carrier or merchant.

A baseline answers "how long does this usually take here?" with quantiles and
a survival probability, learned one observation at a time and never per
parcel. Each key keeps a fixed log2-spaced histogram (sufficient statistics:
a few dozen integers), so quantiles are cheap, state round-trips exactly
through msgpack, and memory is bounded by the number of keys. Cold keys fall
back along a hierarchy (e.g. node+type+carrier+hour -> node+type -> type ->
prior) until they hold ``min_count`` observations. Learning is protected:
once a key is warm, an observation is clipped to ``clip_factor`` times its
current p99, and callers record a parcel they flagged as anomalous as
*censored* ("it waited at least this long", ``learn_censored``) instead of
its exact duration, so a stuck parcel's three-day dwell cannot stretch the
hub's normal, and yet protection does not turn into selection bias toward
fast parcels: the quantiles are Kaplan-Meier estimates over the histogram
bins (a censored observation is at risk up to its bin, then leaves without
an event). A quantile the data cannot pin down (more observations censored
above it than its tail allows) is ``inf``: "longer than anything seen", and
callers treat the key as not trusted for that quantile. Durations from
seconds to ~97 days share one log-scale histogram. Scoring is separate from
deciding: this module only gives numbers; detectors' knobs decide.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from math import exp, inf, log, log2
from statistics import NormalDist
from typing import TypeVar

#: Histogram range: 2**LO_LOG2 s (8 s) .. 2**(LO_LOG2 + NBINS/RES) s (about 97 days).
LO_LOG2 = 3.0
RES = 4  # bins per doubling: 19 % resolution
NBINS = 80
#: A key's histogram and censored bins are compact arrays of C ints (388 bytes for a histogram
#: against 704 as a list of Python ints, more once bins pass 256): a network holds tens of
#: thousands of keys per engine, and pooled learning holds the whole topic's keys in every
#: partition's engine. Counts saturate at ``COUNT_MAX`` (a key that has seen two billion
#: observations learns nothing more from the next) instead of overflowing.
COUNT_MAX = 2**31 - 1
_ZERO_HIST = array("i", [0] * (NBINS + 1))
_ZERO_CENS = array("i", [0] * NBINS)
#: the probabilities every key's quantiles are kept at (a survival curve on a fixed grid)
GRID = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
_QUANTILES = GRID
#: indexes into a quantile tuple
P01, P05, P10, P20, P30, P40, P50, P60, P70, P80, P90, P95, P98, P99, P995, P999 = range(len(GRID))
#: entries a detector's memo of baseline key chains holds before it starts over: building the
#: chain's strings on every scan cost more than looking it up (the memo is bounded by the network's
#: nodes, not by parcels, but a cap keeps a huge network from growing it without end)
KEY_MEMO_MAX = 50_000
Quantiles = tuple[float, ...]
#: beyond the highest grid quantile the survival falls as value**-TAIL_POWER: steep enough that a
#: duration past everything seen is not read as "half of them take twice as long" (a 1/value
#: tail made a young key predict P(late) = 0.5 at half the promise)
TAIL_POWER = 3.0
#: where the six-value priors sit on the grid
_PRIOR_P = (0.05, 0.2, 0.5, 0.9, 0.95, 0.99)
#: tables for the readers of a quantile tuple: ``1 - GRID[i]``, ``GRID[i] - GRID[i - 1]`` (0 at
#: 0), the first grid point, the grid's length and the tail's root, each as the readers computed them
_SURV = tuple(1.0 - g for g in GRID)
_GDIFF = (0.0, *(GRID[i] - GRID[i - 1] for i in range(1, len(GRID))))
_G0 = GRID[0]
_NGRID = len(GRID)
_INV_TAIL = 1.0 / TAIL_POWER


K = TypeVar("K")
V = TypeVar("V")


class KeyMemo(dict[K, V]):
    """A detector's memo of baseline key chains, bounded by ``KEY_MEMO_MAX`` (it starts over when full).

    Lookups are the plain ``dict.get``; only a miss builds the chain and calls ``remember``.

    >>> memo: KeyMemo[tuple[str, int], tuple[str, str]] = KeyMemo()
    >>> memo.get(("n1", 2)) is None and memo.remember(("n1", 2), ("n1|2", "2")) == ("n1|2", "2")
    True
    >>> memo[("n1", 2)]
    ('n1|2', '2')
    """

    def remember(self, key: K, keys: V) -> V:
        if len(self) >= KEY_MEMO_MAX:
            self.clear()
        self[key] = keys
        return keys


def _bin(value_s: float) -> int:
    if value_s <= 8.0:
        return 0
    b = int((log2(value_s) - LO_LOG2) * RES)
    return b if b < NBINS else NBINS - 1


def _bin_lo(b: int) -> float:
    return float(2.0 ** (LO_LOG2 + b / RES))


#: the top of the histogram's range: the quantiles a histogram never reaches
_TOP = _bin_lo(NBINS)


def expand_prior(six: Sequence[float]) -> Quantiles:
    """A six-value prior (p05, p20, p50, p90, p95, p99) spread onto ``GRID`` (log-normal in between).

    >>> q = expand_prior((10.0, 20.0, 40.0, 80.0, 100.0, 150.0))
    >>> q[P05], q[P50], q[P99]
    (10.0, 40.0, 150.0)
    """

    nd = NormalDist()
    zs = [nd.inv_cdf(p) for p in _PRIOR_P]
    logs = [log(max(v, 1e-9)) for v in six]
    out: list[float] = []
    for p in GRID:
        if p in _PRIOR_P:
            out.append(float(six[_PRIOR_P.index(p)]))
            continue
        z = nd.inv_cdf(p)
        i = min(max(bisect_left(zs, z), 1), len(zs) - 1)
        slope = (logs[i] - logs[i - 1]) / (zs[i] - zs[i - 1])
        out.append(exp(logs[i - 1] + slope * (z - zs[i - 1])))
    return tuple(out)


def survival_at(q: Quantiles, value_s: float) -> float:
    """P(duration > value_s) read off a quantile tuple (log-linear between grid points).

    Below the first grid point the share falls linearly to 0; beyond the last grid point the
    tail decays as value**-TAIL_POWER (an ``inf`` quantile means the data has not seen that
    far: the survival stays at the last known level).

    >>> q = expand_prior((10.0, 20.0, 40.0, 80.0, 100.0, 150.0))
    >>> survival_at(q, 40.0)
    0.5
    >>> survival_at(q, 1e9) < 1e-6
    True
    """

    # the hot path of predicted-late (several calls per scan): the grid's sums and differences
    # come from tables built with the same float operations, so the results are the same bits
    if value_s <= 0:
        return 1.0
    first = q[0]
    if value_s <= first:
        return 1.0 - _G0 * value_s / first if first > 0 else _SURV[0]
    i = bisect_left(q, value_s)  # q ascends (inf last): the first grid point >= value_s
    if i < len(q):
        hi = q[i]
        if hi == inf:  # hi >= value_s > 0: never -inf
            return _SURV[i - 1]
        lo = q[i - 1]
        if hi <= lo:
            return _SURV[i]
        log_lo = log(lo)
        frac = (log(value_s) - log_lo) / (log(hi) - log_lo)
        return 1.0 - (GRID[i - 1] + frac * _GDIFF[i])
    return _SURV[-1] * (q[-1] / value_s) ** TAIL_POWER


def quantile_at(q: Quantiles, p: float) -> float:
    """The duration with P(duration <= it) = p, read off a quantile tuple (``inf`` beyond what is known).

    >>> q = expand_prior((10.0, 20.0, 40.0, 80.0, 100.0, 150.0))
    >>> quantile_at(q, 0.5), round(quantile_at(q, 0.25))
    (40.0, 23)
    """

    # ``a if b > a else b`` below is ``max(a, b)`` as Python computes it (zero signs and NaN too)
    if p <= _G0:
        return q[0] * (0.0 if 0.0 > p else p) / _G0
    i = bisect_left(GRID, p)
    if i >= _NGRID:
        last = q[-1]
        if last == inf:
            return inf
        rest = 1.0 - p
        return last * (_SURV[-1] / (1e-12 if 1e-12 > rest else rest)) ** _INV_TAIL
    if GRID[i] == p:
        return q[i]
    hi = q[i]
    if hi == inf:
        return inf
    lo = q[i - 1]
    frac = (p - GRID[i - 1]) / _GDIFF[i]
    if lo > 0:
        log_lo = log(lo)
        return exp(log_lo + frac * (log(hi) - log_lo))
    return hi * frac


class DurationBaseline:
    """A family of keyed duration histograms with cached quantiles.

    ``prior`` gives (p05, p20, p50, p90, p95, p99) seconds (spread onto ``GRID``)
    used when no key in the fallback chain is warm.

    >>> b = DurationBaseline(prior=(30.0, 60.0, 120.0, 600.0, 900.0, 1800.0), min_count=3)
    >>> for s in (100, 110, 120, 130): b.learn(("n1",), s)
    >>> round(b.quantiles(("n1",))[P50] / 100)
    1
    >>> b.quantiles(("cold",))[P99]
    1800.0

    Censored observations (parcels alerted while still waiting) keep the tail open:

    >>> k = DurationBaseline(prior=(30.0, 60.0, 120.0, 600.0, 900.0, 1800.0), min_count=3)
    >>> for s in (100, 110, 120, 130): k.learn(("n1",), s)
    >>> for _ in range(4): k.learn_censored(("n1",), 500)
    >>> q = k.quantiles(("n1",))
    >>> round(q[P20] / 100), q[P90]
    (1, inf)
    """

    __slots__ = (
        "prior", "min_count", "clip_factor", "hist", "cens", "cache", "_fast", "_medians", "changed", "pooled", "delta"
    )

    def __init__(self, prior: Sequence[float], *, min_count: int = 30, clip_factor: float = 3.0) -> None:
        self.prior = expand_prior(prior) if len(prior) == len(_PRIOR_P) else tuple(float(x) for x in prior)
        if len(self.prior) != len(GRID):
            raise ValueError(f"a prior has {len(_PRIOR_P)} or {len(GRID)} values, got {len(prior)}")
        self.min_count = min_count
        self.clip_factor = clip_factor
        #: key -> [count, bin0, bin1, ...]; ``count`` includes the censored observations
        self.hist: dict[str, array[int]] = {}
        #: key -> censored observations per bin (only keys that have any)
        self.cens: dict[str, array[int]] = {}
        #: key -> (count at computation, p20, p50, p90, p95, p99); part of the exported state
        #: so a restored engine gives the very same numbers.
        self.cache: dict[str, list[float]] = {}
        #: key -> (count that triggers a refresh, quantiles tuple, learning clip cap, the cap's
        #: histogram index), derived from ``cache`` and not exported: the hot paths read one entry
        #: and build nothing
        self._fast: dict[str, tuple[float, Quantiles, float, int]] = {}
        #: key -> (count, log2 median) at that count, derived (``log2_median``), not exported
        self._medians: dict[str, tuple[int, float]] = {}
        #: keys whose histogram or cache changed since the last ``take_changed`` (a checkpoint
        #: writes only those: most keys of a large network are idle in any one second)
        self.changed: set[str] = set()
        #: learning shared across partitions (``detectors/pool.py``): when on, every observation is
        #: also counted in ``delta`` (key -> [histogram, censored bins]) until the pool takes it
        self.pooled = False
        self.delta: dict[str, list[dict[int, int]]] = {}

    def _delta(self, key: str) -> list[dict[int, int]]:
        d = self.delta.get(key)
        if d is None:
            d = self.delta[key] = [{}, {}]
        return d

    def merge(self, entries: dict[str, list[dict[int, int]]], sign: int = 1) -> None:
        """Add (``sign`` -1: take away) ``delta`` entries to the histograms, not to ``delta``.

        An entry is ``[{histogram index: count}, {censored bin: count}]`` (index 0 is the total).
        """

        for key, (h_add, c_add) in entries.items():
            h = self.hist.get(key)
            if h is None:
                h = self.hist[key] = _ZERO_HIST[:]
            for i, n in h_add.items():
                h[i] = min(COUNT_MAX, max(0, h[i] + sign * n))
            if c_add:
                c = self.cens.get(key)
                if c is None:
                    c = self.cens[key] = _ZERO_CENS[:]
                for i, n in c_add.items():
                    c[i] = min(COUNT_MAX, max(0, c[i] + sign * n))
            self._medians.pop(key, None)
            self.changed.add(key)

    def learn(self, keys: Sequence[str], value_s: float) -> None:
        """Add one observation to every key of the chain (clipped where warm)."""

        if value_s < 0:
            return
        if self.pooled:
            self._learn_pooled(keys, value_s)
            return
        hist = self.hist
        fast = self._fast
        min_count = self.min_count
        # a key this full is warm or saturated (with ``min_count`` past COUNT_MAX: saturated only)
        full = min_count if min_count < COUNT_MAX else COUNT_MAX
        if value_s <= 8.0:  # 1 + _bin(value_s), inline: the same value for every key unless a key clips it
            b = 1
        else:
            b = int((log2(value_s) - LO_LOG2) * RES)
            b = b + 1 if b < NBINS else NBINS
        self.changed.update(keys)
        for key in keys:
            h = hist.get(key)
            if h is None:
                h = hist[key] = _ZERO_HIST[:]
                h[0] = 1
                h[b] = 1
                continue
            n = h[0]  # read once: a count past 256 is a new int object at every read of the array
            if n >= full:
                if n >= COUNT_MAX:
                    continue  # saturated (see COUNT_MAX)
                # clip against the last computed p99 (refreshed by queries), so learning stays cheap
                f = fast.get(key)
                if f is None:
                    q = self.cache.get(key)
                    if q is not None:
                        f = self._derive(key, q)
                if f is not None and value_s > f[2]:
                    h[0] = n + 1
                    h[f[3]] += 1
                    continue
            h[0] = n + 1
            h[b] += 1

    def _learn_pooled(self, keys: Sequence[str], value_s: float) -> None:
        """``learn`` while pooled: every observation is also counted in ``delta``."""

        hist = self.hist
        fast = self._fast
        min_count = self.min_count
        b = 1 + _bin(value_s)  # the same value for every key unless a key clips it
        self.changed.update(keys)
        for key in keys:
            h = hist.get(key)
            if h is None:
                h = _ZERO_HIST[:]
                hist[key] = h
            elif h[0] >= COUNT_MAX:
                continue  # saturated (see COUNT_MAX)
            elif h[0] >= min_count:
                f = fast.get(key)
                if f is None and key in self.cache:
                    f = self._derive(key, self.cache[key])
                if f is not None and value_s > f[2]:
                    h[0] += 1
                    h[f[3]] += 1
                    d = self._delta(key)[0]
                    d[0] = d.get(0, 0) + 1
                    d[f[3]] = d.get(f[3], 0) + 1
                    continue
            h[0] += 1
            h[b] += 1
            d = self._delta(key)[0]
            d[0] = d.get(0, 0) + 1
            d[b] = d.get(b, 0) + 1

    def learn_censored(self, keys: Sequence[str], value_s: float) -> None:
        """Add "lasted at least ``value_s``" to every key of the chain (Kaplan-Meier censoring)."""

        if value_s < 0:
            return
        b = _bin(value_s)
        self.changed.update(keys)
        for key in keys:
            h = self.hist.get(key)
            if h is None:
                h = self.hist[key] = _ZERO_HIST[:]
            elif h[0] >= COUNT_MAX:
                continue  # saturated (see COUNT_MAX)
            h[0] += 1
            c = self.cens.get(key)
            if c is None:
                c = self.cens[key] = _ZERO_CENS[:]
            c[b] += 1
            if self.pooled:
                d = self._delta(key)
                d[0][0] = d[0].get(0, 0) + 1
                d[1][b] = d[1].get(b, 0) + 1

    def count(self, key: str) -> int:
        h = self.hist.get(key)
        return h[0] if h else 0

    def quantiles(self, keys: Sequence[str]) -> Quantiles:
        """(p05, p20, p50, p90, p95, p99) of the first warm key in the chain, else the prior."""

        q = self.warm_quantiles(keys)
        if q is not None:
            return q
        return self.prior

    def warm_quantiles(self, keys: Sequence[str]) -> Quantiles | None:
        """Like ``quantiles`` but None when no key of the chain is warm (instead of the prior)."""

        hist = self.hist
        min_count = self.min_count
        for key in keys:
            h = hist.get(key)
            if h is not None and h[0] >= min_count:
                f = self._fast.get(key)
                if f is None or h[0] >= f[0]:
                    f = self._refresh(key, h)
                return f[1]
        return None

    def log2_median(self, key: str) -> tuple[int, float] | None:
        """(observations, log2 of their median), censored ones at their bin; None for an unseen key.

        Defined for a cold key too: a few observations already say where a lane lies against its
        parent (``scaled_warm_quantiles``), long before they can say what its tail looks like.
        """

        h = self.hist.get(key)
        if h is None or h[0] <= 0:
            return None
        memo = self._medians.get(key)
        if memo is not None and memo[0] == h[0]:
            return memo
        c = self.cens.get(key)
        half = h[0] / 2
        cum = 0
        b = 0
        for b in range(NBINS):
            cum += h[1 + b] + (c[b] if c is not None else 0)
            if cum >= half:
                break
        memo = self._medians[key] = (h[0], LO_LOG2 + (b + 0.5) / RES)
        return memo

    def scaled_warm_quantiles(self, keys: Sequence[str], shrink_n: float) -> tuple[Quantiles, float] | None:
        """The first warm key's quantiles moved to where the colder keys before it lie, and the factor.

        A cold key's median is pulled toward its parent's estimate by ``n / (n + shrink_n)`` (its
        own observations against ``shrink_n`` pseudo-observations), from the warm key down the
        chain, and the warm key's whole distribution is scaled by the ratio: the parent gives the
        shape, the child's few observations its place (e.g. a short lane under a carrier whose
        promises are day-granular: its parcels use a smaller share of the promise than the
        carrier's). Factor 1 when the first key is warm or nothing colder was seen.
        """

        hist = self.hist
        min_count = self.min_count
        for i, key in enumerate(keys):
            h = hist.get(key)
            if h is None or h[0] < min_count:
                continue
            # ``warm_quantiles(keys[i:])``, whose first key is this warm one
            f = self._fast.get(key)
            if f is None or h[0] >= f[0]:
                f = self._refresh(key, h)
            q = f[1]
            if i == 0:
                return q, 1.0
            top = self.log2_median(key)
            assert top is not None
            est = top[1]
            for j in range(i - 1, -1, -1):
                m = self.log2_median(keys[j])
                if m is not None:
                    est += m[0] / (m[0] + shrink_n) * (m[1] - est)
            if est == top[1]:
                return q, 1.0
            factor = 2.0 ** (est - top[1])
            return tuple([v * factor for v in q]), factor
        return None

    def source(self, keys: Sequence[str]) -> tuple[str, int]:
        """Which key answered (``prior`` when none is warm) and its count, for evidence."""

        for key in keys:
            h = self.hist.get(key)
            if h is not None and h[0] >= self.min_count:
                return key, h[0]
        return "prior", 0

    def survival(self, keys: Sequence[str], value_s: float) -> float:
        """P(duration > value_s) under the first warm key, else the prior (see ``survival_at``)."""

        return survival_at(self.quantiles(keys), value_s)

    def _derive(self, key: str, q: list[float]) -> tuple[float, Quantiles, float, int]:
        # q is a ``cache`` entry: [count at computation, p01, ..., p999]; the fast entry is
        # (count that triggers a refresh, quantiles, clip cap, histogram index of the cap)
        cap = q[1 + P99] * self.clip_factor
        f = (q[0] * 1.125 + 4, tuple(q[1:]), cap, 1 + _bin(cap) if cap < inf else 0)
        self._fast[key] = f
        return f

    def _refresh(self, key: str, h: array[int]) -> tuple[float, Quantiles, float, int]:
        """A warm key's fast entry, its ``cache`` entry recomputed first when the key grew enough."""

        q = self.cache.get(key)
        n = h[0]
        # Refresh after ~12 % growth: keeps per-event cost flat while following drift.
        if q is None or n >= q[0] * 1.125 + 4:
            q = [float(n), *self._compute(h, self.cens.get(key))]
            self.cache[key] = q
            self.changed.add(key)
        return self._derive(key, q)

    @staticmethod
    def _compute(h: Sequence[int], cens: Sequence[int] | None = None) -> list[float]:
        """Quantiles at ``GRID``: the empirical ones, or Kaplan-Meier's when some are censored."""

        n = h[0]
        out: list[float] = []
        # empty bins change nothing in either loop, so they are skipped; every float below is
        # computed as the straightforward bin-by-bin loop computes it
        if cens is None:
            targets = [q * n for q in _QUANTILES]
            cum = 0.0
            ti = 0
            for b, c in enumerate(h[1:]):
                if c > 0:
                    top = cum + c
                    while top >= targets[ti]:
                        frac = (targets[ti] - cum) / c
                        lo = LO_LOG2 + b / RES
                        out.append(2.0 ** (lo + frac / RES))
                        ti += 1
                        if ti == _NGRID:
                            return out
                elif not c:
                    continue
                cum += c
            out.extend([_TOP] * (_NGRID - len(out)))
            return out
        # Kaplan-Meier over the bins: events of a bin leave before its censored ones
        at_risk = float(n)
        dead = 0.0  # 1 - S at the start of the bin
        ti = 0
        for b, (d, c) in enumerate(zip(h[1:], cens, strict=True)):
            if d and at_risk > 0:
                after = 1.0 - (1.0 - dead) * (1.0 - d / at_risk)
                while after >= GRID[ti]:
                    frac = (GRID[ti] - dead) / (after - dead)
                    out.append(2.0 ** (LO_LOG2 + (b + frac) / RES))
                    ti += 1
                    if ti == _NGRID:
                        return out
                dead = after
            elif not (d or c):
                continue
            at_risk -= d + c
        out.extend([inf] * (_NGRID - len(out)))  # never reached: longer than anything the key has seen end
        return out

    def export(self) -> dict[str, object]:
        return {
            "hist": {k: h.tolist() for k, h in self.hist.items()},
            "cache": self.cache,
            "cens": {k: c.tolist() for k, c in self.cens.items()},
            "delta": self.delta,
        }

    def take_changed(self) -> dict[str, list[object]]:
        """``key -> [histogram, cache entry or None, censored bins or None, pooled delta or None]`` for the keys changed since the last call.

        The pooled delta (``detectors/pool.py``) is what the key learned since the partition last
        published: a restored partition publishes the same.
        """

        hist, cache, cens, delta = self.hist, self.cache, self.cens, self.delta
        out: dict[str, list[object]] = {}
        for k in self.changed:
            h = hist.get(k)
            if h is not None:
                c = cens.get(k)
                out[k] = [h.tolist(), cache.get(k), None if c is None else c.tolist(), delta.get(k)]
        self.changed.clear()
        return out

    def load_entries(self, entries: dict[str, list[object]]) -> None:
        """Apply ``take_changed`` output (later entries of a key replace earlier ones)."""

        for key, entry in entries.items():
            h, q = entry[0], entry[1]
            c = entry[2] if len(entry) > 2 else None
            d = entry[3] if len(entry) > 3 else None
            if (
                not isinstance(h, list)
                or len(h) != NBINS + 1
                or not (q is None or isinstance(q, list))
                or not (c is None or (isinstance(c, list) and len(c) == NBINS))
            ):
                raise ValueError(f"baseline entry {key!r} is not [histogram, cache, censored]")
            self.hist[key] = array("i", [int(x) for x in h])
            self._load_cache(key, q)
            if c is None:
                self.cens.pop(key, None)
            else:
                self.cens[key] = array("i", [int(x) for x in c])
            if isinstance(d, list) and len(d) == 2:
                self.delta[key] = [{int(i): int(n) for i, n in part.items()} for part in d]
            else:
                self.delta.pop(key, None)
            self._fast.pop(key, None)
            self._medians.pop(key, None)

    def _load_cache(self, key: str, q: object) -> None:
        # a cache entry of an older grid (six quantiles) is dropped: recomputed at the next query
        if isinstance(q, list) and len(q) == len(GRID) + 1:
            self.cache[key] = [float(x) for x in q]
        else:
            self.cache.pop(key, None)

    def load(self, data: dict[str, object]) -> None:
        hist = data.get("hist", {})
        cache = data.get("cache", {})
        cens = data.get("cens", {})
        assert isinstance(hist, dict) and isinstance(cache, dict) and isinstance(cens, dict)
        self.hist = {str(k): array("i", [int(x) for x in v]) for k, v in hist.items()}
        self.cache = {}
        for k, v in cache.items():
            self._load_cache(str(k), v)
        self.cens = {str(k): array("i", [int(x) for x in v]) for k, v in cens.items()}
        delta = data.get("delta", {})
        assert isinstance(delta, dict)
        self.delta = {str(k): [{int(i): int(n) for i, n in part.items()} for part in v] for k, v in delta.items()}
        self._fast = {}
        self._medians = {}
