"""Stall: a parcel with no next scan within the dwell expected at its current node.

The expected dwell is learned online per (node, scan type, carrier, six-hour
bucket of the day), falling back to (node, scan type, bucket), (node, scan
type), then the scan type, then a prior while keys are cold. The deadline is the larger of ``p99_factor`` x p99
and ``p95_factor`` x p95 (never below ``min_dwell_s``), stretched in peak
periods and moved past the carrier's non-working days by the calendar. When it
fires, the alert gives the observed dwell, the expected quantiles, the baseline
key and size, and the probability that a normal parcel would still be waiting
(the survival of the learned dwell distribution). Dwell observations of
parcels that stalled are not learned, so a stuck parcel cannot stretch the
hub's normal.
"""

from __future__ import annotations

from logiwatch.detectors.baselines import P95, P99, KeyMemo
from logiwatch.detectors.model import AnomalyType, EventType, ScanEvent, Severity
from logiwatch.detectors.state import (
    CODE_STR,
    CODES,
    EXCEPTION,
    FINAL_CODES,
    HUB_DEPARTED,
    PICKED_UP,
    TYPES,
    DeadlineMixin,
    Env,
    Finding,
    ParcelState,
    hour_bucket,
)

_BUCKET_STR = ("0", "1", "2", "3")


_dwell_memo: KeyMemo[tuple[str, int, str, int], tuple[str, str, str, str]] = KeyMemo()


def dwell_keys(node: str, code: int, carrier: str, t_ms: int) -> tuple[str, str, str, str]:
    bucket = hour_bucket(t_ms)
    memo = (node, code, carrier, bucket)
    keys = _dwell_memo.get(memo)
    if keys is None:
        hb = _BUCKET_STR[bucket]
        nc = f"{node}|{CODE_STR[code]}"
        keys = _dwell_memo.remember(memo, (f"{nc}|{carrier}|{hb}", f"{nc}|*|{hb}", nc, f"*|{CODE_STR[code]}"))
    return keys


class StallDetector(DeadlineMixin):
    """Catches parcels that stop moving after pickup (at a hub, an outlet or a station; not in transit).

    Parameters
    ----------
    env: the engine's shared environment (baselines, calendar).
    p99_factor, p95_factor: the deadline is max(p99_factor * p99, p95_factor * p95) of the learned dwell.
    min_dwell_s: never alert on a dwell shorter than this.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H)
    >>> [a.alert_type.value for a in sc.run(detectors=("stall",), until=10 * 24 * H)]
    ['stall']
    """

    name = "stall"

    def __init__(
        self,
        env: Env,
        *,
        p99_factor: float = 2.0,
        p95_factor: float = 3.0,
        min_dwell_s: float = 6 * 3600,
    ) -> None:
        self.env = env
        self.p99_factor = p99_factor
        self.p95_factor = p95_factor
        self.min_dwell_s = min_dwell_s

    def threshold_s(self, state: ParcelState, node: str, code: int, t_ms: int) -> float:
        q = self.env.dwell.quantiles(dwell_keys(node, code, state.carrier, t_ms))
        thr = max(q[P99] * self.p99_factor, q[P95] * self.p95_factor, self.min_dwell_s)
        return thr * self.env.calendar.peak_factor(t_ms)

    def on_event(self, state: ParcelState, event: ScanEvent) -> list[Finding]:
        env = self.env
        if not env.latest:
            return []
        prev = env.prev
        code = CODES[event.event_type]
        if code == EXCEPTION and prev is not None and prev[2] == event.node_id and self.name in state.due:
            return []  # an exception scan during a dwell does not restart the dwell clock
        if state.note.get("teleport_at") == event.event_time:
            return []  # a scan that cannot be true (contradiction) is not where the parcel waits
        if prev is not None and prev[1] >= PICKED_UP and prev[1] not in FINAL_CODES and prev[1] != HUB_DEPARTED:
            if not state.note.pop("stall_hit", 0):
                env.dwell.learn(dwell_keys(prev[2], prev[1], state.carrier, prev[0]), (event.event_time - prev[0]) / 1000)
        if state.final_at or code < PICKED_UP or code in FINAL_CODES or code == HUB_DEPARTED:
            # silence in transit is the abnormal-segment detector's
            self.set_due(state, None)
            return []
        t = event.event_time
        thr_s = self.threshold_s(state, event.node_id, code, t)
        state.note["stall_thr_s"] = thr_s
        state.note["silence_ref_s"] = thr_s
        state.note["stall_anchor"] = t
        self.set_due(state, t + env.calendar.extend(state.carrier, t, int(thr_s * 1000)))
        return []

    def on_deadline(self, state: ParcelState, now_ms: int) -> list[Finding]:
        anchor = state.note.get("stall_anchor")
        last = next((e for e in reversed(state.route) if e[0] == anchor), state.last)
        if last is None or state.final_at:
            return []
        t, code, node, region = last
        env = self.env
        keys = dwell_keys(node, code, state.carrier, t)
        q = env.dwell.quantiles(keys)
        key, n = env.dwell.source(keys)
        dwell_s = (now_ms - t) / 1000
        state.note["stall_hit"] = 1
        inc = env.incidents.get(node)
        if inc is None:
            recent = env.recent_incidents.get(node)
            # a dwell that began before a recent incident at this hub ended is explained by it
            if recent is not None and t <= int(recent[2]) and now_ms - int(recent[2]) < 86_400_000:
                inc = recent
        return [
            Finding(
                alert_type=AnomalyType.STALL,
                at_ms=now_ms,
                onset_ms=t,
                severity=Severity.WARNING,
                episode=f"{node}:{code}:{t}",
                node=node,
                region=region,
                incident_id=str(inc[0]) if inc else None,
                summary=(
                    f"Parcel {state.waybill} has had no scan for {dwell_s / 3600:.1f} h at {node} "
                    f"after {TYPES[code].value} (expected p99 {q[P99] / 3600:.1f} h)"
                ),
                evidence={
                    "dwell_s": dwell_s,
                    "expected_dwell_p95_s": round(q[P95], 1),
                    "expected_dwell_p99_s": round(q[P99], 1),
                    "threshold_s": round(state.note.get("stall_thr_s", 0.0), 1),
                    "probability_overdue": round(1.0 - env.dwell.survival(keys, dwell_s), 4),
                    "baseline_key": key,
                    "baseline_n": n,
                    "last_scan": TYPES[code].value,
                },
            )
        ]


__all__ = ["StallDetector", "dwell_keys", "EventType"]
