"""Pickup timeout: a dispatched parcel the carrier does not pick up in its usual time.

The carrier's pickup delay (dispatched -> picked up) is learned per
(carrier, origin region), falling back to the carrier, then all carriers. The
deadline is max(``p99_factor`` (1.5) x p99, ``min_wait_s``), moved past the
carrier's non-working days (a carrier that does not pick up on Sundays is not
late on Sunday).
"""

from __future__ import annotations

from collections.abc import Sequence

from logiwatch.detectors.baselines import P95, P99, DurationBaseline
from logiwatch.detectors.model import AlertStatus, AnomalyType, ScanEvent, Severity
from logiwatch.detectors.protocol import (
    ALL_SCANS,
    NO_FINDINGS,
    Contract,
    DetectorBase,
    Emits,
    Lifecycle,
    ScanContext,
)
from logiwatch.detectors.state import DISPATCHED, PAID, PICKED_UP, Env, Finding, ParcelState

#: the alert type's value, read once (an enum member's ``.value`` is a Python-level property)
_PICKUP_TIMEOUT = AnomalyType.PICKUP_TIMEOUT.value


def pickup_baseline(min_count: int) -> DurationBaseline:
    return DurationBaseline((900, 1800, 4 * 3600, 16 * 3600, 20 * 3600, 30 * 3600), min_count=min_count)


class PickupTimeoutDetector(DetectorBase):
    """Catches parcels waiting for the carrier's pickup far longer than usual.

    Parameters
    ----------
    env: the engine's shared environment.
    p99_factor: deadline as a multiple of the learned p99 pickup delay (1.5: a carrier that
        picks up next day has a p99 near 43 h, and 2 x that, 86 h, let pickups 72-86 h late
        pass unseen; its parcels do not wait 1.5 x their p99 unless something is wrong).
    min_wait_s: never alert sooner than this after dispatch.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H)
    >>> [a.alert_type.value for a in sc.run(detectors=("pickup_timeout",), until=5 * 24 * H)]
    ['pickup_timeout']
    """

    name = "pickup_timeout"
    contract = Contract(
        handles=ALL_SCANS - {PAID},  # a payment changes nothing for the pickup
        emits=(Emits(AnomalyType.PICKUP_TIMEOUT, Lifecycle.SELF),),
        baselines={"pickup": pickup_baseline},
    )

    def __init__(self, env: Env, *, p99_factor: float = 1.5, min_wait_s: float = 54 * 3600) -> None:
        if p99_factor <= 0:
            raise ValueError("pickup_timeout: p99_factor must be positive")
        self.env = env
        self.pickup = env.baseline("pickup")
        self.p99_factor = float(p99_factor)
        self.min_wait_s = float(min_wait_s)

    def _keys(self, state: ParcelState) -> tuple[str, str, str]:
        return (f"{state.carrier}|{state.origin}", state.carrier, "*")

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        code = scan.code
        t = event.event_time
        if code == DISPATCHED and scan.latest and not state.final_at and not state.has(PICKED_UP):
            q = self.pickup.quantiles(self._keys(state))
            wait_s = max(q[P99] * self.p99_factor, self.min_wait_s) * self.env.calendar.peak_factor(t)
            self.set_due(state, t + self.env.calendar.extend(state.carrier, t, int(wait_s * 1000)))
            return NO_FINDINGS
        if code == PICKED_UP and scan.latest:
            dispatched = state.first_time(DISPATCHED)
            if dispatched is not None and _PICKUP_TIMEOUT not in state.open and not state.tainted:
                self.pickup.learn(self._keys(state), (t - dispatched) / 1000)
        if code > DISPATCHED:
            self.set_due(state, None)
            if _PICKUP_TIMEOUT in state.open:
                return [
                    Finding(
                        alert_type=AnomalyType.PICKUP_TIMEOUT,
                        status=AlertStatus.RESOLVED,
                        at_ms=t,
                        onset_ms=t,
                        summary="the carrier scanned the parcel",
                    )
                ]
        return NO_FINDINGS

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        dispatched = state.first_time(DISPATCHED)
        if dispatched is None or any(e[1] > DISPATCHED for e in state.route):
            return NO_FINDINGS
        q = self.pickup.quantiles(self._keys(state))
        key, n = self.pickup.source(self._keys(state))
        waited_s = (now_ms - dispatched) / 1000
        return [
            Finding(
                alert_type=AnomalyType.PICKUP_TIMEOUT,
                at_ms=now_ms,
                onset_ms=dispatched,
                severity=Severity.WARNING,
                summary=(
                    f"Parcel {state.waybill} dispatched {waited_s / 3600:.1f} h ago is not picked up by "
                    f"{state.carrier} (usual p99 {q[P99] / 3600:.1f} h)"
                ),
                evidence={
                    "waited_s": waited_s,
                    "expected_pickup_p95_s": round(q[P95], 1),
                    "expected_pickup_p99_s": round(q[P99], 1),
                    "baseline_key": key,
                    "baseline_n": n,
                },
            )
        ]
