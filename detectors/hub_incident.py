"""Hub incident: a hub where many parcels overstay at once (outage, weather), linked to its parcels.

The detector keeps, per hub, the parcels currently there (arrived, not yet
moved on). Every ``eval_every_s`` of event time at a hub it scores the hub:
among the parcels whose dwell limit (``dwell_factor`` x the hub's learned
p95 dwell for their arrival's time of day) ran out within the last
``cohort_span_s``, it counts those still there, and their share of all such
arrivals (a robust, count-based score: normally almost all have
left; one stuck parcel is a stall, most of a cohort at once is an incident). Above ``min_parcels`` and ``min_fraction`` an incident opens:
its id is stable (hub + hour of the earliest overdue arrival), it names the
hub, the window and the parcels at the hub, and parcel stall alerts at that
hub carry its id (also for a day after it closed, when their dwell began
before it ended). New parcels re-emit it with ``revision + 1`` when the
affected count grows by half; it resolves when the hub's backlog (present
parcels past their limit) has cleared to its usual stragglers (``resolve_share``). Parcels present longer than ``max_present_s`` (lost) are
dropped from the count so they cannot hold an incident open forever.
"""

from __future__ import annotations

from logiwatch.detectors.baselines import P95
from logiwatch.detectors.model import AlertStatus, AnomalyType, ScanEvent, Severity, make_alert_id
from logiwatch.detectors.state import CODES, HUB_ARRIVED, DeadlineMixin, Env, Finding, ParcelState


class HubIncidentDetector(DeadlineMixin):
    """Catches hub-wide slowdowns and maps them to the parcels they hold.

    Parameters
    ----------
    env: the engine's shared environment.
    eval_every_s: how often (event time) each hub is scored.
    dwell_factor: a parcel is overdue above dwell_factor * the hub's p95 dwell.
    min_parcels, min_fraction: overdue parcels (count, and share of their arrival cohort) that make an incident.
    cohort_span_s: the cohort scored: parcels whose dwell limit ran out within this span.
    warmup_s: event time a hub must have been seen for before it can raise an incident.
    confirm: consecutive evaluations that must find the hub broken before the incident opens.
    resolve_share: the incident resolves when the backlog falls below this share of present parcels.
    max_affected: parcels listed in the alert (the full count is in the evidence).
    max_present_s: parcels at a hub longer than this no longer count (they are lost, not delayed).

    >>> from logiwatch.detectors.engine import EngineConfig
    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> for i in range(6):  # six parcels reach HUB-A and never leave
    ...     _ = sc.parcel(f"WB{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H + i * 60_000)
    >>> for i, at in enumerate((22 * H, 22 * H + 35 * 60_000)):  # later arrivals trigger the scoring
    ...     _ = sc.parcel(f"LATER{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", at)
    >>> cfg = EngineConfig(knobs={"hub_incident": {"warmup_s": 0}})
    >>> [(a.alert_type.value, a.node_id) for a in sc.run(config=cfg, detectors=("hub_incident",), until=23 * H)]
    [('hub_incident', 'HUB-A')]
    """

    name = "hub_incident"

    def __init__(
        self,
        env: Env,
        *,
        eval_every_s: float = 1800,
        dwell_factor: float = 1.0,
        min_parcels: int = 4,
        min_fraction: float = 0.5,
        max_affected: int = 500,
        max_present_s: float = 3 * 86400,
        cohort_span_s: float = 2 * 3600,
        warmup_s: float = 30 * 3600,
        confirm: int = 2,
        resolve_share: float = 0.1,
    ) -> None:
        self.env = env
        self.eval_every_ms = int(eval_every_s * 1000)
        self.dwell_factor = dwell_factor
        self.min_parcels = min_parcels
        self.min_fraction = min_fraction
        self.max_affected = max_affected
        self.max_present_ms = int(max_present_s * 1000)
        self.cohort_span_ms = int(cohort_span_s * 1000)
        self.bucket_ms = 900_000
        self.warmup_ms = int(warmup_s * 1000)
        self.confirm = confirm
        self.resolve_share = resolve_share

    def on_event(self, state: ParcelState, event: ScanEvent) -> list[Finding]:
        env = self.env
        if not env.latest:
            return []
        prev = env.prev
        wb = state.waybill
        if prev is not None and prev[1] == HUB_ARRIVED:
            at = env.present.get(prev[2])
            if at is not None:
                at.pop(wb, None)
        if CODES[event.event_type] != HUB_ARRIVED or state.final_at or state.note.get("teleport_at") == event.event_time:
            return []
        hub = event.node_id
        t = event.event_time
        present = env.present.get(hub)
        if present is None:
            present = env.present[hub] = {}
        present[wb] = t
        counts = env.arrivals.get(hub)
        if counts is None:
            counts = env.arrivals[hub] = {}
        bucket = t // self.bucket_ms
        counts[bucket] = counts.get(bucket, 0) + 1
        affected = env.affected.get(hub)
        if affected is not None and len(affected) < 100_000 and wb not in affected:
            affected.append(wb)
        if t < env.next_eval.get(hub, 0):
            return []
        env.next_eval[hub] = t - t % self.eval_every_ms + self.eval_every_ms
        return self._evaluate(hub, event.region, t)

    def _evaluate(self, hub: str, region: str, now: int) -> list[Finding]:
        env = self.env
        present = env.present[hub]
        # the dwell limit depends on the arrival's time of day (departure schedules)
        limits = [
            int(env.dwell.quantiles((f"{hub}|{HUB_ARRIVED}|*|{hb}", f"{hub}|{HUB_ARRIVED}", f"*|{HUB_ARRIVED}"))[P95]
                * self.dwell_factor * 1000)
            for hb in range(4)
        ]
        lo = now - self.cohort_span_ms
        # the cohort: parcels whose limit ran out within the last span should all have left
        counts = env.arrivals.get(hub, {})
        oldest = (now - max(limits) - self.cohort_span_ms) // self.bucket_ms
        first = min(counts, default=0)
        cohort = 0
        for b in list(counts):
            if b < oldest - 8 and b != first:
                del counts[b]  # older than any cohort we will look at again (the first marks warm-up)
                continue
            if b == first and b < oldest - 8:
                continue
            due = b * self.bucket_ms + self.bucket_ms // 2 + limits[(b * self.bucket_ms // 21_600_000) % 4]
            if lo <= due <= now:
                cohort += counts[b]
        overdue = []
        backlog = 0  # all present parcels past their limit (within max_present_s)
        stale = now - self.max_present_ms
        for a in present.values():
            due = a + limits[(a // 21_600_000) % 4]
            if due <= now and a >= stale:
                backlog += 1
                if lo <= due:
                    overdue.append(a)
        k = len(overdue)
        share = min(1.0, k / cohort) if cohort else 0.0
        inc = env.incidents.get(hub)
        counted = sum(1 for a in present.values() if a >= stale)
        evidence: dict[str, float | int | str | bool | None] = {
            "overdue_parcels": k,
            "backlog_parcels": backlog,
            "cohort_arrivals": cohort,
            "overdue_share": round(share, 4),
            "present_parcels": counted,
            "dwell_limit_s": max(limits) / 1000,
        }
        if inc is None:
            if k < self.min_parcels or share < self.min_fraction:
                env.suspect.pop(hub, None)
                return []
            # a hub must look broken on `confirm` consecutive evaluations: one bad truck is not an incident
            seen = env.suspect[hub] = env.suspect.get(hub, 0) + 1
            if seen < self.confirm:
                return []
            if now - min(counts, default=now // self.bucket_ms) * self.bucket_ms < self.warmup_ms:
                return []  # early dwells are biased short (long ones are not over yet): wait for a baseline
            start = min(overdue)
            aid = make_alert_id(AnomalyType.HUB_INCIDENT, hub, start // 3_600_000)
            env.suspect.pop(hub, None)
            env.incidents[hub] = [aid, start, now, 0, counted]
            env.affected[hub] = sorted(wb for wb, a in present.items() if a >= stale)
            return [self._finding(hub, region, now, AlertStatus.FIRING, 0, evidence)]
        aid, start, rev, n_sent = str(inc[0]), int(inc[1]), int(inc[3]), int(inc[4])
        affected = env.affected.get(hub, [])
        if backlog < max(1, self.min_parcels // 2) or backlog < self.resolve_share * counted:
            # over when the backlog has cleared (to the hub's usual stragglers), not when arrivals resume
            del env.incidents[hub]
            env.affected.pop(hub, None)
            env.recent_incidents[hub] = [aid, start, now]
            return [self._finding(hub, region, now, AlertStatus.RESOLVED, int(rev), evidence, aid, int(start), affected)]
        inc[2] = now
        if len(affected) >= 1.5 * int(n_sent):
            inc[3] = int(rev) + 1
            inc[4] = len(affected)
            return [self._finding(hub, region, now, AlertStatus.FIRING, int(rev) + 1, evidence)]
        return []

    def _finding(
        self,
        hub: str,
        region: str,
        now: int,
        status: AlertStatus,
        revision: int,
        evidence: dict[str, float | int | str | bool | None],
        aid: str | None = None,
        start: int | None = None,
        affected: list[str] | None = None,
    ) -> Finding:
        inc = self.env.incidents.get(hub)
        if inc is not None:
            aid, start = str(inc[0]), int(inc[1])
            affected = self.env.affected.get(hub, [])
        assert aid is not None and start is not None and affected is not None
        evidence = {**evidence, "affected_count": len(affected)}
        verb = "resolved" if status is AlertStatus.RESOLVED else "ongoing"
        return Finding(
            alert_type=AnomalyType.HUB_INCIDENT,
            at_ms=now,
            onset_ms=start,
            status=status,
            severity=Severity.CRITICAL,
            node=hub,
            region=region,
            alert_id=aid,
            affected=tuple(affected[: self.max_affected]),
            window_start=start,
            window_end=now,
            revision=revision,
            summary=(
                f"Hub incident at {hub} ({verb}): {evidence['overdue_parcels']} of {evidence['present_parcels']} "
                f"parcels overdue, {len(affected)} parcels affected since the window opened"
            ),
            evidence=evidence,
        )

    def on_deadline(self, state: ParcelState, now_ms: int) -> list[Finding]:
        return []
