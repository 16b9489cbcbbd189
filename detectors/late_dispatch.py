"""Late dispatch: a paid order not dispatched by the merchant's dispatch promise.

The deadline is ``promised_dispatch_by`` plus a grace period. The early
warning uses the merchant's learned dispatch delay (paid -> dispatched): when
even its fast end (p20) lands after the promise plus grace, the miss is likely
and the alert fires at payment time, long before the promise. Delays of
merchants whose dispatch was late are not learned as normal beyond the clip.
"""

from __future__ import annotations

from collections.abc import Sequence

from logiwatch.detectors.baselines import P20, P50, DurationBaseline
from logiwatch.detectors.model import AlertStatus, AnomalyType, ScanEvent, Severity
from logiwatch.detectors.protocol import NO_FINDINGS, Contract, DetectorBase, Emits, Lifecycle, ScanContext
from logiwatch.detectors.state import DISPATCHED, PAID, Env, Finding, ParcelState

#: the alert type's value, read once (an enum member's ``.value`` is a Python-level property)
_LATE_DISPATCH = AnomalyType.LATE_DISPATCH.value


def dispatch_baseline(min_count: int) -> DurationBaseline:
    return DurationBaseline((900, 1800, 4 * 3600, 16 * 3600, 20 * 3600, 30 * 3600), min_count=min_count)


class LateDispatchDetector(DetectorBase):
    """Catches orders the merchant dispatches late (or not at all).

    Parameters
    ----------
    env: the engine's shared environment.
    grace_s: tolerance after ``promised_dispatch_by`` before the alert.
    early_warning: warn at payment when the merchant's learned p20 delay already misses the promise.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1", dispatch_within=24 * H).paid(0)
    >>> [a.alert_type.value for a in sc.run(detectors=("late_dispatch",), until=3 * 24 * H)]
    ['late_dispatch']
    """

    name = "late_dispatch"
    contract = Contract(
        emits=(Emits(AnomalyType.LATE_DISPATCH, Lifecycle.SELF),),
        baselines={"dispatch": dispatch_baseline},
    )

    def __init__(self, env: Env, *, grace_s: float = 0.0, early_warning: bool = True) -> None:
        self.env = env
        self.dispatch = env.baseline("dispatch")
        self.grace_s = float(grace_s)
        self.early_warning = early_warning

    def _keys(self, state: ParcelState) -> tuple[str, str]:
        return (state.merchant, "*")

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        code = scan.code
        t = event.event_time
        if code == PAID:
            if state.has(DISPATCHED) or state.final_at or state.first_time(PAID) != t:
                return NO_FINDINGS  # only the first payment starts the clock
            self.set_due(state, state.dispatch_by + int(self.grace_s * 1000))
            if self.early_warning and self.dispatch.source(self._keys(state))[0] == state.merchant:
                q = self.dispatch.quantiles(self._keys(state))
                if t + q[P20] * 1000 > state.dispatch_by + self.grace_s * 1000:
                    return [self._finding(state, t, q[P50], early=True)]
            return NO_FINDINGS
        if code == DISPATCHED and scan.latest:
            paid = state.first_time(PAID)
            if paid is not None and _LATE_DISPATCH not in state.open and not state.tainted:
                self.dispatch.learn(self._keys(state), (t - paid) / 1000)
        if code >= DISPATCHED:
            self.set_due(state, None)
            if _LATE_DISPATCH in state.open:
                return [
                    Finding(
                        alert_type=AnomalyType.LATE_DISPATCH,
                        status=AlertStatus.RESOLVED,
                        at_ms=t,
                        onset_ms=state.dispatch_by,
                        summary="the parcel was dispatched",
                    )
                ]
        return NO_FINDINGS

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        for entry in state.route:
            if entry[1] >= DISPATCHED:
                return NO_FINDINGS
        q = self.dispatch.quantiles(self._keys(state))
        return [self._finding(state, now_ms, q[P50], early=False)]

    def _finding(self, state: ParcelState, at_ms: int, p50_s: float, *, early: bool) -> Finding:
        key, n = self.dispatch.source(self._keys(state))
        paid = state.first_time(PAID) or at_ms
        if early:
            summary = (
                f"Order {state.order} ({state.waybill}) will likely be dispatched late: merchant {state.merchant} "
                f"usually needs {p50_s / 3600:.1f} h, the promise is in {(state.dispatch_by - at_ms) / 3.6e6:.1f} h"
            )
        else:
            summary = (
                f"Order {state.order} ({state.waybill}) is not dispatched "
                f"{(at_ms - state.dispatch_by) / 3.6e6:.1f} h after the dispatch promise"
            )
        return Finding(
            alert_type=AnomalyType.LATE_DISPATCH,
            at_ms=at_ms,
            onset_ms=state.dispatch_by,
            severity=Severity.WARNING,
            node=state.route[0][2] if state.route else None,
            summary=summary,
            evidence={
                "early_warning": early,
                "promised_dispatch_by": state.dispatch_by,
                "paid_at": paid,
                "expected_dispatch_delay_p50_s": round(p50_s, 1),
                "baseline_key": key,
                "baseline_n": n,
            },
        )
