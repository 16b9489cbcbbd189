"""Online duration baselines: log-scale histograms keyed per node, lane, carrier or merchant.

A baseline answers "how long does this usually take here?" with quantiles and
a survival probability, learned one observation at a time and never per
parcel. Each key keeps a fixed log2-spaced histogram (sufficient statistics:
a few dozen integers), so quantiles are cheap, state round-trips exactly
through msgpack, and memory is bounded by the number of keys. Cold keys fall
back along a hierarchy (e.g. node+type+carrier+hour -> node+type -> type ->
prior) until they hold ``min_count`` observations. Learning is protected:
once a key is warm, an observation is clipped to ``clip_factor`` times its
current p99, and callers skip observations they flagged as anomalous, so a
stuck parcel's three-day dwell cannot stretch the hub's normal. Scoring is
separate from deciding: this module only gives numbers; detectors' knobs
decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import log2
from typing import TypeVar

#: Histogram range: 2**LO_LOG2 s (8 s) .. 2**(LO_LOG2 + NBINS/RES) s (about 97 days).
LO_LOG2 = 3.0
RES = 4  # bins per doubling: 19 % resolution
NBINS = 80
_QUANTILES = (0.05, 0.2, 0.5, 0.9, 0.95, 0.99)
#: indexes into a quantile tuple
P05, P20, P50, P90, P95, P99 = range(6)
#: entries a detector's memo of baseline key chains holds before it starts over: building the
#: chain's strings on every scan cost more than looking it up (the memo is bounded by the network's
#: nodes, not by parcels, but a cap keeps a huge network from growing it without end)
KEY_MEMO_MAX = 50_000
Quantiles = tuple[float, float, float, float, float, float]


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


class DurationBaseline:
    """A family of keyed duration histograms with cached quantiles.

    ``prior`` gives (p05, p20, p50, p90, p95, p99) seconds used when no key in the
    fallback chain is warm.

    >>> b = DurationBaseline(prior=(30.0, 60.0, 120.0, 600.0, 900.0, 1800.0), min_count=3)
    >>> for s in (100, 110, 120, 130): b.learn(("n1",), s)
    >>> round(b.quantiles(("n1",))[P50] / 100)
    1
    >>> b.quantiles(("cold",)) == (30.0, 60.0, 120.0, 600.0, 900.0, 1800.0)
    True
    """

    __slots__ = ("prior", "min_count", "clip_factor", "hist", "cache", "_fast", "changed")

    def __init__(self, prior: Sequence[float], *, min_count: int = 30, clip_factor: float = 3.0) -> None:
        self.prior = tuple(float(x) for x in prior)
        self.min_count = min_count
        self.clip_factor = clip_factor
        #: key -> [count, bin0, bin1, ...]
        self.hist: dict[str, list[int]] = {}
        #: key -> (count at computation, p20, p50, p90, p95, p99); part of the exported state
        #: so a restored engine gives the very same numbers.
        self.cache: dict[str, list[float]] = {}
        #: key -> (count that triggers a refresh, quantiles tuple, learning clip cap), derived
        #: from ``cache`` and not exported: the hot paths read one entry and build nothing
        self._fast: dict[str, tuple[float, Quantiles, float]] = {}
        #: keys whose histogram or cache changed since the last ``take_changed`` (a checkpoint
        #: writes only those: most keys of a large network are idle in any one second)
        self.changed: set[str] = set()

    def learn(self, keys: Sequence[str], value_s: float) -> None:
        """Add one observation to every key of the chain (clipped where warm)."""

        if value_s < 0:
            return
        hist = self.hist
        fast = self._fast
        min_count = self.min_count
        b = 1 + _bin(value_s)  # the same value for every key unless a key clips it
        self.changed.update(keys)
        for key in keys:
            h = hist.get(key)
            if h is None:
                h = [0] * (NBINS + 1)
                hist[key] = h
            elif h[0] >= min_count:
                # clip against the last computed p99 (refreshed by queries), so learning stays cheap
                f = fast.get(key)
                if f is None and key in self.cache:
                    f = self._derive(key, self.cache[key])
                if f is not None and value_s > f[2]:
                    h[0] += 1
                    h[1 + _bin(f[2])] += 1
                    continue
            h[0] += 1
            h[b] += 1

    def count(self, key: str) -> int:
        h = self.hist.get(key)
        return h[0] if h else 0

    def quantiles(self, keys: Sequence[str]) -> Quantiles:
        """(p05, p20, p50, p90, p95, p99) of the first warm key in the chain, else the prior."""

        q = self.warm_quantiles(keys)
        if q is not None:
            return q
        p = self.prior
        return (p[0], p[1], p[2], p[3], p[4], p[5])

    def warm_quantiles(self, keys: Sequence[str]) -> Quantiles | None:
        """Like ``quantiles`` but None when no key of the chain is warm (instead of the prior)."""

        hist = self.hist
        min_count = self.min_count
        for key in keys:
            h = hist.get(key)
            if h is not None and h[0] >= min_count:
                f = self._fast.get(key)
                if f is None or h[0] >= f[0]:
                    self._cached(key, h)  # refreshes ``cache`` when the key grew enough
                    f = self._derive(key, self.cache[key])
                return f[1]
        return None

    def source(self, keys: Sequence[str]) -> tuple[str, int]:
        """Which key answered (``prior`` when none is warm) and its count, for evidence."""

        for key in keys:
            h = self.hist.get(key)
            if h is not None and h[0] >= self.min_count:
                return key, h[0]
        return "prior", 0

    def survival(self, keys: Sequence[str], value_s: float) -> float:
        """P(duration > value_s) under the first warm key (prior: a log-normal-ish guess)."""

        for key in keys:
            h = self.hist.get(key)
            if h is not None and h[0] >= self.min_count:
                b = _bin(value_s)
                above = float(sum(h[2 + b :]))
                # interpolate inside the value's own bin
                lo, hi = _bin_lo(b), _bin_lo(b + 1)
                frac = min(1.0, max(0.0, (value_s - lo) / (hi - lo)))
                above += h[1 + b] * (1.0 - frac)
                return above / h[0]
        p = self.prior
        if value_s <= p[P50]:
            return 0.5
        if value_s >= p[P99]:
            return 0.01 * p[P99] / value_s
        return 0.49 * (p[P99] - value_s) / (p[P99] - p[P50]) + 0.01

    def _derive(self, key: str, q: list[float]) -> tuple[float, Quantiles, float]:
        # q is a ``cache`` entry: [count at computation, p05, p20, p50, p90, p95, p99]
        f = (q[0] * 1.125 + 4, (q[1], q[2], q[3], q[4], q[5], q[6]), q[1 + P99] * self.clip_factor)
        self._fast[key] = f
        return f

    def _cached(self, key: str, h: list[int]) -> list[float]:
        q = self.cache.get(key)
        n = h[0]
        # Refresh after ~12 % growth: keeps per-event cost flat while following drift.
        if q is None or n >= q[0] * 1.125 + 4:
            q = [float(n), *self._compute(h)]
            self.cache[key] = q
            self.changed.add(key)
        return q[1:]

    @staticmethod
    def _compute(h: list[int]) -> list[float]:
        n = h[0]
        out: list[float] = []
        targets = [q * n for q in _QUANTILES]
        cum = 0.0
        ti = 0
        for b in range(NBINS):
            c = h[1 + b]
            while ti < len(targets) and cum + c >= targets[ti] and c > 0:
                frac = (targets[ti] - cum) / c
                lo = LO_LOG2 + b / RES
                out.append(float(2.0 ** (lo + frac / RES)))
                ti += 1
            cum += c
            if ti == len(targets):
                break
        while len(out) < len(targets):
            out.append(_bin_lo(NBINS))
        return out

    def export(self) -> dict[str, object]:
        return {"hist": self.hist, "cache": self.cache}

    def take_changed(self) -> dict[str, list[object]]:
        """``key -> [histogram, cache entry or None]`` for the keys changed since the last call."""

        hist, cache = self.hist, self.cache
        out: dict[str, list[object]] = {k: [hist[k], cache.get(k)] for k in self.changed if k in hist}
        self.changed.clear()
        return out

    def load_entries(self, entries: dict[str, list[object]]) -> None:
        """Apply ``take_changed`` output (later entries of a key replace earlier ones)."""

        for key, (h, q) in entries.items():
            if not isinstance(h, list) or len(h) != NBINS + 1 or not (q is None or isinstance(q, list)):
                raise ValueError(f"baseline entry {key!r} is not [histogram, cache]")
            self.hist[key] = [int(x) for x in h]
            if q is None:
                self.cache.pop(key, None)
            else:
                self.cache[key] = [float(x) for x in q]
            self._fast.pop(key, None)

    def load(self, data: dict[str, object]) -> None:
        hist = data.get("hist", {})
        cache = data.get("cache", {})
        assert isinstance(hist, dict) and isinstance(cache, dict)
        self.hist = {str(k): [int(x) for x in v] for k, v in hist.items()}
        self.cache = {str(k): [float(x) for x in v] for k, v in cache.items()}
        self._fast = {}
