"""Likely lost: silent far beyond the stall threshold; escalates the stall.

The deadline is ``factor`` times the silence the parcel's stage allows (the
stall threshold at a node, the leg limit in transit, which those detectors
provide as ``values.SILENCE_LIMIT_S``), but no more than ``max_extra_s`` beyond that silence (on a
lane of weeks, six times the stall threshold would be half a year), and at
least ``min_silence_s``, moved past non-working days. While that silence is not learned yet (a cold start) the detector
raises nothing and looks again every ``recheck_s``; at its deadline it reads
the stage's silence again (it follows what has been learned since). The alert
is its own type (``likely_lost``) and names the open stall alert in its
evidence, so the alert service can escalate rather than duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence

from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.protocol import NO_FINDINGS, Contract, DetectorBase, Emits, Lifecycle, ScanContext
from logiwatch.detectors.state import (
    FINAL_CODES,
    PICKED_UP,
    TYPES,
    Env,
    Finding,
    ParcelState,
)
from logiwatch.detectors.values import SILENCE_COLD, SILENCE_LIMIT_S, STALL_THRESHOLD_S

#: the alert type's value, read once (an enum member's ``.value`` is a Python-level property)
_STALL = AnomalyType.STALL.value


class LostDetector(DetectorBase):
    """Catches parcels that went silent for good after pickup.

    Parameters
    ----------
    env: the engine's shared environment.
    factor: multiple of the stall threshold after which a silent parcel is likely lost.
    min_silence_s: never call a parcel lost sooner than this.
    max_extra_s: never wait more than this beyond the stage's own silence limit.
    recheck_s: while the stage's silence is not learned yet, look again after this, then after as
        long as the parcel has been silent (backing off).

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> for i in range(40):  # teach the hub its normal dwell (2 h)
    ...     _ = sc.parcel(f"N{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H).departed(5 * H)
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H)
    >>> [a.alert_type.value for a in sc.run(detectors=("stall", "lost"), until=20 * 24 * H) if a.waybill_id == "WB1"]
    ['stall', 'likely_lost']
    """

    name = "lost"
    contract = Contract(
        emits=(Emits(AnomalyType.LIKELY_LOST, Lifecycle.RESOLVE_ON_MOVE),),
        needs=(SILENCE_LIMIT_S, SILENCE_COLD, STALL_THRESHOLD_S),
        #: its evidence names the open stall alert it escalates
        reads_alerts=(AnomalyType.STALL,),
    )

    def __init__(
        self,
        env: Env,
        *,
        factor: float = 6.0,
        min_silence_s: float = 4 * 86400,
        max_extra_s: float = 30 * 86400,
        recheck_s: float = 86400,
    ) -> None:
        if factor <= 1 or min_silence_s < 0 or max_extra_s <= 0 or recheck_s <= 0:
            raise ValueError("lost: factor must be > 1, max_extra_s and recheck_s positive, min_silence_s >= 0")
        self.env = env
        self.factor = float(factor)
        self.min_silence_s = float(min_silence_s)
        self.max_extra_s = float(max_extra_s)
        self.recheck_s = float(recheck_s)

    def _silence_s(self, state: ParcelState) -> float:
        ref = SILENCE_LIMIT_S.value(state, 0.0)
        return max(min(ref * self.factor, ref + self.max_extra_s), self.min_silence_s)

    def _arm(self, state: ParcelState, t: int, now_ms: int) -> bool:
        """Set the deadline; True when it is due now (the parcel has been silent long enough)."""

        if SILENCE_COLD.get(state):
            first = t + int(self.min_silence_s * 1000)
            self.set_due(state, first if now_ms < first else now_ms + max(int(self.recheck_s * 1000), now_ms - t))
            return False
        due = t + self.env.calendar.extend(state.carrier, t, int(self._silence_s(state) * 1000))
        self.set_due(state, max(due, now_ms))
        return due <= now_ms

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        if not scan.latest:
            return NO_FINDINGS
        code = scan.code
        if state.final_at or code < PICKED_UP or code in FINAL_CODES:
            self.set_due(state, None)
            return NO_FINDINGS
        t = event.event_time
        self._arm(state, t, t)
        return NO_FINDINGS

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        last = state.last
        if last is None or state.final_at:
            return NO_FINDINGS
        t, code, node, region = last
        if not self._arm(state, t, now_ms):
            return NO_FINDINGS  # not learned yet, or the stage's silence grew since: look again later
        self.set_due(state, None)
        stall = state.open.get(_STALL)
        silent_s = (now_ms - t) / 1000
        return [
            Finding(
                alert_type=AnomalyType.LIKELY_LOST,
                at_ms=now_ms,
                onset_ms=t,
                severity=Severity.CRITICAL,
                episode=f"{node}:{code}:{t}",
                node=node,
                region=region,
                summary=(
                    f"Parcel {state.waybill} is likely lost: silent for {silent_s / 86400:.1f} days "
                    f"since {TYPES[code].value} at {node}"
                ),
                evidence={
                    "silent_s": silent_s,
                    "stall_threshold_s": round(STALL_THRESHOLD_S.value(state, 0.0), 1),
                    "lost_threshold_s": round(self._silence_s(state), 1),
                    "stall_alert_id": stall[0] if stall else None,
                },
            )
        ]
