"""Predicted late arrival: warn as soon as the delivery promise is likely broken.

Remaining time to delivery is learned online from delivered, anomaly-free
parcels, for every scan on their route, keyed by (node, scan type,
destination), then (scan type, lane), then the scan type; while all are cold
only the promise itself is a deadline (no model, no early warning). At each scan a fast-end quantile of that distribution (``quantile``, p20
by default) is added to the scan time; if even that lands after the promise
plus ``margin_s`` the parcel is predicted late now. Otherwise a deadline is
set at the latest moment the parcel can still sit here and likely make it
(promise - the ``silent_quantile`` of the remaining time from the *next* scan): if it is still silent then, the
warning fires. At the promise itself an undelivered parcel is late by
definition. The alert carries the predicted lateness from the median.
"""

from __future__ import annotations

from logiwatch.detectors.baselines import P05, P20, P50, KeyMemo
from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.state import (
    CODE_STR,
    CODES,
    DELIVERED,
    FINAL_CODES,
    TYPES,
    DeadlineMixin,
    Env,
    Finding,
    ParcelState,
)

_Q = {"p05": P05, "p20": P20, "p50": P50}
_PREDICTED_LATE = AnomalyType.PREDICTED_LATE.value


_remaining_memo: KeyMemo[tuple[str, int, str, str], tuple[str, str, str]] = KeyMemo()


def remaining_keys(state: ParcelState, node: str, code: int) -> tuple[str, str, str]:
    return _remaining_keys(node, code, state.origin, state.dest)


def _remaining_keys(node: str, code: int, origin: str, dest: str) -> tuple[str, str, str]:
    memo = (node, code, origin, dest)
    keys = _remaining_memo.get(memo)
    if keys is None:
        c = CODE_STR[code]
        keys = _remaining_memo.remember(memo, (f"{node}|{c}|{dest}", f"{c}|{origin}>{dest}", c))
    return keys


class PredictedLateDetector(DeadlineMixin):
    """Early warning that a parcel will miss its delivery promise.

    Parameters
    ----------
    env: the engine's shared environment.
    quantile: which quantile of the remaining time must already miss at a scan ("p05", "p20", "p50").
    silent_quantile: the quantile of the remaining time from the next scan that sets the silence deadline.
    margin_s: tolerance after the promise.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1", deliver_within=24 * H).paid(0).dispatched(H).picked_up(2 * H)
    >>> [a.alert_type.value for a in sc.run(detectors=("predicted_late",))]
    ['predicted_late']
    """

    name = "predicted_late"

    def __init__(
        self, env: Env, *, quantile: str = "p20", silent_quantile: str = "p50", margin_s: float = 0.0
    ) -> None:
        if quantile not in _Q or silent_quantile not in _Q:
            raise ValueError(f"quantile and silent_quantile must be one of {sorted(_Q)}")
        self.env = env
        self.quantile = quantile
        self.qi = _Q[quantile]
        self.silent_quantile = silent_quantile
        self.si = _Q[silent_quantile]
        self.margin_s = margin_s

    def on_event(self, state: ParcelState, event: ScanEvent) -> list[Finding]:
        env = self.env
        if not env.latest:
            return []
        code = CODES[event.event_type]
        t = event.event_time
        if code == DELIVERED:
            self.set_due(state, None)
            if not state.tainted:
                self._learn(state, t)
            return []
        if state.final_at or code in FINAL_CODES:
            self.set_due(state, None)
            return []
        if _PREDICTED_LATE in state.open:
            self.set_due(state, None)
            return []
        keys = remaining_keys(state, event.node_id, code)
        limit = state.deliver_by + int(self.margin_s * 1000)
        q = env.remaining.warm_quantiles(keys)
        if q is None:
            # no learned model for this stage yet: only the broken promise itself is certain
            self.set_due(state, max(limit, t + 1))
            return []
        if t + q[self.qi] * 1000 > limit:
            return self._finding(state, t, t + int(q[P50] * 1000), keys, "at this scan")
        qn = env.remaining_next.quantiles(keys)
        due = min(limit - int(qn[self.si] * 1000), limit)
        self.set_due(state, max(due, t + 1))
        return []

    def on_deadline(self, state: ParcelState, now_ms: int) -> list[Finding]:
        last = state.last
        if last is None or state.final_at or AnomalyType.PREDICTED_LATE.value in state.open:
            return []
        keys = remaining_keys(state, last[2], last[1])
        qn = self.env.remaining_next.quantiles(keys)
        return self._finding(state, now_ms, now_ms + int(qn[P50] * 1000), keys, "while silent")

    def _finding(self, state: ParcelState, at_ms: int, predicted_ms: int, keys: tuple[str, ...], how: str) -> list[Finding]:
        last = state.last
        assert last is not None
        predicted_ms = max(predicted_ms, at_ms)
        lateness_s = max(0.0, (predicted_ms - state.deliver_by) / 1000)
        key, n = self.env.remaining.source(keys)
        return [
            Finding(
                alert_type=AnomalyType.PREDICTED_LATE,
                at_ms=at_ms,
                onset_ms=at_ms,
                severity=Severity.WARNING,
                predicted_lateness_s=lateness_s,
                summary=(
                    f"Parcel {state.waybill} will likely miss its delivery promise by {lateness_s / 3600:.1f} h "
                    f"(predicted {how} after {TYPES[last[1]].value} at {last[2]})"
                ),
                evidence={
                    "predicted_arrival": predicted_ms,
                    "promised_delivery_by": state.deliver_by,
                    "lead_s": (state.deliver_by - at_ms) / 1000,
                    "quantile": self.quantile,
                    "baseline_key": key,
                    "baseline_n": n,
                },
            )
        ]

    def _learn(self, state: ParcelState, delivered_ms: int) -> None:
        remaining = self.env.remaining.learn
        remaining_next = self.env.remaining_next.learn
        route = state.route
        last = len(route) - 1
        origin, dest = state.origin, state.dest
        for i, (t, code, node, _region) in enumerate(route):
            if code in FINAL_CODES or t > delivered_ms:
                continue
            keys = _remaining_keys(node, code, origin, dest)
            remaining(keys, (delivered_ms - t) / 1000)
            nxt = route[i + 1][0] if i < last else delivered_ms
            remaining_next(keys, (delivered_ms - nxt) / 1000)
