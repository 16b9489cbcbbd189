"""Predicted late arrival: warn as soon as the delivery promise is likely broken.

The model is the remaining time to delivery from a parcel's latest scan,
measured in units of the promise's whole span (r = remaining / U, U = promise -
the parcel's first scan, e.g. the payment): the promise knows roughly how long
the lane takes, so one distribution of r can stand for every lane of a carrier
until a lane has its own, and a parcel whose scan came D before the promise is
late exactly when r > D / U. The span is the whole promise's, not what is left
of it at the scan, because a parcel behind its promise does not catch up in
proportion: one picked up two days late still needs the lane's usual transit
(measured in the span left at the scan, the same transit looked shorter for it,
and its lateness showed only when it failed to arrive). It is learned online from
delivered parcels (all of them: a forecast must know how often parcels are
slow) per (node, scan type, destination), then (carrier, scan type, lane) and
(carrier, scan type); not across carriers, whose feeds and promises differ, except before the
hand-over (paid, dispatched: the merchant's wait, then a transit in the promise's unit), where
the stage over all carriers (``*|<type>``) is the last key, so a new carrier's or a cold start's
parcel that is not even dispatched is not left to its promise.
Promises are whole days, so a short lane's parcels use a smaller share of
theirs than the carrier's average (on the sparse scenario the lanes' median r
under one carrier runs from 0.11 to 0.58): while the lane's keys are too young
to decide, the carrier's distribution is scaled to the lane's own median
(shrunk toward the carrier's while the lane has few parcels). Where the node's or the lane's
own key is trusted, its remaining time learned in seconds decides instead (converted to this
parcel's unit). A misrouted parcel is
measured from its last scan on the way and taken to need as long back as it went wrong. While
the parcel is silent for e seconds after that scan, with D
seconds from the scan to the promise, the chance of being late is
P(r > D / U | r > e / U) = S(D / U) / S(e / U), with S the survival of r. Where the
feed scans every step that alone says little about a parcel stuck at an early
stage (its next scan may come any moment), so a second model learns the
remaining time after the *next* scan and a third the time until that next
scan (both in the same unit), which says how much longer the parcel will
likely stay where it is, given the e seconds it has already waited (three
conditional quantiles of the rest; past everything seen, as long again): the
parcel is late with probability mean_w S_next((promise - now) / U - w). The chance
of being late is the larger of the two; in a feed whose next scan is the
delivery (its median is nil) the second is not used and the first decides. The warning fires when that chance reaches ``late_probability``: at once when
a scan already makes it likely, else at the silence e* where S(e* / U) = S(D / U) /
``late_probability``
(a deadline, recomputed from what has been learned when it comes). So the
longer a parcel is silent the likelier it is late, and a feed whose next scan
is the delivery still warns days ahead. While no key is trusted only the
broken promise itself is certain; the detector looks again every
``recheck_s`` until a key is trusted. The alert
carries the probability, its lead and the key and size that decided it.

A warning more than ``last_call_s`` before the promise (an early one) also needs the carrier's
past early warnings, as many hours ahead, to have been right ``early_precision`` of the time
(learned from their outcomes; with none known yet, only within ``early_cold_h`` of the promise);
otherwise it waits for the last call. On a feed that scans every step the model is about as
right as it says days ahead; on a milestone feed it is not (a slow lane's normal parcel looks
like a held one), and a parcel still undelivered a day before its promise nearly always is late.
Within ``final_h`` of the promise (the last day, when a warning can no longer give CS a day to
act) a warning likewise needs the carrier's past last-day warnings, in the same band of chance
(below or at least 0.9), to have been right ``final_precision`` of the time (or none of their
outcomes known yet); otherwise the broken promise itself says it. There a milestone feed's
model reads the thin tail of a few dozen parcels: silent for two days, a parcel is a normal
weekend one or a held one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from math import inf, isinf, sqrt

from logiwatch.detectors.baselines import (
    P50,
    P99,
    DurationBaseline,
    KeyMemo,
    Quantiles,
    quantile_at,
    survival_at,
)
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
    CODE_STR,
    DELIVERED,
    DISPATCHED,
    FINAL_CODES,
    PAID,
    TYPES,
    Env,
    Finding,
    ParcelState,
    RouteEntry,
)

_PREDICTED_LATE = AnomalyType.PREDICTED_LATE.value
#: r = 1 (remaining time equal to the promise's whole span) is stored as this many "seconds"
#: in the duration histograms (their range is 8 s .. 97 days: r from 1e-4 to ~97)
RATIO_UNIT = 86_400.0
#: where the rest of a stage's wait is sampled (conditional probabilities) when combining models
_WAIT_POINTS = (1 / 6, 0.5, 5 / 6)
RemainingKeys = tuple[str, ...]
#: a parcel silent this many times its stage's p99 is stuck (the stall detector's 2 x p99), not
#: one of the stage's normal waits
_STUCK_P99_FACTOR = 2.0
#: set once the parcel was learned as late (censored at the promise)
_CENSORED = Slot("late_censored", bool)
#: time of the last scan on the way before the parcel was misrouted
_DETOUR_FROM = Slot("detour_from", int)
#: time of the scan that showed the misroute (the parcel has to come back from there)
_DETOUR_AT = Slot("detour_at", int)
_MISROUTE = AnomalyType.MISROUTE.value
#: the hours the promise had left when the parcel's chance of lateness first reached
#: ``late_probability`` before its last call (its outcome calibrates early warnings)
_EARLY_LEFT_H = Slot("early_left_h", float)
#: the chance of lateness when it first reached ``late_probability`` within the promise's last
#: ``final_h`` hours (its outcome calibrates the warnings of the last day)
_FINAL_P = Slot("final_p", float)
#: the chance at or above which a last-day warning is counted in the upper band
_FINAL_BAND_P = 0.9
#: upper edges (hours left) of the bins early warnings are calibrated in
_EARLY_BINS_H = (48.0, 96.0, 192.0)
#: the longest a parcel's "late" is waited for before it is learned censored
_CENSOR_MAX_MS = 3 * 86_400_000
#: the anomaly alerts whose outcome is learned: how often a parcel that raised one was late,
#: by carrier and by the hours its promise had left when the alert fired
_ALERT_TYPES = (AnomalyType.STALL, AnomalyType.MISROUTE, AnomalyType.ABNORMAL_SEGMENT)
#: per alert type: the hours the promise had left when the parcel's first such alert fired
_ALERT_LEFT_H = {t: Slot(f"left_h_{t.value}", float) for t in _ALERT_TYPES}
#: upper edges (hours left at the alert) of the bins the outcome is learned in
_LEFT_BINS_H = (24.0, 48.0, 96.0, 192.0)



def remaining_baseline(min_count: int) -> DurationBaseline:
    """A remaining-time baseline (in the promise's unit, or in seconds for ``remaining_abs``): never a prior."""

    return DurationBaseline((12 * 3600, 24 * 3600, 48 * 3600, 96 * 3600, 120 * 3600, 168 * 3600), min_count=min_count)


def promise_unit_ms(state: ParcelState, limit: int, t: int) -> int:
    """The promise's unit for a scan at ``t``: the span from the parcel's first scan to ``limit``.

    Never shorter than what the promise leaves at the scan (a scan received out of order may
    be the first) and at least 1 ms.
    """

    first = state.route[0][0] if state.route else t
    return max(limit - min(first, t), 1)


def _alert_keys(alert_type: AnomalyType, carrier: str, left_h: float) -> tuple[str, str]:
    """The ``alert_lateness`` keys of an alert fired with ``left_h`` hours left: the carrier's, then any carrier's."""

    b = bisect_right(_LEFT_BINS_H, left_h)
    return f"{alert_type.value}|{carrier}|{b}", f"{alert_type.value}|{b}"


def _early_keys(carrier: str, left_h: float) -> tuple[str, str]:
    """The ``early_lateness`` keys of an early warning ``left_h`` hours ahead: its bin's, then all bins'."""

    return f"{carrier}|{bisect_right(_EARLY_BINS_H, left_h)}", carrier


def _final_keys(carrier: str, p_late: float) -> tuple[str, str]:
    """The ``early_lateness`` keys of a last-day warning at chance ``p_late``: its band's, then the carrier's last day's."""

    return f"{carrier}|final{int(p_late >= _FINAL_BAND_P)}", f"{carrier}|final"


OutcomeTable = dict[str, list[int]]


def _late_rate(table: OutcomeTable, keys: Sequence[str], min_n: int) -> tuple[float, str, int] | None:
    """(share late, key, parcels) of the first key with ``min_n`` known outcomes; None while none has."""

    for key in keys:
        got = table.get(key)
        if got is not None and got[0] >= min_n:
            # Laplace's rule: a handful of parcels all late is likely, not certain
            return (got[1] + 1) / (got[0] + 2), key, got[0]
    return None


def _at_least(rate: tuple[float, str, int], share: float, z: float) -> bool:
    """Whether a learned share late is at least ``share`` with ``z`` standard errors to spare.

    Of many bins each holding a handful of outcomes some look right by chance (five of six late
    passes 0.75 by Laplace's rule), and those warn wrong more often than their share says: the
    share minus ``z`` of its standard errors guards against that while a bin is small and gives
    way to the share itself as its outcomes grow.

    >>> _at_least((6 / 7, "k", 5), 0.75, 0.0), _at_least((6 / 7, "k", 5), 0.75, 1.0)
    (True, False)
    >>> _at_least((81 / 102, "k", 100), 0.75, 1.0)
    True
    """

    p, _key, n = rate
    return p - z * sqrt(p * (1.0 - p) / (n + 2)) >= share


def _count_outcome(env: Env, table: str, keys: Sequence[str], late: bool) -> None:
    """One more parcel, late or not, under each key (pooled across partitions: ``Env.add_counts``)."""

    adds = (1, int(late))
    for key in keys:
        env.add_counts(table, key, adds)


_remaining_memo: KeyMemo[tuple[str, int, str, str, str], RemainingKeys] = KeyMemo()


def remaining_keys(state: ParcelState, node: str, code: int) -> RemainingKeys:
    return _remaining_keys(node, code, state.carrier, state.origin, state.dest)


def _remaining_keys(node: str, code: int, carrier: str, origin: str, dest: str) -> RemainingKeys:
    memo = (node, code, carrier, origin, dest)
    keys = _remaining_memo.get(memo)
    if keys is None:
        c = CODE_STR[code]
        keys = (f"{node}|{c}|{dest}", f"{carrier}|{c}|{origin}>{dest}", f"{carrier}|{c}")
        if code in (PAID, DISPATCHED):
            keys += (f"*|{c}",)  # before the hand-over: the stage over all carriers last
        keys = _remaining_memo.remember(memo, keys)
    return keys


class PredictedLateDetector(DetectorBase):
    """Early warning that a parcel will miss its delivery promise.

    Parameters
    ----------
    env: the engine's shared environment.
    late_probability: warn when P(late | what happened, how long it has been silent) reaches this
        within ``last_call_s`` of the promise.
    early_precision: earlier than that (an early warning), the chance reaching
        ``late_probability`` warns only where at least this share of the carrier's past parcels
        that reached it as many hours before their promise were late (Laplace's rule, once
        ``early_min_n`` of them are known, per hours-left bin, else over all bins). Days ahead the
        model is right about as often as it says on a feed that scans every step, and far less
        on a milestone feed, where a slow lane's normal parcel looks like a held one.
    early_min_n: known outcomes a carrier's (hours-left) bin needs before it decides.
    early_cold_h: while a carrier's early warnings have no known outcomes, they warn only within
        this many hours of the promise.
    last_call_s: where early warnings end, this long before the promise: a little more than the
        day of lead a warning needs, so that one made then still has it; a parcel not trusted
        earlier is looked at again then.
    margin_s: tolerance after the promise.
    recheck_s: while no key is trusted, look again after this (every time: a key may become
        trusted at any moment of a cold start, and a back-off missed the days of lead it had).
    lane_shrink_n: when a parent key (carrier) decides, its distribution is moved to where the
        lane's own parcels lie, their median trusted as n / (n + lane_shrink_n)
        (``DurationBaseline.scaled_warm_quantiles``).
    alert_min_n: known outcomes an alert type's (carrier, hours-left) bin needs before the
        warning after such an alert decides.
    early_confidence_z: a share of past warnings counts as at least ``early_precision`` (or
        ``final_precision``) only with this many standard errors to spare (0: the share itself).
    final_h: the last hours before the promise whose warnings are calibrated like the early
        ones (0: not calibrated).
    final_precision: within ``final_h``, a chance reaching ``late_probability`` warns only where
        at least this share of the carrier's past such warnings (same band of chance) were late,
        once ``early_min_n`` of them are known; else the promise itself is the deadline.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario()
    >>> for i in range(40):  # parcels usually leave the hub in 2 h and arrive 7-16 h later
    ...     _ = sc.parcel(f"N{i}", deliver_within=72 * H).paid(0).dispatched(H).picked_up(2 * H) \\
    ...         .arrived("HUB-A", 3 * H).departed(5 * H).delivered((12 + i % 10) * H)
    >>> _ = sc.parcel("WB1", deliver_within=72 * H).paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H)
    >>> alerts = [a for a in sc.run(detectors=("predicted_late",)) if a.status.value == "firing"]
    >>> [(a.waybill_id, a.evidence["lead_s"] > 12 * 3600, a.evidence["probability_late"] >= 0.7) for a in alerts]
    [('WB1', True, True)]
    """

    name = "predicted_late"
    contract = Contract(
        emits=(Emits(AnomalyType.PREDICTED_LATE, Lifecycle.SELF, benign=True),),
        owns=(_CENSORED, _DETOUR_FROM, _DETOUR_AT, _EARLY_LEFT_H, _FINAL_P, *_ALERT_LEFT_H.values()),
        #: a misrouted parcel is measured from its last scan on the way; a stall, a misroute or an
        #: abnormal leg is itself evidence of lateness, learned from the outcomes of past ones
        reads_alerts=_ALERT_TYPES,
        #: "<alert type>|<carrier>|<bin>" and "<alert type>|<bin>" -> [parcels, late ones]
        #: "<carrier>|<bin>" -> [parcels, late ones]: of the parcels whose chance of lateness
        #: reached ``late_probability`` with that many hours left (``_EARLY_BINS_H``), how many were late;
        #: "<carrier>|final0" / "final1" / "final": likewise for the promise's last ``final_h``, per
        #: band of chance (below / at least ``_FINAL_BAND_P``) and over both
        tables=("alert_lateness", "early_lateness"),
        #: the remaining time to delivery after a scan and after the scan that followed it, both in
        #: units of the promise's whole span (``promise_unit_ms``); the time from a scan to the next
        #: one in the same unit; and the remaining time in seconds, per node and lane only (a node's
        #: trucks do not run faster for a parcel that is behind its promise). The ``_share`` names
        #: say the unit: before 2026-12-03 the models were in the span left at the scan, under
        #: the names without it, and a checkpoint's models in that unit are not read into these
        baselines={
            "remaining_share": remaining_baseline,
            "remaining_next_share": remaining_baseline,
            "remaining_stage_share": remaining_baseline,
            "remaining_abs": remaining_baseline,
        },
    )

    def __init__(
        self,
        env: Env,
        *,
        late_probability: float = 0.7,
        early_precision: float = 0.75,
        early_min_n: int = 5,
        early_cold_h: float = 72.0,
        last_call_s: float = 30 * 3600,
        margin_s: float = 0.0,
        recheck_s: float = 6 * 3600,
        lane_shrink_n: float = 10.0,
        alert_min_n: int = 5,
        early_confidence_z: float = 1.0,
        final_h: float = 24.0,
        final_precision: float = 0.75,
    ) -> None:
        if not 0.0 < late_probability < 1.0:
            raise ValueError("predicted_late: late_probability must be between 0 and 1")
        if not 0.0 < early_precision <= 1.0:
            raise ValueError("predicted_late: early_precision must be in (0, 1]")
        if early_min_n < 1:
            raise ValueError("predicted_late: early_min_n must be >= 1")
        if early_cold_h < 0:
            raise ValueError("predicted_late: early_cold_h must be >= 0")
        if last_call_s < 0:
            raise ValueError("predicted_late: last_call_s must be >= 0")
        if recheck_s <= 0:
            raise ValueError("predicted_late: recheck_s must be positive")
        if lane_shrink_n <= 0:
            raise ValueError("predicted_late: lane_shrink_n must be positive")
        if alert_min_n < 1:
            raise ValueError("predicted_late: alert_min_n must be >= 1")
        self.alert_min_n = alert_min_n
        if early_confidence_z < 0:
            raise ValueError("predicted_late: early_confidence_z must be >= 0")
        self.early_confidence_z = float(early_confidence_z)
        if final_h < 0:
            raise ValueError("predicted_late: final_h must be >= 0")
        if not 0.0 <= final_precision <= 1.0:
            raise ValueError("predicted_late: final_precision must be in [0, 1]")
        self.final_ms = int(final_h * 3.6e6)
        self.final_precision = float(final_precision)
        self.alert_lateness: OutcomeTable = env.table("alert_lateness")
        self.early_lateness: OutcomeTable = env.table("early_lateness")
        self.env = env
        self.remaining = env.baseline("remaining_share")
        self.remaining_next = env.baseline("remaining_next_share")
        self.remaining_stage = env.baseline("remaining_stage_share")
        self.remaining_abs = env.baseline("remaining_abs")
        self.late_probability = float(late_probability)
        self.early_precision = float(early_precision)
        self.early_min_n = early_min_n
        self.early_cold_h = float(early_cold_h)
        self.last_call_ms = int(last_call_s * 1000)
        self.margin_s = float(margin_s)
        self.recheck_s = float(recheck_s)
        self.lane_shrink_n = float(lane_shrink_n)

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        if not scan.latest:
            return NO_FINDINGS
        code = scan.code
        t = event.event_time
        if code == DELIVERED:
            self.set_due(state, None)
            if not _CENSORED.has(state):
                late = t > self._limit(state)
                self._learn(state, t)
                self._learn_alerts(state, late)
                self._learn_calibration(state, late)
            return NO_FINDINGS
        if state.final_at or code in FINAL_CODES:
            self.set_due(state, None)
            if code in FINAL_CODES and not _CENSORED.has(state):
                # returned: never delivered, so not by the promise either
                _CENSORED.set(state, True)
                self._learn_calibration(state, True)
            return NO_FINDINGS
        if _PREDICTED_LATE in state.open:
            return NO_FINDINGS
        if _MISROUTE in state.fired and not _DETOUR_FROM.has(state) and len(state.route) >= 2:
            # sent the wrong way: the parcel is no further along than at its last scan on the way,
            # and the detour counts as time without progress
            _DETOUR_FROM.set(state, state.route[-2][0])
            _DETOUR_AT.set(state, state.route[-1][0])
        ref = self._reference(state)
        if ref is not None:
            return self._decide(state, ref[0], ref[2], ref[1], t, self._detour_ms(state, ref[0]))
        return self._decide(state, t, event.node_id, code, t)

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        last = state.last
        if last is None or state.final_at:
            return NO_FINDINGS
        censor_at = self._censor_at(state)
        if now_ms >= censor_at and not _CENSORED.has(state):
            self._censor(state, now_ms)
        if _PREDICTED_LATE in state.open:
            return NO_FINDINGS
        ref = self._reference(state)
        if ref is not None:
            return self._decide(state, ref[0], ref[2], ref[1], now_ms, self._detour_ms(state, ref[0]))
        return self._decide(state, last[0], last[2], last[1], now_ms)

    def on_alert(self, state: ParcelState, alert_type: AnomalyType, at_ms: int) -> Sequence[Finding]:
        """A stall, misroute or abnormal leg fired: warn now if such parcels were usually late."""

        slot = _ALERT_LEFT_H.get(alert_type)
        last = state.last
        if slot is None or last is None or state.final_at or _PREDICTED_LATE in state.open:
            return NO_FINDINGS
        left_h = (self._limit(state) - at_ms) / 3.6e6
        if left_h <= 0:
            return NO_FINDINGS  # the promise has passed: the deadline at the promise says so
        if not slot.has(state):
            slot.set(state, left_h)
        rate = self._alert_rate(alert_type, state.carrier, left_h)
        if rate is None or rate[0] < self.late_probability:
            return NO_FINDINGS
        p, key, n = rate
        how = f"after its {alert_type.value.replace('_', ' ')} alert ({p:.0%} of {n} such parcels were late)"
        return self._finding(state, at_ms, remaining_keys(state, last[2], last[1]), None, p, how, source=(key, n))

    def _alert_rate(self, alert_type: AnomalyType, carrier: str, left_h: float) -> tuple[float, str, int] | None:
        """(share late, key, parcels) of past parcels with such an alert at as many hours left; None while unknown."""

        return _late_rate(self.alert_lateness, _alert_keys(alert_type, carrier, left_h), self.alert_min_n)

    def _learn_alerts(self, state: ParcelState, late: bool) -> None:
        for alert_type, slot in _ALERT_LEFT_H.items():
            left_h = slot.get(state)
            if left_h is not None:
                _count_outcome(self.env, "alert_lateness", _alert_keys(alert_type, state.carrier, left_h), late)

    @staticmethod
    def _reference(state: ParcelState) -> RouteEntry | None:
        """The last scan on the way before a misroute (None: no misroute, or no longer in the route)."""

        at = _DETOUR_FROM.get(state)
        if at is None:
            return None
        for entry in state.route:
            if entry[0] == at:
                return entry
        return None

    @staticmethod
    def _detour_ms(state: ParcelState, ref_ms: int) -> int:
        """How long a misroute costs a parcel: the way out to the wrong scan, and as long again back."""

        at = _DETOUR_AT.get(state)
        return 2 * max(0, at - ref_ms) if at is not None else 0

    def _decide(
        self, state: ParcelState, t: int, node: str, code: int, now_ms: int, detour_ms: int = 0
    ) -> Sequence[Finding]:
        """Warn now, or set the deadline at the silence after which a warning is due.

        ``t`` is the scan the remaining time is measured from; a misrouted parcel (``detour_ms``
        > 0) is measured from its last scan on the way, and is taken to be back there
        ``detour_ms`` later (out and back): its remaining time starts then, in the same unit (the
        promise's whole span), so the span the promise leaves it is shorter by the detour.
        """

        limit = self._limit(state)
        keys = remaining_keys(state, node, code)
        if now_ms >= limit:
            return self._finding(state, now_ms, keys, None, 1.0, "the promise has passed")
        got = self.remaining.scaled_warm_quantiles(keys, self.lane_shrink_n)
        if got is None:
            # no learned model for this stage yet: only the broken promise itself is certain;
            # look again every recheck_s (a key may become trusted any time in a cold start)
            self.set_due(state, min(limit, now_ms + int(self.recheck_s * 1000)))
            return NO_FINDINGS
        q, scale = got
        d_ms = promise_unit_ms(state, limit, t)
        e_s = (now_ms - t) / 1000
        # where the node's or the lane's own parcels decide, their remaining time in seconds
        qa = self.remaining_abs.warm_quantiles(keys[:2])
        absolute = qa is not None
        if qa is not None:
            to_ratio = RATIO_UNIT * 1000.0 / d_ms
            q, scale = tuple([v * to_ratio for v in qa]), 1.0
        tv = t + detour_ms  # where the remaining time starts (back on the way after a detour)
        if tv >= limit:
            return self._finding(state, now_ms, keys, q, 1.0, "its detour outlasts the promise", scale, absolute)
        s_d = survival_at(q, RATIO_UNIT * (limit - tv) / d_ms)
        s_e = survival_at(q, RATIO_UNIT * max(0, now_ms - tv) / d_ms)
        p_late = min(1.0, s_d / s_e) if s_e > 0 else 1.0
        # the next-scan models stay unscaled: where the feed scans every step their keys are per
        # node and warm soon, and scaling them too gave more false warnings on the mixed feed
        qn = self.remaining_next.warm_quantiles(keys)
        if qn is not None and qn[P50] < 0.01 * RATIO_UNIT:
            qn = None  # the next scan is usually the delivery: the first model says it all
        stage = self.remaining_stage.warm_quantiles(keys)
        if qn is not None:
            p_late = max(p_late, self._p_next(qn, stage, tv, limit, d_ms, now_ms))
        last_call = limit - self.last_call_ms
        early = now_ms < last_call
        if p_late >= self.late_probability:
            how = "at this scan" if now_ms == t else f"after {e_s / 3600:.1f} h without a scan"
            if detour_ms:
                how = f"misrouted {detour_ms / 7.2e6:.1f} h off its way, as long back"
            if early:
                how = self._early(state, now_ms, limit, how)
            elif limit - now_ms < self.final_ms:
                how = self._final(state, limit, p_late, how)
            if not how:
                return NO_FINDINGS
            return self._finding(state, now_ms, keys, q, p_late, how, scale, absolute)
        # the first moment the chance reaches late_probability, up to the last call if that is
        # still ahead (an early warning is decided there, and the deadline then looks again)
        theta = self.late_probability
        cap = last_call if early else limit
        r_star = quantile_at(q, 1.0 - s_d / theta)
        due = limit if isinf(r_star) else tv + int(r_star / RATIO_UNIT * d_ms)
        due = min(due, cap)
        if qn is not None and due > now_ms + 1:
            # the first moment the next-scan chance reaches theta (it does by the promise at the
            # latest): bisection to 1/128 of the promise's span (at least a minute); deterministic
            lo, hi = now_ms, due
            step = max(60_000, d_ms // 128)
            if self._p_next(qn, stage, tv, limit, d_ms, hi) >= theta:
                while hi - lo > step:
                    mid = (lo + hi) // 2
                    if self._p_next(qn, stage, tv, limit, d_ms, mid) >= theta:
                        hi = mid
                    else:
                        lo = mid
                due = hi
        due = min(due, limit)
        self.set_due(state, max(due, now_ms + 1))
        return NO_FINDINGS

    @staticmethod
    def _p_next(qn: Quantiles, stage: Quantiles | None, t: int, limit: int, d_ms: int, now_ms: int) -> float:
        """P(late) if the parcel leaves its stage after the likely rest of its wait, given silence until now."""

        budget = RATIO_UNIT * (limit - now_ms) / d_ms
        if stage is None:
            return survival_at(qn, budget)
        # average over the rest of the wait at this stage (its conditional quantiles, given the
        # silence so far): P(rest + remaining after the next scan > what the promise leaves)
        r_e = RATIO_UNIT * max(0, now_ms - t) / d_ms
        total = 0.0
        if r_e > _STUCK_P99_FACTOR * stage[P99]:
            # stuck far past every wait the stage normally has: no longer one of its normal waits,
            # and the longer it has waited the longer it will (the rest's u-quantile is u/(1-u)
            # times the wait so far: as long again at the median)
            for u in _WAIT_POINTS:
                total += survival_at(qn, budget - r_e * u / (1.0 - u))
            return total / len(_WAIT_POINTS)
        s_e = survival_at(stage, r_e)
        for u in _WAIT_POINTS:
            at = quantile_at(stage, 1.0 - s_e * (1.0 - u)) if s_e > 0 else inf
            # past everything the stage has seen end: assume it waits as long again
            rest = r_e if isinf(at) else max(0.0, at - r_e)
            total += survival_at(qn, budget - rest)
        return total / len(_WAIT_POINTS)

    def _finding(
        self,
        state: ParcelState,
        at_ms: int,
        keys: RemainingKeys,
        q: tuple[float, ...] | None,
        p_late: float,
        how: str,
        scale: float = 1.0,
        absolute: bool = False,
        source: tuple[str, int] | None = None,
    ) -> Sequence[Finding]:
        last = state.last
        assert last is not None
        # the median remaining time given the silence so far, as the predicted arrival
        limit = self._limit(state)
        d_ms = promise_unit_ms(state, limit, last[0])
        if q is not None and limit > last[0]:
            r_now = RATIO_UNIT * (at_ms - last[0]) / d_ms
            s_e = survival_at(q, r_now)
            r_med = quantile_at(q, 1.0 - s_e / 2) if s_e > 0 else r_now
            r_med = r_now if isinf(r_med) else max(r_med, r_now)
            predicted_ms = last[0] + int(r_med / RATIO_UNIT * d_ms)
        else:
            predicted_ms = at_ms
        predicted_ms = max(predicted_ms, at_ms)
        lateness_s = max(0.0, (predicted_ms - state.deliver_by) / 1000)
        if source is not None:
            key, n = source
        else:
            key, n = self.remaining_abs.source(keys[:2]) if absolute else self.remaining.source(keys)
        # come back after the promise to learn "late" if the parcel is not delivered by then
        self.set_due(state, None if _CENSORED.has(state) else max(self._censor_at(state), at_ms + 1))
        return [
            Finding(
                alert_type=AnomalyType.PREDICTED_LATE,
                at_ms=at_ms,
                onset_ms=at_ms,
                severity=Severity.WARNING,
                predicted_lateness_s=lateness_s,
                summary=(
                    f"Parcel {state.waybill} will likely miss its delivery promise "
                    f"(P(late) {p_late:.0%}, {how} after {TYPES[last[1]].value} at {last[2]}; "
                    f"promise in {(state.deliver_by - at_ms) / 3.6e6:.1f} h)"
                ),
                evidence={
                    "probability_late": round(p_late, 4),
                    "predicted_arrival": predicted_ms,
                    "promised_delivery_by": state.deliver_by,
                    "lead_s": (state.deliver_by - at_ms) / 1000,
                    "silent_s": (at_ms - last[0]) / 1000,
                    "expected_remaining_p50_s": None
                    if q is None or isinf(q[P50]) or limit <= last[0]
                    else round(q[P50] / RATIO_UNIT * d_ms / 1000, 1),
                    "baseline_key": key,
                    "baseline_n": n,
                    # the key's distribution moved to where this lane's own few parcels lie
                    "lane_scale": round(scale, 3),
                    # remaining time learned in seconds (node / lane) or in the promise's unit
                    "remaining_unit": "seconds" if absolute else "promise",
                },
            )
        ]

    def _early(self, state: ParcelState, now_ms: int, limit: int, how: str) -> str:
        """Before the last call: the warning's wording if the carrier's early warnings are trusted
        this far ahead, else "" and a deadline to look again (see ``early_precision``)."""

        left_h = (limit - now_ms) / 3.6e6
        if not _EARLY_LEFT_H.has(state):
            _EARLY_LEFT_H.set(state, left_h)
        # this carrier's past early warnings as far ahead (the bin's, else all bins')
        trusted = _late_rate(self.early_lateness, _early_keys(state.carrier, left_h), self.early_min_n)
        if trusted is None:
            if left_h <= self.early_cold_h:
                return how + "; early, with no outcomes of such warnings known yet"
            # nothing known: look again once the promise is that near
            self.set_due(state, max(now_ms + 1, limit - int(self.early_cold_h * 3.6e6)))
            return ""
        if _at_least(trusted, self.early_precision, self.early_confidence_z):
            return how + f"; {trusted[0]:.0%} of {trusted[2]} such early warnings ({trusted[1]}) were right"
        # this carrier's warnings are not right often enough this early: look again at the last call
        self.set_due(state, limit - self.last_call_ms)
        return ""

    def _final(self, state: ParcelState, limit: int, p_late: float, how: str) -> str:
        """In the promise's last ``final_h``: the warning's wording if the carrier's last-day
        warnings at such a chance were right often enough (or none is known yet), else "" and a
        deadline at the promise (see ``final_precision``)."""

        p0 = _FINAL_P.get(state)
        if p0 is None:
            p0 = p_late
            _FINAL_P.set(state, p_late)
        trusted = _late_rate(self.early_lateness, _final_keys(state.carrier, p0), self.early_min_n)
        if trusted is None:
            return how
        if _at_least(trusted, self.final_precision, self.early_confidence_z):
            return how + f"; {trusted[0]:.0%} of {trusted[2]} such last-day warnings ({trusted[1]}) were right"
        self.set_due(state, limit)  # not right often enough: the broken promise itself will say it
        return ""

    def _learn_calibration(self, state: ParcelState, late: bool) -> None:
        """The parcel's outcome under the early-warning and last-day bins it reached (``early_lateness``)."""

        left_h = _EARLY_LEFT_H.get(state)
        if left_h is not None:
            _count_outcome(self.env, "early_lateness", _early_keys(state.carrier, left_h), late)
        p0 = _FINAL_P.get(state)
        if p0 is not None:
            _count_outcome(self.env, "early_lateness", _final_keys(state.carrier, p0), late)

    def _limit(self, state: ParcelState) -> int:
        """The parcel's promise plus the tolerance: later than this is late."""

        return state.deliver_by + int(self.margin_s * 1000)

    def _censor_at(self, state: ParcelState) -> int:
        """When a parcel still not delivered is learned as late: a quarter of its promise's span after it (<= 3 d)."""

        limit = self._limit(state)
        first = state.route[0][0] if state.route else limit
        return limit + min(max(0, limit - first) // 4, _CENSOR_MAX_MS)

    def _censor(self, state: ParcelState, now_ms: int) -> None:
        """A parcel not delivered well past its promise is late: learn that, censored, from each of its scans.

        Parcels that are never delivered (lost) and those delivered days late are then part of the
        model from the moment they are known to be late, not only once (and if) they arrive:
        learning only from deliveries made the late tail thin and P(late) too low. Each scan's
        remaining time is at least ``now - scan`` (past the promise by a margin, so the censored
        value lies past the promise's histogram bin); the parcel is not learned again when it arrives.
        """

        _CENSORED.set(state, True)
        self._learn_alerts(state, True)
        self._learn_calibration(state, True)
        learn = self.remaining.learn_censored
        learn_abs = self.remaining_abs.learn_censored
        carrier, origin, dest = state.carrier, state.origin, state.dest
        limit = self._limit(state)
        for t, code, node, _region in state.route:
            if code in FINAL_CODES or t >= limit:
                continue
            keys = _remaining_keys(node, code, carrier, origin, dest)
            learn(keys, RATIO_UNIT * (now_ms - t) / promise_unit_ms(state, limit, t))
            learn_abs(keys[:2], (now_ms - t) / 1000)

    def _learn(self, state: ParcelState, delivered_ms: int) -> None:
        remaining = self.remaining.learn
        remaining_next = self.remaining_next.learn
        remaining_stage = self.remaining_stage.learn
        remaining_abs = self.remaining_abs.learn
        carrier, origin, dest = state.carrier, state.origin, state.dest
        limit = self._limit(state)
        route = state.route
        for i, (t, code, node, _region) in enumerate(route):
            if code in FINAL_CODES or t > delivered_ms or t >= limit:
                continue
            keys = _remaining_keys(node, code, carrier, origin, dest)
            span = promise_unit_ms(state, limit, t)
            remaining(keys, RATIO_UNIT * (delivered_ms - t) / span)
            remaining_abs(keys[:2], (delivered_ms - t) / 1000)
            nxt = min(route[i + 1][0], delivered_ms) if i + 1 < len(route) else delivered_ms
            remaining_next(keys, RATIO_UNIT * max(0, delivered_ms - nxt) / span)
            remaining_stage(keys, RATIO_UNIT * max(0, nxt - t) / span)
