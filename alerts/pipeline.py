"""The alert pipeline: dedup, lifecycle, group, inhibit, silence, route, record.

:func:`decide` is pure: given a detector alert, the service's previous copy
of it and the routing config it returns the new :class:`AlertRecord` and the
notifications to send (receiver, kind), or says the alert is a duplicate.
:class:`Pipeline` runs it against the store and writes the outcome
atomically; delivery happens later, from the queues, so a slow receiver
never holds up consumption.

Stages, in order (Alertmanager's, adapted to parcels):

1. **dedup**: a record whose (revision, status) is not newer than the stored
   one is a redelivery or replay and changes nothing;
2. **lifecycle**: new firing -> OPEN; detector RESOLVED -> RESOLVED; a person's
   ACKNOWLEDGED survives detector updates;
3. **what to say**: first firing -> ``firing``; a rise in severity ->
   ``escalated``; resolution -> ``resolved`` (only if the firing was sent);
   other updates (an incident gaining parcels) say nothing new;
4. **group / inhibit**: a parcel alert explained by a hub incident joins the
   incident (one notification for the incident) and, for the inhibition
   rules' target types (stall by default), is marked ``inhibited``;
5. **silence**: a matching active silence mutes it;
6. **route**: every receiver with a matching route gets one notification,
   whose id (the webhook-id) is stable, so the notification log drops repeats.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.exceptions import WatchError

from logiwatch.alerts.model import (
    FIRING,
    RESOLVED,
    AlertRecord,
    AlertState,
    Notification,
    NotificationEvent,
    NotificationKind,
    Silence,
    Suppression,
    notification_id,
)
from logiwatch.alerts.routing import RoutingConfig
from logiwatch.alerts.store import AlertStore, Commit, Guard
from logiwatch.detectors.hub_stage import LINKED_TYPES
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class DecisionOutcome(enum.StrEnum):
    """How an alert relates to the service's copy of it."""

    NEW = "new"
    UPDATE = "update"
    DUPLICATE = "duplicate"  # not newer than the stored copy: changes nothing


@dataclass
class Decision:
    """What the pipeline does with one alert."""

    outcome: DecisionOutcome
    record: AlertRecord | None
    notify: list[tuple[str, NotificationKind]] = field(default_factory=list)  # (receiver, kind)
    suppressed: Suppression | None = None


def _version(alert: Alert) -> tuple[int, int]:
    return alert.revision, 1 if alert.status == AlertStatus.RESOLVED else 0


def decide(alert: Alert, previous: AlertRecord | None, routing: RoutingConfig, now: int, silences: tuple[Silence, ...] = ()) -> Decision:
    # 1. dedup against what is stored
    if previous is not None and _version(alert) <= _version(previous.alert):
        return Decision(DecisionOutcome.DUPLICATE, None)
    resolved = alert.status == AlertStatus.RESOLVED
    # 2. lifecycle
    if previous is None:
        state = AlertState.RESOLVED if resolved else AlertState.OPEN
        record = AlertRecord(alert=alert, state=state, first_seen_ms=now, updated_ms=now, resolved_by="detector" if resolved else None)
    else:
        state = previous.state
        if resolved:
            state = AlertState.RESOLVED
        elif state == AlertState.RESOLVED:
            state = AlertState.OPEN  # fired again after a resolution: a new episode for people
        record = msgspec.structs.replace(
            previous,
            alert=alert,
            state=state,
            updated_ms=now,
            resolved_by=("detector" if resolved and previous.state != AlertState.RESOLVED else previous.resolved_by),
        )
    outcome = DecisionOutcome.NEW if previous is None else DecisionOutcome.UPDATE
    # 3. what is there to say
    kind: NotificationKind | None
    if resolved:
        was_sent = previous is not None and previous.suppressed is None and previous.alert.status == AlertStatus.FIRING
        kind = RESOLVED if was_sent else None
    elif previous is None or previous.alert.status == AlertStatus.RESOLVED:
        kind = FIRING if previous is None else NotificationKind(NotificationEvent.FIRING, revision=alert.revision)
    elif _SEVERITY_RANK[alert.severity] > _SEVERITY_RANK[previous.alert.severity]:
        kind = NotificationKind(NotificationEvent.ESCALATED, severity=alert.severity)
    else:
        kind = None
    if resolved or previous is not None:
        record.suppressed = previous.suppressed if previous is not None else None
        if kind is None or record.suppressed:
            return Decision(outcome, record, [], record.suppressed)
    # 4. group under an incident / inhibit
    suppressed: Suppression | None = None
    if alert.incident_id and alert.alert_type != AnomalyType.HUB_INCIDENT:
        suppressed = Suppression.INHIBITED if routing.inhibits(alert) else Suppression.GROUPED
    # 5. silence
    if suppressed is None and routing.silenced_by(alert, now, silences) is not None:
        suppressed = Suppression.SILENCED
    record.suppressed = suppressed
    if suppressed or kind is None:
        return Decision(outcome, record, [], suppressed)
    # 6. route
    return Decision(outcome, record, [(r, kind) for r in routing.receivers_for(alert)])


class Pipeline:
    """Runs :func:`decide` against the store and records the outcome in one transaction."""

    #: API-made silences are re-read at most this often (ms): one round trip saved per alert.
    SILENCE_TTL_MS = 1000

    def __init__(self, store: AlertStore, routing: RoutingConfig) -> None:
        self.store = store
        self.routing = routing
        self._silences: tuple[Silence, ...] = ()
        self._silences_at: int | None = None

    async def silences(self, now: int) -> tuple[Silence, ...]:
        if self._silences_at is None or not 0 <= now - self._silences_at < self.SILENCE_TTL_MS:
            self._silences = await self.store.silences()
            self._silences_at = now
        return self._silences

    async def process(self, alert: Alert, now: int) -> tuple[Decision, list[Notification]]:
        [result] = await self.process_batch([alert], now)
        return result

    #: times a batch is re-read and re-decided when its records changed under it
    MAX_CONFLICTS = 5

    async def process_batch(self, alerts: list[Alert], now: int) -> list[tuple[Decision, list[Notification]]]:
        """Decide a polled batch in order and record it in one transaction.

        Later alerts in the batch see the records earlier ones produced (a
        firing and its resolution may arrive together). The records read are
        WATCHed: if another writer changed one before the EXEC (an escalation,
        an acknowledgement, or another instance that took over this partition
        while this one was paused), the batch is read and decided again, so a
        stale decision never overwrites a newer record.
        """

        for attempt in range(self.MAX_CONFLICTS):
            try:
                return await self._process_once(alerts, now)
            except WatchError:
                if attempt == self.MAX_CONFLICTS - 1:
                    raise
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _watched(self, ids: list[str]) -> AsyncIterator[tuple[dict[str, AlertRecord], _Watched]]:
        """The stored records of ``ids`` (absent ones left out) and the guard that makes a write
        of them fail with WatchError if one changed since this read."""

        keys = [self.store.key("alert", i) for i in ids]
        if self.store.cluster:
            # no WATCH on a cluster: the records read are checked again inside each record's
            # one-slot write (logiwatch.alerts.fencing), and once before the batch writes anything
            raws = await self.store.raw_records(ids)
            yield _decoded(ids, raws), _Watched(None, list(zip(keys, raws, strict=True)))
            return
        pipe = self.store.r.pipeline(transaction=True)
        try:
            await pipe.watch(*keys)
            yield _decoded(ids, await pipe.mget(keys)), _Watched(pipe, [])
        finally:
            await pipe.reset()

    async def _process_once(self, alerts: list[Alert], now: int) -> list[tuple[Decision, list[Notification]]]:
        async with self._watched(sorted({a.alert_id for a in alerts})) as (known, guard):
            return await self._decide_and_commit(alerts, now, known, guard)

    async def _decide_and_commit(
        self, alerts: list[Alert], now: int, known: dict[str, AlertRecord], guard: _Watched
    ) -> list[tuple[Decision, list[Notification]]]:
        silences = await self.silences(now)
        planned: list[tuple[Decision, list[Notification]]] = []
        commits: list[Commit] = []
        for alert in alerts:
            previous = known.get(alert.alert_id)
            decision, notifs, commit = self._plan(alert, previous, now, silences)
            planned.append((decision, notifs))
            if commit is not None:
                commits.append(commit)
                known[alert.alert_id] = commit[0]
        fresh_all = iter(await self.store.commit_many(commits, guard)) if commits else iter(())
        out: list[tuple[Decision, list[Notification]]] = []
        for decision, notifs in planned:
            if decision.record is None:
                out.append((decision, []))
                continue
            fresh = next(fresh_all)
            out.append((decision, [n for n, new in zip(notifs, fresh, strict=True) if new]))
        return out

    def _plan(
        self, alert: Alert, previous: AlertRecord | None, now: int, silences: tuple[Silence, ...]
    ) -> tuple[Decision, list[Notification], Commit | None]:
        decision = decide(alert, previous, self.routing, now, silences)
        if decision.record is None:
            return decision, [], None
        due = now
        if alert.alert_type == AnomalyType.HUB_INCIDENT and decision.notify:
            # let the incident collect its parcels before the one notification goes out
            due = now + int(self.routing.group_wait_s * 1000)
        notifs = [
            Notification(nid=notification_id(rcv, alert.alert_id, kind), receiver=rcv, alert_id=alert.alert_id, kind=kind, created_ms=now)
            for rcv, kind in decision.notify
        ]
        escalate_at = None
        if decision.outcome == DecisionOutcome.NEW and alert.status == AlertStatus.FIRING and alert.severity != Severity.CRITICAL:
            escalate_at = now + int(self.routing.escalate_after_s * 1000)
        return decision, notifs, (decision.record, previous, [(n, due) for n in notifs], escalate_at)

    async def link_earlier(self, incident: Alert, now: int) -> list[str]:
        """Join the parcel alerts an incident names that were stored before it arrived.

        The hub stage scores incidents over all partitions, so a parcel's stall can reach the
        service before the incident that explains it (the link at arrival,
        ``hub_stage.link_incident``, then finds nothing). When a firing incident revision
        names affected parcels, their open, unlinked stall and likely-lost alerts at the
        incident's hub get its ``incident_id``: they join the incident's group and, where the
        routing inhibits them, their escalation timers are dropped (CS works the incident, not
        each parcel). Their notification state is kept: a firing already sent is followed by
        its resolution. Returns the ids linked; read and written like a batch (WATCH on one
        Redis, checked writes on a cluster), retried on a conflict.
        """

        if incident.alert_type != AnomalyType.HUB_INCIDENT or incident.status != AlertStatus.FIRING:
            return []
        named = set(incident.affected_waybills or ())
        if not named or incident.node_id is None:
            return []
        ids = await self.store.ids_in_any("waybill", sorted(named))
        if not ids:
            return []
        for attempt in range(self.MAX_CONFLICTS):
            try:
                return await self._link_once(incident, sorted(ids), now)
            except WatchError:
                if attempt == self.MAX_CONFLICTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _linked(self, incident: Alert, rec: AlertRecord, now: int) -> AlertRecord | None:
        a = rec.alert
        if (
            a.alert_type not in LINKED_TYPES
            or a.incident_id
            or a.status != AlertStatus.FIRING
            or rec.state == AlertState.RESOLVED
            or a.node_id != incident.node_id
            or a.waybill_id not in (incident.affected_waybills or ())
        ):
            return None
        return msgspec.structs.replace(rec, alert=msgspec.structs.replace(a, incident_id=incident.alert_id), updated_ms=now)

    async def _link_once(self, incident: Alert, ids: list[str], now: int) -> list[str]:
        async with self._watched(ids) as (known, guard):
            commits: list[Commit] = []
            quiet: list[str] = []
            for rec in known.values():
                new = self._linked(incident, rec, now)
                if new is None:
                    continue
                commits.append((new, rec, [], None))
                if self.routing.inhibits(new.alert):
                    quiet.append(rec.alert.alert_id)
            if commits:
                await self.store.commit_many(commits, guard, unescalate=quiet)
            return [c[0].alert.alert_id for c in commits]

    async def escalate_due(self, now: int, guard: Guard | None = None) -> list[Notification]:
        """Raise the severity of alerts left unacknowledged past ``escalate_after_s`` and notify.

        Each alert's escalation (timer removed, record raised, notifications queued, timer
        re-armed) is one transaction, fenced by ``guard``: the escalation lease of the HA model.
        """

        out: list[Notification] = []
        for aid in await self.store.due_escalations(now):
            rec = await self.store.get(aid)
            if rec is None or rec.state != AlertState.OPEN or rec.alert.status != AlertStatus.FIRING:
                await self.store.drop_escalation(aid, guard)
                continue
            rank = _SEVERITY_RANK[rec.alert.severity]
            if rank >= 2:
                await self.store.drop_escalation(aid, guard)
                continue
            new_sev = Severity.WARNING if rank == 0 else Severity.CRITICAL
            new = msgspec.structs.replace(rec, alert=msgspec.structs.replace(rec.alert, severity=new_sev), escalations=rec.escalations + 1, updated_ms=now)
            notifs: list[Notification] = []
            if rec.suppressed is None:
                kind = NotificationKind(NotificationEvent.ESCALATED, severity=new_sev)
                notifs = [
                    Notification(nid=notification_id(r, aid, kind), receiver=r, alert_id=aid, kind=kind, created_ms=now)
                    for r in self.routing.receivers_for(new.alert)
                ]
            again = now + int(self.routing.escalate_after_s * 1000) if new_sev != Severity.CRITICAL else None
            [fresh] = await self.store.commit_many([(new, rec, [(n, now) for n in notifs], again)], guard, unescalate=[aid])
            out.extend(n for n, f in zip(notifs, fresh, strict=True) if f)
        return out

    async def set_state(self, alert_id: str, state: AlertState, by: str, now: int) -> AlertRecord | None:
        """A person acknowledges or resolves an alert (no notification: they know)."""

        rec = await self.store.get(alert_id)
        if rec is None:
            return None
        if rec.state == state or rec.state == AlertState.RESOLVED:
            return rec
        changes: dict[str, object] = {"state": state, "updated_ms": now}
        if state == AlertState.ACKNOWLEDGED:
            changes["acknowledged_by"] = by
        else:
            changes["resolved_by"] = by
        new = msgspec.structs.replace(rec, **changes)
        await self.store.commit(new, rec)
        return new


def _decoded(ids: list[str], raws: list[Any]) -> dict[str, AlertRecord]:
    return {i: msgspec.json.decode(raw, type=AlertRecord) for i, raw in zip(ids, raws, strict=True) if raw}


class _Watched:
    """The guard of a batch: on one Redis its pipeline already WATCHes the records the batch was
    decided on; on a cluster it checks them (key, value read, None if absent) in the writes."""

    def __init__(self, pipe: Any, read: list[tuple[str, Any]]) -> None:
        self.pipe = pipe
        self.read = read

    def checks(self) -> list[tuple[str, Any]]:
        return self.read

    async def begin(self, client: Any) -> Any:
        self.pipe.multi()
        return self.pipe
