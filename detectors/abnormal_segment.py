"""Abnormal segment: a hub-to-hub line-haul leg (or the last mile) far outside its learned duration.

Leg durations are learned per (from node > to node, carrier), falling back to
the node pair, then (from node, destination), then a prior. A leg longer than
max(``p99_factor`` x p99, ``p95_factor`` x p95) and ``min_excess_s`` above
the median fires, with the observed and expected durations: already in
transit (a deadline after HUB_DEPARTED, keyed by the hub and the destination,
which usually fix the next hop, and never before the carrier's p99 hub-to-hub leg:
a misrouted parcel on a long truck is not yet an abnormal leg), or on arrival for
legs the deadline does not cover.
Only a trusted key decides: while the lane is cold nothing fires (the
in-transit check looks again every ``recheck_s``, and at its deadline the
limit is recomputed from what has been learned since). An abnormal leg is
learned as censored at the limit it crossed, so one slow truck does not
stretch the lane's normal and a lane slower than its first estimate escapes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isinf

from logiwatch.detectors.baselines import P50, P95, P99, DurationBaseline, KeyMemo
from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.protocol import (
    NO_FINDINGS,
    Contract,
    DetectorBase,
    Emits,
    Lifecycle,
    ScanContext,
    Slot,
)
from logiwatch.detectors.state import (
    DELIVERED,
    HUB_ARRIVED,
    HUB_DEPARTED,
    OUT_FOR_DELIVERY,
    PICKED_UP,
    Env,
    Finding,
    ParcelState,
)
from logiwatch.detectors.values import SILENCE_COLD, SILENCE_LIMIT_S, TELEPORT_AT

#: (previous scan, this scan) pairs that make a segment
SEGMENTS = frozenset({(HUB_DEPARTED, HUB_ARRIVED), (PICKED_UP, HUB_ARRIVED), (OUT_FOR_DELIVERY, DELIVERED)})
#: the departure (event time) whose leg the in-transit deadline already reported
_HIT = Slot("segment_hit", int)
#: ... and the limit (s) that leg crossed (it is learned censored there on arrival)
_HIT_LIMIT_S = Slot("segment_limit_s", float)


def segment_baseline(min_count: int) -> DurationBaseline:
    # legs are scheduled trucks: a third of min_count pins one down (and a partition sees
    # only its share of a lane, so a full min_count left most lanes cold at 4 partitions)
    return DurationBaseline((1800, 3600, 6 * 3600, 18 * 3600, 24 * 3600, 36 * 3600), min_count=max(1, min_count // 3))


class AbnormalSegmentDetector(DetectorBase):
    """Catches legs that take far longer than the lane usually needs.

    Parameters
    ----------
    env: the engine's shared environment.
    p99_factor, p95_factor: a leg is abnormal above max(p99_factor * p99, p95_factor * p95).
    min_excess_s: and at least this much above the median.
    recheck_s: while the lane is not learned yet, the in-transit check looks again after this, then
        after as long as the parcel has been in transit (backing off).

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> for i in range(40):  # the lane's normal: 5 h
    ...     _ = sc.parcel(f"N{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H) \\
    ...         .departed(4 * H).arrived("HUB-B", 9 * H).delivered(20 * H)
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H) \\
    ...     .departed(4 * H).arrived("HUB-B", 200 * H)
    >>> [a.waybill_id for a in sc.run(detectors=("abnormal_segment",))]
    ['WB1']
    """

    name = "abnormal_segment"
    contract = Contract(
        emits=(Emits(AnomalyType.ABNORMAL_SEGMENT, Lifecycle.RESOLVE_ON_MOVE),),
        owns=(_HIT, _HIT_LIMIT_S),
        provides=(SILENCE_LIMIT_S, SILENCE_COLD),
        needs=(TELEPORT_AT,),
        baselines={"segment": segment_baseline},
    )

    def __init__(
        self,
        env: Env,
        *,
        p99_factor: float = 1.6,
        p95_factor: float = 2.5,
        min_excess_s: float = 4 * 3600,
        recheck_s: float = 6 * 3600,
    ) -> None:
        if min(p99_factor, p95_factor, recheck_s) <= 0 or min_excess_s < 0:
            raise ValueError("abnormal_segment: factors and recheck_s must be positive, min_excess_s >= 0")
        self.env = env
        self.segment = env.baseline("segment")
        self.p99_factor = float(p99_factor)
        self.p95_factor = float(p95_factor)
        self.min_excess_s = float(min_excess_s)
        self.recheck_s = float(recheck_s)

    def _limit_ms(self, keys: tuple[str, ...], carrier: str, t0: int) -> tuple[int | None, tuple[float, ...]]:
        """The leg's limit (ms after ``t0``) and the quantiles; None while no key is trusted."""

        env = self.env
        q = self.segment.warm_quantiles(keys)
        if q is None:
            return None, self.segment.prior
        parts = [v for v in (q[P99] * self.p99_factor, q[P95] * self.p95_factor) if not isinf(v)]
        if not parts or isinf(q[P50]):
            return None, q
        limit_s = max(*parts, q[P50] + self.min_excess_s)
        limit_s *= env.calendar.peak_factor(t0)
        return env.calendar.extend(carrier, t0, int(limit_s * 1000)), q

    def _arm_transit(self, state: ParcelState, node: str, t: int, now_ms: int) -> int | None:
        limit_ms, _q = self._limit_ms(transit_keys(node, state.dest, state.carrier), state.carrier, t)
        if limit_ms is not None:
            # in transit the next hop is not known yet: the parcel may be on any of the carrier's
            # trucks, so no leg is abnormal before the carrier's usual longest line haul
            reach = self.segment.warm_quantiles(carrier_legs_key(state.carrier))
            if reach is not None and not isinf(reach[P99]):
                limit_ms = max(limit_ms, int(reach[P99] * 1000))
        if limit_ms is None:
            SILENCE_COLD.set(state, True)
            SILENCE_LIMIT_S.set(state, 0.0)
            self.set_due(state, now_ms + max(int(self.recheck_s * 1000), now_ms - t))  # backing off
            return None
        SILENCE_COLD.clear(state)
        SILENCE_LIMIT_S.set(state, limit_ms / 1000)
        self.set_due(state, max(t + limit_ms, now_ms))
        return limit_ms

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        if not scan.latest:
            return NO_FINDINGS
        segment = self.segment
        code = scan.code
        t = event.event_time
        if TELEPORT_AT.get(state) == t:
            return NO_FINDINGS  # a scan that cannot be true ends no leg
        if code == HUB_DEPARTED and not state.final_at:
            # in transit: we do not know the next hub yet, but the hub and destination fix the lane
            self._arm_transit(state, event.node_id, t, t)
        else:
            self.set_due(state, None)
        prev = scan.prev
        if prev is None:
            return NO_FINDINGS
        dur_s = (t - prev[0]) / 1000
        already = _HIT.take(state) == prev[0]
        if (prev[1], code) not in SEGMENTS:
            return NO_FINDINGS
        leg = f"{prev[2]}>{event.node_id}"
        keys = (f"{leg}|{state.carrier}", leg)
        limit_ms, q = self._limit_ms(keys, state.carrier, prev[0])
        hub_leg = prev[1] == HUB_DEPARTED  # hub-to-hub legs teach the in-transit check too
        if already:
            # the in-transit deadline already reported this leg: it lasted at least its limit
            if hub_leg:
                segment.learn_censored(transit_keys(prev[2], state.dest, state.carrier), _HIT_LIMIT_S.value(state, 0.0))
            return NO_FINDINGS
        if limit_ms is None or dur_s * 1000 <= limit_ms:
            if not state.tainted:
                segment.learn(keys, dur_s)
                if hub_leg:
                    segment.learn(transit_keys(prev[2], state.dest, state.carrier), dur_s)
                    segment.learn(carrier_legs_key(state.carrier), dur_s)
            return NO_FINDINGS
        segment.learn_censored(keys, limit_ms / 1000)
        key, n = segment.source(keys)
        return [self._finding(state, t, prev, event.node_id, event.region, dur_s, q, limit_ms, key, n, arrived=True)]

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        last = state.last
        if last is None or last[1] != HUB_DEPARTED or state.final_at:
            return NO_FINDINGS
        keys = transit_keys(last[2], state.dest, state.carrier)
        limit_ms = self._arm_transit(state, last[2], last[0], now_ms)
        if limit_ms is None or state.due.get(self.name, 0) > now_ms:
            return NO_FINDINGS  # not trusted yet, or the limit grew past now: look again later
        self.set_due(state, None)
        _limit, q = self._limit_ms(keys, state.carrier, last[0])
        key, n = self.segment.source(keys)
        _HIT.set(state, last[0])
        _HIT_LIMIT_S.set(state, limit_ms / 1000)
        return [self._finding(state, now_ms, last, None, last[3], (now_ms - last[0]) / 1000, q, limit_ms, key, n, arrived=False)]

    def _finding(
        self,
        state: ParcelState,
        at_ms: int,
        prev: tuple[int, int, str, str],
        to_node: str | None,
        region: str,
        dur_s: float,
        q: tuple[float, ...],
        limit_ms: int,
        key: str,
        n: int,
        *,
        arrived: bool,
    ) -> Finding:
        leg = f"{prev[2]}>{to_node or '?'}"
        if arrived:
            summary = (
                f"Parcel {state.waybill} took {dur_s / 3600:.1f} h from {prev[2]} to {to_node} "
                f"(usual p99 {q[P99] / 3600:.1f} h)"
            )
        else:
            summary = (
                f"Parcel {state.waybill} has been in transit from {prev[2]} for {dur_s / 3600:.1f} h "
                f"(usual p99 {q[P99] / 3600:.1f} h)"
            )
        return Finding(
            alert_type=AnomalyType.ABNORMAL_SEGMENT,
            at_ms=at_ms,
            onset_ms=prev[0],
            severity=Severity.WARNING,
            episode=f"{prev[2]}:{prev[0]}",
            node=to_node or prev[2],
            region=region,
            summary=summary,
            evidence={
                "segment": leg,
                "in_transit": not arrived,
                "duration_s": dur_s,
                "expected_p50_s": round(q[P50], 1),
                "expected_p99_s": round(q[P99], 1),
                "limit_s": round(limit_ms / 1000, 1),
                "baseline_key": key,
                "baseline_n": n,
            },
        )


_legs_memo: KeyMemo[str, tuple[str]] = KeyMemo()


def carrier_legs_key(carrier: str) -> tuple[str]:
    """The key of every hub-to-hub leg of a carrier, whatever the hubs: its line hauls' reach."""

    keys = _legs_memo.get(carrier)
    if keys is None:
        keys = _legs_memo.remember(carrier, (f"*>*|{carrier}",))
    return keys


_transit_memo: KeyMemo[tuple[str, str, str], tuple[str, str]] = KeyMemo()


def transit_keys(from_node: str, dest: str, carrier: str) -> tuple[str, str]:
    # no hub-wide fallback: a hub's legs to other hubs say nothing about its last-mile departures
    memo = (from_node, dest, carrier)
    keys = _transit_memo.get(memo)
    if keys is None:
        keys = _transit_memo.remember(memo, (f"{from_node}>*{dest}|{carrier}", f"{from_node}>*{dest}"))
    return keys


__all__ = ["AbnormalSegmentDetector", "DELIVERED"]
