"""Stall: a parcel with no next scan within the dwell expected at its current node.

The expected dwell is learned online per (node, scan type, carrier, six-hour
bucket of the day), falling back to (node, scan type, carrier), (node, scan
type), the carrier's scan type and the scan type; after PICKED_UP the lane
(carrier, origin > destination) comes first, since in a feed whose next scan
after the hand-over is the delivery the "dwell" is the whole transit (and the
chain stops at the carrier: what follows PICKED_UP depends on its feed). The
deadline is the larger of ``p99_factor`` x p99 and ``p95_factor`` x p95 of
the first trusted key (quantiles the data cannot pin down are skipped; never
below ``min_dwell_s``), stretched in peak periods and moved past the carrier's
non-working days. While no key of the chain is trusted (a cold start) the
detector raises nothing and looks again every ``recheck_s``; when a deadline
comes, the threshold is recomputed from what has been learned since, so a
threshold set on a young, fast-biased estimate does not fire. A parcel that
stalled is learned as censored at the threshold it crossed ("it waited at
least that long"), so a stuck parcel cannot stretch the hub's normal, and a
key whose threshold is too low for its parcels opens its tail instead of
teaching itself only from the fast ones. The alert gives the observed dwell,
the expected quantiles, the baseline key and size, and the probability that a
normal parcel would still be waiting.
"""

from __future__ import annotations

from math import isinf

from logiwatch.detectors.baselines import P95, P99, KeyMemo, Quantiles
from logiwatch.detectors.model import AnomalyType, EventType, ScanEvent, Severity
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
    CODE_STR,
    EXCEPTION,
    FINAL_CODES,
    HUB_DEPARTED,
    PICKED_UP,
    TYPES,
    Env,
    Finding,
    ParcelState,
    dwell_baseline,
    hour_bucket,
)
from logiwatch.detectors.values import SILENCE_COLD, SILENCE_LIMIT_S, STALL_THRESHOLD_S, TELEPORT_AT

_BUCKET_STR = ("0", "1", "2", "3")
#: the scan the current dwell began at (its event time)
_ANCHOR = Slot("stall_anchor", int)
#: set when the parcel stalled at its current node: its dwell is learned censored
_HIT = Slot("stall_hit", bool)
DwellKeys = tuple[str, ...]

_dwell_memo: KeyMemo[tuple[str, int, str, int, str, str], DwellKeys] = KeyMemo()


def dwell_keys(node: str, code: int, carrier: str, t_ms: int, origin: str = "", dest: str = "") -> DwellKeys:
    bucket = hour_bucket(t_ms)
    lane = code == PICKED_UP
    memo = (node, code, carrier, bucket, origin if lane else "", dest if lane else "")
    keys = _dwell_memo.get(memo)
    if keys is None:
        hb = _BUCKET_STR[bucket]
        c = CODE_STR[code]
        nc = f"{node}|{c}"
        if lane:
            keys = (f"{carrier}|{c}|{origin}>{dest}", f"{nc}|{carrier}|{hb}", f"{nc}|{carrier}", f"{carrier}|{c}")
        else:
            # at a node every feed that scans it means the same wait (hub incidents read the
            # carrier-blind keys); after the hand-over it does not: there the chain stops at
            # the carrier, since what follows PICKED_UP depends on what the carrier's feed sends
            keys = (f"{nc}|{carrier}|{hb}", f"{nc}|*|{hb}", nc, f"{carrier}|{c}", f"*|{c}")
        keys = _dwell_memo.remember(memo, keys)
    return keys


def factor_threshold(q: Quantiles, p99_factor: float, p95_factor: float, floor_s: float) -> float | None:
    """max(p99_factor x p99, p95_factor x p95, floor) over the quantiles the data pins down (None: neither)."""

    best = None
    for v in (q[P99] * p99_factor, q[P95] * p95_factor):
        if not isinf(v) and (best is None or v > best):
            best = v
    return None if best is None else max(best, floor_s)


class StallDetector(DetectorBase):
    """Catches parcels that stop moving after pickup (at a hub, an outlet or a station; not in transit).

    Parameters
    ----------
    env: the engine's shared environment (baselines, calendar).
    p99_factor, p95_factor: the deadline is max(p99_factor * p99, p95_factor * p95) of the learned dwell.
    min_dwell_s: never alert on a dwell shorter than this.
    recheck_s: while the dwell is not learned yet, look again after this, then after as long as
        the parcel has waited (backing off; no alert from a guess).

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> for i in range(40):  # teach the hub its normal dwell (2 h)
    ...     _ = sc.parcel(f"N{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H).departed(5 * H)
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 6 * H)
    >>> [a.waybill_id for a in sc.run(detectors=("stall",), until=10 * 24 * H)]
    ['WB1']
    """

    name = "stall"
    contract = Contract(
        emits=(Emits(AnomalyType.STALL, Lifecycle.RESOLVE_ON_MOVE),),
        owns=(_ANCHOR, _HIT),
        provides=(SILENCE_LIMIT_S, SILENCE_COLD, STALL_THRESHOLD_S),
        needs=(TELEPORT_AT,),
        baselines={"dwell": dwell_baseline},
    )

    def __init__(
        self,
        env: Env,
        *,
        p99_factor: float = 2.0,
        p95_factor: float = 3.0,
        min_dwell_s: float = 6 * 3600,
        recheck_s: float = 6 * 3600,
    ) -> None:
        if min(p99_factor, p95_factor) <= 0 or min_dwell_s < 0 or recheck_s <= 0:
            raise ValueError("stall: factors and recheck_s must be positive, min_dwell_s >= 0")
        self.env = env
        self.dwell = env.baseline("dwell")
        self.p99_factor = float(p99_factor)
        self.p95_factor = float(p95_factor)
        self.min_dwell_s = float(min_dwell_s)
        self.recheck_s = float(recheck_s)

    def keys_for(self, state: ParcelState, node: str, code: int, t_ms: int) -> DwellKeys:
        return dwell_keys(node, code, state.carrier, t_ms, state.origin, state.dest)

    def threshold_s(self, state: ParcelState, node: str, code: int, t_ms: int) -> float | None:
        """The stall threshold for a dwell that began at ``t_ms``, or None while no key is trusted."""

        q = self.dwell.warm_quantiles(self.keys_for(state, node, code, t_ms))
        if q is None:
            return None
        thr = factor_threshold(q, self.p99_factor, self.p95_factor, self.min_dwell_s)
        return None if thr is None else thr * self.env.calendar.peak_factor(t_ms)

    def _arm(self, state: ParcelState, t: int, node: str, code: int, now_ms: int) -> float | None:
        thr_s = self.threshold_s(state, node, code, t)
        if thr_s is None:
            SILENCE_COLD.set(state, True)
            SILENCE_LIMIT_S.set(state, 0.0)
            # back off: look again after as long as the parcel has waited (a few looks, not one
            # every recheck_s for as long as a cold key stays cold)
            self.set_due(state, now_ms + max(int(self.recheck_s * 1000), now_ms - t))
            return None
        SILENCE_COLD.clear(state)
        STALL_THRESHOLD_S.set(state, thr_s)
        SILENCE_LIMIT_S.set(state, thr_s)
        self.set_due(state, max(t + self.env.calendar.extend(state.carrier, t, int(thr_s * 1000)), now_ms))
        return thr_s

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> tuple[Finding, ...]:
        if not scan.latest:
            return NO_FINDINGS
        prev = scan.prev
        code = scan.code
        if code == EXCEPTION and prev is not None and prev[2] == event.node_id and self.name in state.due:
            return NO_FINDINGS  # an exception scan during a dwell does not restart the dwell clock
        if TELEPORT_AT.get(state) == event.event_time:
            return NO_FINDINGS  # a scan that cannot be true (contradiction) is not where the parcel waits
        if prev is not None and prev[1] >= PICKED_UP and prev[1] not in FINAL_CODES and prev[1] != HUB_DEPARTED:
            keys = self.keys_for(state, prev[2], prev[1], prev[0])
            if _HIT.take(state):
                # it stalled: all we may say is that it waited at least the threshold it crossed
                self.dwell.learn_censored(keys, STALL_THRESHOLD_S.value(state, 0.0))
            else:
                self.dwell.learn(keys, (event.event_time - prev[0]) / 1000)
        if state.final_at or code < PICKED_UP or code in FINAL_CODES or code == HUB_DEPARTED:
            # silence in transit is the abnormal-segment detector's
            self.set_due(state, None)
            return NO_FINDINGS
        t = event.event_time
        _ANCHOR.set(state, t)
        self._arm(state, t, event.node_id, code, t)
        return NO_FINDINGS

    def on_deadline(self, state: ParcelState, now_ms: int) -> tuple[Finding, ...]:
        anchor = _ANCHOR.get(state)
        last = next((e for e in reversed(state.route) if e[0] == anchor), state.last)
        if last is None or state.final_at:
            return NO_FINDINGS
        t, code, node, region = last
        # look again with what has been learned since the scan: not trusted yet, or the
        # threshold moved past now, and the parcel is not (yet) stalled
        thr_s = self._arm(state, t, node, code, now_ms)
        if thr_s is None or self.name in state.due and state.due[self.name] > now_ms:
            return NO_FINDINGS
        self.set_due(state, None)
        keys = self.keys_for(state, node, code, t)
        q = self.dwell.quantiles(keys)
        key, n = self.dwell.source(keys)
        dwell_s = (now_ms - t) / 1000
        # the hub incident that explains it (if any) is linked by the alert service (hub_stage.link_incident)
        _HIT.set(state, True)
        return (
            Finding(
                alert_type=AnomalyType.STALL,
                at_ms=now_ms,
                onset_ms=t,
                severity=Severity.WARNING,
                episode=f"{node}:{code}:{t}",
                node=node,
                region=region,
                summary=(
                    f"Parcel {state.waybill} has had no scan for {dwell_s / 3600:.1f} h at {node} "
                    f"after {TYPES[code].value} (usual p99 {q[P99] / 3600:.1f} h, from {n} parcels)"
                ),
                evidence={
                    "dwell_s": dwell_s,
                    "expected_dwell_p95_s": round(q[P95], 1),
                    "expected_dwell_p99_s": round(q[P99], 1) if not isinf(q[P99]) else None,
                    "threshold_s": round(thr_s, 1),
                    "probability_overdue": round(1.0 - self.dwell.survival(keys, dwell_s), 4),
                    "baseline_key": key,
                    "baseline_n": n,
                    "last_scan": TYPES[code].value,
                },
            ),
        )


__all__ = ["StallDetector", "dwell_keys", "factor_threshold", "EventType"]
