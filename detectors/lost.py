"""Likely lost: silent far beyond the stall threshold; escalates the stall.

The deadline is ``factor`` times the silence the parcel's stage allows (the
stall threshold at a node, the leg limit in transit, kept in ``state.note`` by
those detectors), and at least
``min_silence_s``, moved past non-working days. The alert is its own type
(``likely_lost``) and names the open stall alert in its evidence, so the alert
service can escalate rather than duplicate.
"""

from __future__ import annotations

from logiwatch.detectors.model import AnomalyType, ScanEvent, Severity
from logiwatch.detectors.state import (
    CODES,
    FINAL_CODES,
    PICKED_UP,
    TYPES,
    DeadlineMixin,
    Env,
    Finding,
    ParcelState,
)


class LostDetector(DeadlineMixin):
    """Catches parcels that went silent for good after pickup.

    Parameters
    ----------
    env: the engine's shared environment.
    factor: multiple of the stall threshold after which a silent parcel is likely lost.
    min_silence_s: never call a parcel lost sooner than this.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H)
    >>> [a.alert_type.value for a in sc.run(detectors=("stall", "lost"), until=20 * 24 * H)]
    ['stall', 'likely_lost']
    """

    name = "lost"

    def __init__(self, env: Env, *, factor: float = 6.0, min_silence_s: float = 4 * 86400) -> None:
        self.env = env
        self.factor = factor
        self.min_silence_s = min_silence_s

    def on_event(self, state: ParcelState, event: ScanEvent) -> list[Finding]:
        if not self.env.latest:
            return []
        code = CODES[event.event_type]
        if state.final_at or code < PICKED_UP or code in FINAL_CODES:
            self.set_due(state, None)
            return []
        t = event.event_time
        silence_s = max(state.note.get("silence_ref_s", 0.0) * self.factor, self.min_silence_s)
        self.set_due(state, t + self.env.calendar.extend(state.carrier, t, int(silence_s * 1000)))
        return []

    def on_deadline(self, state: ParcelState, now_ms: int) -> list[Finding]:
        last = state.last
        if last is None or state.final_at:
            return []
        t, code, node, region = last
        stall = state.open.get(AnomalyType.STALL.value)
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
                    "stall_threshold_s": round(state.note.get("stall_thr_s", 0.0), 1),
                    "lost_threshold_s": round(max(state.note.get("silence_ref_s", 0.0) * self.factor, self.min_silence_s), 1),
                    "stall_alert_id": stall[0] if stall else None,
                },
            )
        ]
