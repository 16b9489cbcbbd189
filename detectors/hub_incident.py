"""Hub incident: a hub where many parcels overstay at once (outage, weather), linked to its parcels.

The detector keeps, per hub, the parcels currently there (arrived, not yet
moved on; an exception scan at the hub does not move a parcel on). Every
``eval_every_s`` of event time at a hub it scores one time bucket: the
parcels whose dwell limit (``dwell_factor`` x the hub's learned p95 dwell for
their arrival's time of day) ran out within the last ``cohort_span_s`` form
the cohort, and ``k`` of its ``n`` parcels are still there. A river
``proba.Beta`` per hub holds the hub's normal overdue rate, learned only from
buckets that looked normal while no incident was open (protected learning:
an outage does not become the hub's normal); the score is the beta-binomial
tail P(X >= k | n), the chance of that many stragglers on a normal day. A
bucket is bad when that tail is below ``p_threshold`` with at least
``min_parcels`` overdue and ``min_fraction`` of the cohort; ``confirm``
consecutive bad buckets after ``warmup_s`` open an incident. Its id is
``make_alert_id("hub_incident", hub, onset bucket start)``, the onset being
the hub's last departure before the first bad bucket rounded down to
``onset_bucket_s``: departures leave in scheduled waves shared by every
partition, so the partition engines that see the same outage give it the same
id (the alert service merges by id; revisions grow as parcels join). It
names the hub, the window and the parcels at the hub, and stall alerts at the
hub carry its id (also for a day after it closed, when their dwell began
before it ended). It resolves when the hub's backlog (present parcels past
their limit) has cleared to its usual stragglers (``resolve_share``). Parcels
present longer than ``max_present_s`` (lost) are dropped from the count so
they cannot hold an incident open forever.

The scorer runs in the hub stage (``detectors/hub_stage.py``), over every
partition's hub facts, not inside a parcel engine: each parcel engine only
records :class:`HubFact` rows (arrivals, departures) with
:class:`HubFactsRecorder` and hands them out per clock tick as a
:class:`HubSummary`. The per-hub scorer state (Beta counts, last departure,
onset of the bad run) is a typed :class:`HubScore` per hub (``HubEnv.scores``), beside the
hub's arrival buckets.
"""

from __future__ import annotations

import math
from typing import ClassVar

import msgspec
from river import proba

from logiwatch.detectors.baselines import P95
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, ScanEvent, Severity, make_alert_id
from logiwatch.detectors.protocol import Contract, ScanContext
from logiwatch.detectors.state import (
    EXCEPTION,
    HUB_ARRIVED,
    Env,
    Finding,
    ParcelState,
    dwell_baseline,
)
from logiwatch.detectors.values import TELEPORT_AT

#: keys under which snapshots before ``HubScore`` kept the scorer state in a hub's arrival
#: buckets (bucket numbers are >= 0); read once, when such a snapshot is restored
OLD_ALPHA, OLD_BETA, OLD_LAST_DEPARTURE, OLD_RUN_ONSET = -1, -2, -3, -4
QUARTER_DAY_MS = 21_600_000


def overdue_tail(k: int, n: int, alpha: float, beta: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(n, alpha, beta): the chance of k or more stragglers among n.

    >>> round(overdue_tail(3, 3, 1, 19), 5)  # three of three still there, with the 5 % prior
    0.00065
    >>> overdue_tail(0, 5, 1, 19)
    1.0
    """

    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    lb = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    total = 0.0
    for x in range(k, n + 1):
        log_choose = math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
        log_b = math.lgamma(x + alpha) + math.lgamma(n - x + beta) - math.lgamma(n + alpha + beta)
        total += math.exp(log_choose + log_b - lb)
    return min(1.0, total)


def _finite(value: float, fallback: float) -> float:
    return fallback if value == float("inf") else value


#: kinds of :class:`HubFact` (a departure sorts before an arrival at the same time)
DEPART, ARRIVE = 0, 1
HUB_SUMMARY_VERSION = 1


class HubFact(msgspec.Struct, array_like=True, frozen=True, order=True):
    """One parcel arriving at or leaving a hub; the stage applies them sorted by (time, waybill, kind)."""

    time_ms: int
    waybill: str
    kind: int
    hub: str
    region: str = ""
    #: a departure straight after the arrival scan (its dwell is the hub's HUB_ARRIVED dwell)
    direct: bool = False


class HubSummary(msgspec.Struct, kw_only=True, frozen=True):
    """A parcel partition's hub facts since its previous tick; an empty one still carries the tick (watermark)."""

    source: int
    tick_ms: int
    facts: tuple[HubFact, ...] = ()
    version: int = HUB_SUMMARY_VERSION


class HubScore(msgspec.Struct, array_like=True):
    """What the scorer has learned about one hub, and where its current bad run began."""

    #: the learned Beta counts of the hub's overdue rate (None: the prior)
    alpha: int | None = None
    beta: int | None = None
    #: time of the hub's last on-time departure (0: none yet): where an incident's window opens
    last_departure: int = 0
    #: onset of the run of bad buckets being confirmed (None: no run)
    run_onset: int | None = None


def migrate_scores(arrivals: dict[str, dict[int, int]]) -> dict[str, HubScore]:
    """Take the scorer state out of an old snapshot's arrival buckets (negative keys), as ``HubScore``s."""

    scores: dict[str, HubScore] = {}
    for hub, counts in arrivals.items():
        if not any(b < 0 for b in counts):
            continue
        run = counts.pop(OLD_RUN_ONSET, None)
        scores[hub] = HubScore(
            alpha=counts.pop(OLD_ALPHA, None),
            beta=counts.pop(OLD_BETA, None),
            last_departure=counts.pop(OLD_LAST_DEPARTURE, 0),
            run_onset=run,
        )
    return scores


class HubEnv:
    """What the scorer keeps per hub (the hub stage's state; one for all partitions)."""

    def __init__(self, min_count: int) -> None:
        self.dwell = dwell_baseline(min_count)  # the engines' prior, count and clipping
        #: hub -> {waybill: arrival_ms}: parcels currently at each hub
        self.present: dict[str, dict[str, int]] = {}
        #: hub -> open incident [alert_id, window_start, last_eval, revision, n_affected]
        self.incidents: dict[str, list[int | str]] = {}
        #: hub -> last closed incident [alert_id, window_start, window_end]
        self.recent_incidents: dict[str, list[int | str]] = {}
        #: hub -> affected waybills of its open incident
        self.affected: dict[str, list[str]] = {}
        #: hub -> {15-min bucket: arrivals}
        self.arrivals: dict[str, dict[int, int]] = {}
        #: hub -> what the scorer has learned about it
        self.scores: dict[str, HubScore] = {}
        #: hub -> consecutive evaluations that found it broken (before an incident opens)
        self.suspect: dict[str, int] = {}
        #: hub -> next evaluation time
        self.next_eval: dict[str, int] = {}
        #: hub -> its region (from its first arrival)
        self.region: dict[str, str] = {}
        #: hub -> time of the newest fact seen there
        self.seen: dict[str, int] = {}

    def score(self, hub: str) -> HubScore:
        """The hub's scorer state, made (the prior) on first use."""

        got = self.scores.get(hub)
        if got is None:
            got = self.scores[hub] = HubScore()
        return got


class HubIncidentScorer:
    """Catches hub-wide slowdowns and maps them to the parcels they hold.

    Parameters
    ----------
    env: the hub stage's state.
    eval_every_s: the scoring bucket: each hub is scored once per bucket of event time.
    dwell_factor: a parcel is overdue above dwell_factor * the hub's p95 dwell.
    min_parcels, min_fraction: overdue parcels (count, and share of their cohort) a bad bucket needs.
    p_threshold: a bucket is bad when the beta-binomial tail of its overdue count is below this.
    prior_alpha, prior_beta: the Beta prior of a hub's overdue rate (1, 19: the p95 limit's 5 %).
    max_weight: the learned Beta counts are halved above this total (the rate follows the hub).
    cohort_span_s: the cohort scored: parcels whose dwell limit ran out within this span.
    warmup_s: event time a hub must have been seen for before it can raise an incident.
    confirm: consecutive bad buckets that open an incident.
    onset_bucket_s: the incident's onset (the hub's last departure) is rounded down to this for its id.
    resolve_share: the incident resolves when the backlog falls below this share of present parcels.
    max_affected: parcels listed in the alert (default all it tracks: the stored incident names every affected parcel).
    max_present_s: parcels at a hub longer than this no longer count (they are lost, not delayed).

    >>> from logiwatch.detectors.engine import EngineConfig
    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> for i in range(6):  # six parcels reach HUB-A and never leave
    ...     _ = sc.parcel(f"WB{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H + i * 60_000)
    >>> for i, at in enumerate((22 * H, 22 * H + 35 * 60_000)):  # later arrivals: the hub is scored at the next tick
    ...     _ = sc.parcel(f"LATER{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", at)
    >>> cfg = EngineConfig(knobs={"hub_incident": {"warmup_s": 0}})
    >>> run = sc.run(config=cfg, detectors=("hub_incident",), until=23 * H, tick_every_ms=600_000)
    >>> [(a.alert_type.value, a.node_id) for a in run]
    [('hub_incident', 'HUB-A')]
    """

    name = "hub_incident"

    def __init__(
        self,
        env: HubEnv,
        *,
        eval_every_s: float = 1800,
        dwell_factor: float = 1.0,
        min_parcels: int = 4,
        min_fraction: float = 0.5,
        p_threshold: float = 0.001,
        prior_alpha: int = 1,
        prior_beta: int = 19,
        max_weight: int = 2000,
        max_affected: int = 100_000,
        max_present_s: float = 3 * 86400,
        cohort_span_s: float = 2 * 3600,
        warmup_s: float = 30 * 3600,
        confirm: int = 2,
        onset_bucket_s: float = 3600,
        resolve_share: float = 0.1,
    ) -> None:
        self.env = env
        self.eval_every_ms = int(eval_every_s * 1000)
        self.dwell_factor = dwell_factor
        self.min_parcels = int(min_parcels)
        self.min_fraction = min_fraction
        self.p_threshold = p_threshold
        self.prior_alpha = int(prior_alpha)
        self.prior_beta = int(prior_beta)
        self.max_weight = int(max_weight)
        self.max_affected = max_affected
        self.max_present_ms = int(max_present_s * 1000)
        self.cohort_span_ms = int(cohort_span_s * 1000)
        self.bucket_ms = 900_000
        self.warmup_ms = int(warmup_s * 1000)
        self.confirm = confirm
        self.onset_bucket_ms = int(onset_bucket_s * 1000)
        self.resolve_share = resolve_share
        if self.eval_every_ms <= 0 or self.onset_bucket_ms <= 0:
            raise ValueError("hub_incident eval_every_s and onset_bucket_s must be > 0")
        if self.prior_alpha < 1 or self.prior_beta < 1:
            raise ValueError("hub_incident prior_alpha and prior_beta must be >= 1")
        #: hub -> its river Beta, kept between evaluations (building one seeds a random generator,
        #: which cost more than the scoring); the counts in ``env.arrivals`` stay the truth
        self._scorers: dict[str, proba.Beta] = {}
        #: hub -> its dwell baseline key chains per 6-hour arrival bucket (built once, not per call)
        self._limit_keys: dict[str, tuple[tuple[str, str, str], ...]] = {}

    def scorer(self, hub: str) -> proba.Beta:
        """The hub's learned overdue rate (a river Beta posterior; the prior while the hub is new)."""

        score = self.env.scores.get(hub)
        alpha = self.prior_alpha if score is None or score.alpha is None else score.alpha
        beta = self.prior_beta if score is None or score.beta is None else score.beta
        b = self._scorers.get(hub)
        if b is None:
            b = self._scorers[hub] = proba.Beta(alpha, beta)
        elif b.alpha != alpha or b.beta != beta:  # restored, or halved: follow the counts
            b.alpha, b.beta = alpha, beta
        return b

    def _learn(self, hub: str, score: HubScore, k: int, n: int) -> None:
        # a normal bucket: k stragglers out of n is what this hub does on a good day
        b = self.scorer(hub)
        for _ in range(k):
            b.update(True)
        for _ in range(n - k):
            b.update(False)
        alpha, beta = int(b.alpha), int(b.beta)
        if alpha + beta > self.max_weight:
            # forget half (integers, so a restored engine has the very same rate)
            alpha, beta = max(1, alpha // 2), max(1, beta // 2)
        score.alpha, score.beta = alpha, beta

    def depart(self, fact: HubFact) -> None:
        """A parcel left ``fact.hub``: it counts no more, and an on-time departure marks the hub working."""

        env = self.env
        hub, t = fact.hub, fact.time_ms
        at = env.present.get(hub)
        arrived = at.pop(fact.waybill, None) if at is not None else None
        if arrived is None or hub not in env.arrivals:
            return
        limit = self._limits(hub)[(arrived // QUARTER_DAY_MS) % 4]
        # only a departure on time says the hub works: stragglers leaving after an outage do not
        score = env.score(hub)
        if t > score.last_departure and t - arrived <= limit:
            score.last_departure = t
        if fact.direct and not self._protected(hub, arrived):
            self.env.dwell.learn(_hub_keys(hub, arrived), (t - arrived) / 1000)

    def _protected(self, hub: str, arrived: int) -> bool:
        # protected learning: a parcel held by an (open or recent) incident is not the hub's normal
        if hub in self.env.incidents:
            return True
        recent = self.env.recent_incidents.get(hub)
        return recent is not None and arrived <= int(recent[2])

    def arrive(self, fact: HubFact) -> None:
        env = self.env
        hub, t, wb = fact.hub, fact.time_ms, fact.waybill
        env.present.setdefault(hub, {})[wb] = t
        env.region.setdefault(hub, fact.region)
        counts = env.arrivals.setdefault(hub, {})
        bucket = t // self.bucket_ms
        counts[bucket] = counts.get(bucket, 0) + 1
        affected = env.affected.get(hub)
        if affected is not None and len(affected) < 100_000 and wb not in affected:
            affected.append(wb)

    def evaluate(self, hub: str, now: int) -> list[Finding]:
        """Score the hub at ``now`` if its evaluation is due (once per ``eval_every_s``)."""

        env = self.env
        if now < env.next_eval.get(hub, 0) or hub not in env.present:
            return []
        env.next_eval[hub] = now - now % self.eval_every_ms + self.eval_every_ms
        present = env.present[hub]
        stale = now - self.max_present_ms
        for wb in [wb for wb, a in present.items() if a < stale]:
            del present[wb]  # lost, not delayed: they no longer count (and the stage stays bounded)
        return self._evaluate(hub, env.region.get(hub, ""), now)

    def _limits(self, hub: str) -> list[int]:
        """The hub's dwell limit (ms) per 6-hour arrival bucket: it depends on the departure schedules."""

        chains = self._limit_keys.get(hub)
        if chains is None:
            chains = self._limit_keys[hub] = tuple(_hub_keys(hub, hb * QUARTER_DAY_MS) for hb in range(4))
        quantiles = self.env.dwell.quantiles
        factor = self.dwell_factor
        prior = self.env.dwell.prior[P95]
        # a p95 the data cannot pin down yet (censored stalls above it) falls back on the prior
        return [int(_finite(quantiles(keys)[P95], prior) * factor * 1000) for keys in chains]

    def _cohort(self, counts: dict[int, int], limits: list[int], first: int, now: int) -> int:
        """Arrivals whose dwell limit ran out within the last span: they should all have left by now.

        Buckets older than any cohort still to be scored are dropped from ``counts``.
        """

        lo = now - self.cohort_span_ms
        oldest = (now - max(limits) - self.cohort_span_ms) // self.bucket_ms
        cohort = 0
        for b in list(counts):
            if b == first:
                continue  # the first bucket marks the warm-up
            if b < oldest - 8:
                del counts[b]  # older than any cohort we will look at again
                continue
            due = b * self.bucket_ms + self.bucket_ms // 2 + limits[(b * self.bucket_ms // QUARTER_DAY_MS) % 4]
            if lo <= due <= now:
                cohort += counts[b]
        return cohort

    def _evaluate(self, hub: str, region: str, now: int) -> list[Finding]:
        env = self.env
        present = env.present[hub]
        limits = self._limits(hub)
        lo = now - self.cohort_span_ms
        counts = env.arrivals.setdefault(hub, {})
        first = min(counts, default=0)
        score = env.score(hub)
        cohort = self._cohort(counts, limits, first, now)
        overdue = []
        backlog = 0  # all present parcels past their limit (within max_present_s)
        stale = now - self.max_present_ms
        for a in present.values():
            due = a + limits[(a // QUARTER_DAY_MS) % 4]
            if due <= now and a >= stale:
                backlog += 1
                if lo <= due:
                    overdue.append(a)
        k = len(overdue)
        n = max(cohort, k)  # the cohort is counted from 15-minute bins: never fewer than the stragglers
        share = k / n if n else 0.0
        scorer = self.scorer(hub)
        tail = overdue_tail(k, n, scorer.alpha, scorer.beta)
        inc = env.incidents.get(hub)
        counted = sum(1 for a in present.values() if a >= stale)
        evidence: dict[str, float | int | str | bool | None] = {
            "overdue_parcels": k,
            "backlog_parcels": backlog,
            "cohort_arrivals": n,
            "overdue_share": round(share, 4),
            "expected_share": round(scorer.alpha / (scorer.alpha + scorer.beta), 4),
            "p_value": float(f"{tail:.3g}"),
            "present_parcels": counted,
            "dwell_limit_s": max(limits) / 1000,
        }
        if inc is None:
            bad = k >= self.min_parcels and share >= self.min_fraction and tail <= self.p_threshold
            if not bad:
                env.suspect.pop(hub, None)
                score.run_onset = None
                self._learn(hub, score, k, n)
                return []
            # a hub must look broken on `confirm` consecutive buckets: one bad truck is not an incident
            seen = env.suspect[hub] = env.suspect.get(hub, 0) + 1
            if seen == 1:
                # the hub was last seen moving parcels then: every partition saw that departure wave
                last = score.last_departure
                score.run_onset = last if last > 0 else min(overdue)
            if seen < self.confirm:
                return []
            if now - first * self.bucket_ms < self.warmup_ms:
                return []  # early dwells are biased short (long ones are not over yet): wait for a baseline
            onset = min(overdue) if score.run_onset is None else score.run_onset
            score.run_onset = None
            start = onset - onset % self.onset_bucket_ms
            aid = make_alert_id(AnomalyType.HUB_INCIDENT, hub, start)
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


def _hub_keys(hub: str, arrived_ms: int) -> tuple[str, str, str]:
    # the carrier-blind keys the stall detector learns too (``stall.dwell_keys``), same names
    hb = (arrived_ms // QUARTER_DAY_MS) % 4
    return (f"{hub}|{HUB_ARRIVED}|*|{hb}", f"{hub}|{HUB_ARRIVED}", f"*|{HUB_ARRIVED}")


class HubFactsRecorder:
    """The parcel side of hub incidents: records arrivals and departures, scores nothing.

    An exception scan at the hub the parcel waits at is not a departure; a
    teleport (contradiction) or a scan after the final one is no arrival. The
    engine hands the facts out per clock tick (``Engine.take_hub_summaries``);
    the hub stage scores them over all partitions. Its knobs are the stage's
    (``HubIncidentScorer``): it only checks them, so a bad one fails when
    the engine starts.

    >>> from logiwatch.detectors.engine import Engine, EngineConfig
    >>> from logiwatch.detectors.model import Tick
    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario(start_ms=0)
    >>> _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H).departed(5 * H)
    >>> engine = Engine(EngineConfig(detectors=("hub_incident",)))
    >>> _ = engine.process([*sc.events(), Tick(tick_time=6 * H)])
    >>> [(f.kind, f.hub, f.direct) for s in engine.take_hub_summaries() for f in s.facts]
    [(1, 'HUB-A', False), (0, 'HUB-A', True)]
    """

    name: ClassVar[str] = "hub_incident"
    contract: ClassVar[Contract] = Contract(needs=(TELEPORT_AT,))

    def __init__(self, env: Env, **stage_knobs: float | bool | str) -> None:
        HubIncidentScorer(HubEnv(1), **stage_knobs)  # type: ignore[arg-type]  # bad knobs fail here, at start
        #: facts since the last tick, in partition order
        self.pending: list[HubFact] = []

    def observe(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> None:
        if not scan.latest:
            return
        prev = scan.prev
        code = scan.code
        if prev is not None and prev[1] in (HUB_ARRIVED, EXCEPTION):
            if code == EXCEPTION and prev[2] == event.node_id:
                return  # an exception at the hub (e.g. HUB_DELAY) is the parcel still waiting there
            direct = prev[1] == HUB_ARRIVED
            self.pending.append(HubFact(event.event_time, state.waybill, DEPART, prev[2], direct=direct))
        if code != HUB_ARRIVED or state.final_at or TELEPORT_AT.get(state) == event.event_time:
            return
        self.pending.append(HubFact(event.event_time, state.waybill, ARRIVE, event.node_id, event.region))


def hub_alert(f: Finding) -> Alert:
    """The alert of a hub-level finding (it carries its own id; the incident is its own ``incident_id``)."""

    assert f.alert_id is not None
    return Alert(
        alert_id=f.alert_id,
        alert_type=f.alert_type,
        status=f.status,
        severity=f.severity,
        detected_at=f.at_ms,
        summary=f.summary,
        onset_at=f.onset_ms,
        node_id=f.node,
        region=f.region,
        incident_id=f.alert_id,
        affected_waybills=f.affected,
        window_start=f.window_start,
        window_end=f.window_end,
        revision=f.revision,
        evidence=f.evidence,
    )
