"""Redis persistence of the alert service.

One :class:`AlertStore` per process, on ``redis.asyncio`` (one Redis) or its
cluster client. :class:`AlertKeys` is the one place that spells the keys.
They live under ``<redis.key_prefix>alerts:`` (``P`` below) except the
detector-facing suppression sets, and each carries a hash tag naming its
Redis Cluster slot: per alert (``{<alert id>}``), per receiver
(``{<prefix>r:<receiver>}``), or the one index slot (``I`` =
``{<prefix>alerts}``) for the sets that order and filter many alerts, since
ZINTERSTORE needs all its sets in one slot:

* ``P alert:{<id>}``: the :class:`AlertRecord` (msgspec JSON);
  ``P revisions:{<id>}``: the alert's revisions as they arrived (last 50);
  ``P notifs:{<id>}``: webhook-id -> receiver of each notification the alert
  caused (the parcel page's deliveries); ``P incident-series:{<id>}``: an
  incident's revisions over time, for its chart;
* ``P nlog:{<prefix>r:<receiver>}``: the receiver's notification log,
  webhook-id -> :class:`Notification`; a webhook-id is added once, ever,
  which is what stops re-notification; ``P queue:{..r:<receiver>}``: sorted
  set of webhook-ids by due time (ms); ``P dead:{..r:<receiver>}``: the
  dead-letter list;
* in the index slot, ``P I state:<state>``, ``P I type:<type>``,
  ``P I waybill:<id>``, ``P I incident:<incident id>`` (parcel alert ids
  grouped under it), ``P I incident-parcels:<incident id>`` (waybills),
  ``P I incidents:open``; the CS queue (open and acknowledged parcel alerts,
  no incidents, see :data:`QUEUE_SORTS`): sorted sets ``P I q:<sort>`` and
  filter sets ``P I qf:<field>:<value>`` holding only queue members, so a page
  is a ZRANGE or one ZINTERSTORE and the counts are SCARDs; ``P I order:<order
  id>`` (all alerts of an order, for search); ``P I disabled`` (receivers
  switched off by a 410), ``P I silences``, ``P I escalation`` (alert id by
  due time), ``P I feedback`` (stream of false-alarm reports), ``P I
  false-alarms`` (count per type), ``P I changes`` (a counter bumped by every
  commit: the console's live updates);
* ``<redis.key_prefix>suppress:<alert_type>``: set of subjects (waybill, or
  hub for incidents) that customer service marked as false alarms, for the
  detectors to skip.

:meth:`AlertStore.commit_many` writes alerts and the notifications they cause
so that the consumer may commit its offset as soon as it returns. On one
Redis that is one MULTI/EXEC. On a cluster it is one MULTI/EXEC (or script)
per slot, in an order that makes a crash anywhere harmless to a replay:
first the notifications (added only if their webhook-id is new), then the
indexes, last the alert record itself. A replay computes the same writes
from the same stored record (each is a set, a sorted-set score or an
idempotent add), so it finishes what the crash interrupted.

Writes under a guard (``guard=``: a lease, or the records a consumer batch
read) are fenced as :mod:`logiwatch.alerts.fencing` describes: WATCH and
MULTI/EXEC on one Redis, checks inside each slot's script on a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import msgspec
from redis.asyncio.cluster import RedisCluster

from logiwatch.alerts.fencing import Check, Guard, Op, by_slot, execute, queue_checked_batch, run_checks, slot
from logiwatch.alerts.model import AlertRecord, AlertState, Notification, Silence
from logiwatch.alerts.queue_plans import SEV_RANK, WALK, QueuePlans
from logiwatch.detectors.model import Alert, AnomalyType
from logiwatch.redisconn import CommandRecorder, check_prefix, queue_slot_batch

_rec_dec = msgspec.json.Decoder(AlertRecord)
_notif_dec = msgspec.json.Decoder(Notification)
_sil_dec = msgspec.json.Decoder(Silence)
_alert_dec = msgspec.json.Decoder(Alert)
#: revisions kept per alert for the parcel timeline
MAX_REVISIONS = 50
_enc = msgspec.json.Encoder()

# Adds the notification to the receiver's log and queue only if its id is
# new: the log is the dedup that survives restarts and redeliveries.
_ENQUEUE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return 1
end
return 0
"""

#: (record, previous record, [(notification, due ms)], escalate at ms) for :meth:`AlertStore.commit_many`.
Commit = tuple[AlertRecord, AlertRecord | None, Sequence[tuple[Notification, int]], int | None]


def now_ms() -> int:
    return int(time.time() * 1000)


class AlertKeys:
    """The alert service's key layout (the one place that spells it), with each key's slot tag.

    >>> k = AlertKeys("lw:")
    >>> k.key("alert", "a1"), k.key("queue", "cs"), k.key("state", "open")
    ('lw:alerts:alert:{a1}', 'lw:alerts:queue:{lw:r:cs}', 'lw:alerts:{lw:alerts}state:open')
    """

    #: kinds keyed by one alert id (its slot); kinds keyed by one receiver (its slot)
    PER_ALERT = frozenset({"alert", "revisions", "notifs", "incident-series"})
    PER_RECEIVER = frozenset({"nlog", "queue", "dead"})

    def __init__(self, key_prefix: str) -> None:
        self.root = check_prefix(key_prefix)
        self.p = f"{key_prefix}alerts:"
        self.index = "{" + key_prefix + "alerts}"

    def key(self, kind: str, *parts: str) -> str:
        # Ids go into the tag as they are: the text before the tag has no brace, so
        # every key of one alert hashes the same text even if its id holds one.
        if kind in self.PER_ALERT:
            return f"{self.p}{kind}:{{{parts[0]}}}"
        if kind in self.PER_RECEIVER:
            return f"{self.p}{kind}:{{{self.root}r:{parts[0]}}}"
        return self.p + self.index + ":".join((kind, *parts))

    def tag(self, kind: str, *parts: str) -> str:
        """The hash tag (``{...}``) of the slot ``key(kind, *parts)`` lives in."""

        key = self.key(kind, *parts)
        return key[key.index("{") : key.index("}", key.index("{")) + 1]

    def receiver_of_queue(self, key: str) -> str:
        """The receiver whose queue ``key`` is (for collectors that SCAN ``key("queue", "*")``)."""

        return key.rsplit(f"{self.root}r:", 1)[-1].rstrip("}")

    def suppression_key(self, alert_type: str) -> str:
        return f"{self.root}suppress:{alert_type}"


class AlertStore(QueuePlans):
    """Typed access to the alert keys; every method is one or two round trips."""

    def __init__(self, client: Any, key_prefix: str) -> None:
        self.r = client
        self.keys = AlertKeys(key_prefix)
        self.root = key_prefix
        self.p = self.keys.p
        self.cluster = isinstance(client, RedisCluster)
        self._enqueue = client.register_script(_ENQUEUE)
        self._walk_script = client.register_script(WALK)

    def key(self, *parts: str) -> str:
        return self.keys.key(*parts)

    def suppression_key(self, alert_type: str) -> str:
        return self.keys.suppression_key(alert_type)

    async def _mget(self, keys: list[str]) -> list[Any]:
        # MGET needs one slot on a cluster; the cluster client splits it per node itself
        return list(await (self.r.mget_nonatomic(keys) if self.cluster else self.r.mget(keys)))

    async def _eval(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        """Queue the enqueue script; a cluster pipeline gets EVAL (its nodes may not hold the SHA)."""

        if self.cluster:
            pipe.eval(_ENQUEUE, len(keys), *keys, *args)
        else:
            await self._enqueue(keys=keys, args=args, client=pipe)  # only queues the EVALSHA

    async def _tx(self, guard: Guard | None) -> Any:
        """One Redis: a MULTI/EXEC pipeline; under a guard, one whose EXEC is refused once it no longer holds."""

        return await guard.begin(self.r) if guard is not None else self.r.pipeline(transaction=True)

    async def _atomic(self, op: Op, guard: Guard | None = None) -> list[Any]:
        """``op``'s commands (keys of one slot) atomically: MULTI/EXEC, or one slot-batch script on a
        cluster, the guard's checks of that slot inside it (those of other slots verified just before)."""

        if not self.cluster:
            tx = await self._tx(guard)
            op(tx)
            return list(await tx.execute())
        rec = CommandRecorder()
        op(rec)
        checks = by_slot(guard.checks()) if guard is not None else {}
        mine = checks.pop(slot(rec.commands[0][1]), []) if rec.commands else []
        await run_checks(self.r, [c for group in checks.values() for c in group])
        if not rec.commands:
            return []
        pipe = self.r.pipeline(transaction=False)
        if mine:
            queue_checked_batch(pipe, mine, rec.commands)
        else:
            queue_slot_batch(pipe, rec.commands)
        [got] = await execute(pipe)
        return list(got)

    async def _index_tx(self, ops: Sequence[Op]) -> list[Any]:
        """Temporary-key work in the index slot: one MULTI/EXEC on one Redis; on a cluster the
        commands one by one (redis-py's async cluster transaction cannot queue ZINTERSTORE,
        whose keys it looks up with a blocking call), each temporary key given its expiry first."""

        if self.cluster:
            return [await op(self.r) for op in ops]
        tx = self.r.pipeline(transaction=True)
        for op in ops:
            op(tx)
        return list(await tx.execute())

    async def _transact(self, phases: Sequence[Sequence[Sequence[Op]]], guard: Guard | None = None) -> list[list[list[Any]]]:
        """Run groups of ops, each group touching one slot; results per phase, per group.

        One Redis: everything in one MULTI/EXEC, in order (fenced by ``guard``). A cluster:
        each group one atomic script call (see :data:`logiwatch.redisconn.SLOT_BATCH_SCRIPT`),
        the groups of a phase in one pipeline, phase after phase; the guard's checks of a slot
        go into the first group written in that slot (before this transaction's own writes there), and all of them are verified first too
        when more than one group is written (so a refused guard usually writes nothing).
        """

        if not self.cluster:
            pipe = await self._tx(guard)
            spans: list[list[tuple[int, int]]] = []
            for phase in phases:
                spans.append([])
                for group in phase:
                    start = len(pipe)
                    for op in group:
                        got = op(pipe)
                        if isinstance(got, Awaitable):
                            await got
                    spans[-1].append((start, len(pipe)))
            results = await pipe.execute() if len(pipe) else []
            return [[results[a:b] for a, b in phase_spans] for phase_spans in spans]

        recorded = [[await _record(group) for group in phase] for phase in phases]
        checks = by_slot(guard.checks()) if guard is not None else {}
        attached: dict[tuple[int, int], list[Check]] = {}
        for (pi, gi), cmds in [((pi, gi), c) for pi, ph in enumerate(recorded) for gi, c in enumerate(ph)]:
            if cmds and not all(c[0] == "EVAL" for c in cmds) and slot(cmds[0][1]) in checks:
                attached[(pi, gi)] = checks.pop(slot(cmds[0][1]))
        written = sum(1 for ph in recorded for c in ph if c)
        if checks or (attached and written > 1):
            await run_checks(self.r, [c for cs in (*checks.values(), *attached.values()) for c in cs])
        out: list[list[list[Any]]] = []
        for pi, phase_cmds in enumerate(recorded):
            out.append(await self._run_phase(pi, phase_cmds, attached))
        return out

    async def _run_phase(self, pi: int, phase: list[list[tuple[Any, ...]]], attached: dict[tuple[int, int], list[Check]]) -> list[list[Any]]:
        """One phase on a cluster: one pipeline (a round trip per node); each group one atomic call:
        its scripts as they are, or its commands wrapped in one (checked) slot-batch script."""

        pipe = self.r.pipeline(transaction=False)
        shapes: list[int | None] = []
        for gi, cmds in enumerate(phase):
            if (pi, gi) in attached:
                queue_checked_batch(pipe, attached[(pi, gi)], cmds)
                shapes.append(None)
            elif cmds and all(c[0] == "EVAL" for c in cmds):
                for c in cmds:
                    pipe.execute_command(*c)
                shapes.append(len(cmds))
            elif cmds:
                queue_slot_batch(pipe, cmds)
                shapes.append(None)
            else:
                shapes.append(0)
        results = await execute(pipe) if len(pipe) else []
        per_group: list[list[Any]] = []
        pos = 0
        for shape in shapes:
            if shape is None:
                per_group.append(list(results[pos]))
                pos += 1
            else:
                per_group.append(results[pos : pos + shape])
                pos += shape
        return per_group

    # ----------------------------------------------------------------- alerts

    async def get(self, alert_id: str) -> AlertRecord | None:
        raw = await self.r.get(self.key("alert", alert_id))
        return _rec_dec.decode(raw) if raw else None

    async def raw_records(self, alert_ids: Sequence[str]) -> list[Any]:
        """The stored records as bytes (None where absent), in order: what a watched batch checks."""

        return await self._mget([self.key("alert", i) for i in alert_ids]) if alert_ids else []

    async def get_many(self, alert_ids: Iterable[str]) -> list[AlertRecord]:
        ids = list(alert_ids)
        if not ids:
            return []
        raws = await self._mget([self.key("alert", i) for i in ids])
        return [_rec_dec.decode(x) for x in raws if x]

    async def commit(
        self,
        record: AlertRecord,
        previous: AlertRecord | None,
        notifications: Sequence[tuple[Notification, int]] = (),
        escalate_at_ms: int | None = None,
    ) -> list[bool]:
        """Write the record, its indexes and new notifications atomically.

        Returns, per notification, whether it was new (False: already in the log).
        """

        [fresh] = await self.commit_many([(record, previous, notifications, escalate_at_ms)])
        return fresh

    async def changes(self) -> int:
        """How many commits the store has seen (the console's server-sent events watch it)."""

        got = await self.r.get(self.key("changes"))
        return int(got) if got is not None else 0

    async def commit_many(self, commits: Sequence[Commit], guard: Guard | None = None, unescalate: Sequence[str] = ()) -> list[list[bool]]:
        """Several :meth:`commit` calls at once: one MULTI/EXEC on one Redis, one per slot on a cluster.

        Notifications first, then the indexes, the records last (see the module notes).
        ``unescalate``: alert ids whose escalation timer is removed first (an escalation
        re-arms it in the same index write); ``guard``: fence the write by that lease or watch.
        """

        by_receiver: dict[str, list[tuple[int, int, Op]]] = {}
        for ci, (_record, _previous, notifications, _esc) in enumerate(commits):
            for ni, (notif, due_ms) in enumerate(notifications):
                keys = [self.key("nlog", notif.receiver), self.key("queue", notif.receiver)]
                args = [notif.nid, _enc.encode(notif), due_ms]
                op = lambda pipe, keys=keys, args=args: self._eval(pipe, keys, args)  # noqa: E731
                by_receiver.setdefault(notif.receiver, []).append((ci, ni, op))
        receivers = sorted(by_receiver)
        index: list[Op] = [_zrem(self.key("escalation"), aid) for aid in unescalate]
        index += [self._index_op(record, previous, esc) for record, previous, _n, esc in commits]
        if commits:
            index.append(lambda pipe: pipe.incr(self.key("changes")))  # the console's live updates watch this
        alerts = [[self._alert_op(record, previous, notifications)] for record, previous, notifications, _e in commits]
        queued, _indexed, _written = await self._transact(
            [[[op for _c, _n, op in by_receiver[r]] for r in receivers], [index], alerts], guard
        )
        out: list[list[bool]] = [[False] * len(c[2]) for c in commits]
        for receiver, results in zip(receivers, queued, strict=True):
            for (ci, ni, _op), fresh in zip(by_receiver[receiver], results, strict=True):
                out[ci][ni] = bool(fresh)
        return out

    def _alert_op(self, record: AlertRecord, previous: AlertRecord | None, notifications: Sequence[tuple[Notification, int]]) -> Op:
        """The writes to the alert's own slot: its record, revisions, chart points and webhook-ids."""

        a = record.alert
        aid = a.alert_id

        def op(pipe: Any) -> None:
            if notifications:
                pipe.hset(self.key("notifs", aid), mapping={n.nid: n.receiver for n, _due in notifications})
            if a.alert_type == AnomalyType.HUB_INCIDENT:
                point: dict[str, Any] = {"t": a.detected_at, "revision": a.revision, "parcels": len(a.affected_waybills), "severity": a.severity.value}
                point.update({k: v for k, v in a.evidence.items() if isinstance(v, int | float) and not isinstance(v, bool)})
                pipe.zadd(self.key("incident-series", aid), {_enc.encode(point): a.detected_at})
            if previous is None or (previous.alert.revision, previous.alert.status, previous.alert.severity) != (a.revision, a.status, a.severity):
                # the parcel page's timeline shows every revision, not only the latest record
                pipe.rpush(self.key("revisions", aid), _enc.encode(a))
                pipe.ltrim(self.key("revisions", aid), -MAX_REVISIONS, -1)
            pipe.set(self.key("alert", aid), _enc.encode(record))  # last: the commit point of a replay

        return op

    def _index_op(self, record: AlertRecord, previous: AlertRecord | None, escalate_at_ms: int | None) -> Op:
        """The writes to the index slot: state, type, waybill, incident, order sets, the queue, escalation."""

        a = record.alert
        aid = a.alert_id

        def op(pipe: Any) -> None:
            if previous is not None and previous.state != record.state:
                pipe.srem(self.key("state", previous.state.value), aid)
            pipe.sadd(self.key("state", record.state.value), aid)
            pipe.sadd(self.key("type", a.alert_type.value), aid)
            if a.waybill_id:
                pipe.sadd(self.key("waybill", a.waybill_id), aid)
            if a.incident_id and a.alert_type != AnomalyType.HUB_INCIDENT:
                pipe.sadd(self.key("incident", a.incident_id), aid)
                if a.waybill_id:
                    pipe.sadd(self.key("incident-parcels", a.incident_id), a.waybill_id)
            if a.alert_type == AnomalyType.HUB_INCIDENT:
                if a.affected_waybills:
                    pipe.sadd(self.key("incident-parcels", aid), *a.affected_waybills)
                if record.state == AlertState.RESOLVED:
                    pipe.srem(self.key("incidents:open"), aid)
                else:
                    pipe.sadd(self.key("incidents:open"), aid)
            if a.order_id:
                pipe.sadd(self.key("order", a.order_id), aid)
            self._queue_index(pipe, record, previous)
            if record.state == AlertState.RESOLVED or record.state == AlertState.ACKNOWLEDGED:
                pipe.zrem(self.key("escalation"), aid)
            elif escalate_at_ms is not None:
                pipe.zadd(self.key("escalation"), {aid: escalate_at_ms}, nx=True)

        return op

    def _queue_index(self, pipe: Any, record: AlertRecord, previous: AlertRecord | None) -> None:
        """Keep the queue's sorted sets and filter sets in step with the record (same transaction)."""

        aid = record.alert.alert_id
        old = queue_tags(previous) if previous is not None and in_queue(previous) else set()
        new = queue_tags(record) if in_queue(record) else set()
        for tag in old - new:
            pipe.srem(self.key("qf", *tag), aid)
        for tag in new - old:
            pipe.sadd(self.key("qf", *tag), aid)
        if new:
            for sort, score in queue_scores(record).items():
                pipe.zadd(self.key("q", sort), {aid: score})
        elif old:
            for sort in QUEUE_SORTS:
                pipe.zrem(self.key("q", sort), aid)

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Queue size per alert type, severity and state (SCARDs, one round trip)."""

        from logiwatch.detectors.model import AnomalyType, Severity

        fields = [("type", t.value) for t in AnomalyType if t != AnomalyType.HUB_INCIDENT]
        fields += [("severity", s.value) for s in Severity]
        fields += [("state", s) for s in ("open", "acknowledged")]
        pipe = self.r.pipeline(transaction=False)
        for f, v in fields:
            pipe.scard(self.key("qf", f, v))
        out: dict[str, dict[str, int]] = {"type": {}, "severity": {}, "state": {}}
        for (f, v), n in zip(fields, await pipe.execute(), strict=True):
            out[f][v] = int(n)
        return out

    async def notifications_of(self, alert_ids: Iterable[str]) -> list[Notification]:
        """Every notification the alerts caused (the parcel page's delivery attempts)."""

        ids = list(alert_ids)
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for aid in ids:
            pipe.hgetall(self.key("notifs", aid))
        by_receiver: dict[str, set[str]] = {}
        for got in await pipe.execute():
            for nid, receiver in got.items():
                by_receiver.setdefault(_s(receiver), set()).add(_s(nid))
        if not by_receiver:
            return []
        pipe = self.r.pipeline(transaction=False)
        for receiver, nids in sorted(by_receiver.items()):
            pipe.hmget(self.key("nlog", receiver), sorted(nids))
        raws = [raw for got in await pipe.execute() for raw in got]
        return sorted((_notif_dec.decode(r) for r in raws if r), key=lambda n: (n.created_ms, n.nid))

    async def revisions(self, alert_ids: Iterable[str]) -> dict[str, list[Alert]]:
        """Each alert's recorded revisions, oldest first (the last :data:`MAX_REVISIONS`)."""

        ids = list(alert_ids)
        pipe = self.r.pipeline(transaction=False)
        for aid in ids:
            pipe.lrange(self.key("revisions", aid), 0, -1)
        return {aid: [_alert_dec.decode(x) for x in got] for aid, got in zip(ids, await pipe.execute(), strict=True) if got}

    async def incident_series(self, incident_id: str) -> list[dict[str, Any]]:
        got: Any = await self.r.zrange(self.key("incident-series", incident_id), 0, -1)
        return [msgspec.json.decode(g) for g in got]

    async def incident_parcels(self, incident_id: str, offset: int, limit: int) -> tuple[list[str], int]:
        """A page of an incident's affected waybills (sorted), and how many there are."""

        members = sorted(_s(m) for m in await self.r.smembers(self.key("incident-parcels", incident_id)))
        return members[offset : offset + limit], len(members)

    async def reindex_queue(self) -> int:
        """Build the queue indexes from the open and acknowledged alerts (for stores written
        before the queue existed); idempotent, returns how many alerts were indexed."""

        ids = sorted((await self.ids_in("state", "open")) | (await self.ids_in("state", "acknowledged")))
        n = 0
        for i in range(0, len(ids), 1000):
            pipe = self.r.pipeline(transaction=False)
            for rec in await self.get_many(ids[i : i + 1000]):
                self._queue_index(pipe, rec, None)
                n += in_queue(rec)
            await pipe.execute()
        await self.r.set(self.key("q", "version"), QUEUE_INDEX_VERSION)
        return n

    async def ensure_queue_index(self) -> int:
        """Reindex once per store (a marker key records the index version)."""

        got = await self.r.get(self.key("q", "version"))
        if got is not None and _s(got) == QUEUE_INDEX_VERSION:
            return 0
        return await self.reindex_queue()

    async def ids_in(self, index: str, value: str) -> set[str]:
        members = await self.r.smembers(self.key(index, value))
        return {_s(m) for m in members}

    async def ids_in_any(self, index: str, values: Iterable[str]) -> set[str]:
        """The ids in any of the ``values`` of an index: one SUNION (the index keys share a slot)."""

        keys = [self.key(index, v) for v in values]
        return {_s(m) for m in await self.r.sunion(keys)} if keys else set()

    async def query(
        self,
        *,
        state: str | None = None,
        alert_type: str | None = None,
        waybill: str | None = None,
        incident: str | None = None,
        limit: int = 200,
    ) -> list[AlertRecord]:
        sets: list[set[str]] = []
        if state:
            sets.append(await self.ids_in("state", state))
        if alert_type:
            sets.append(await self.ids_in("type", alert_type))
        if waybill:
            sets.append(await self.ids_in("waybill", waybill))
        if incident:
            sets.append(await self.ids_in("incident", incident))
        if not sets:
            sets.append(set().union(*[await self.ids_in("state", s.value) for s in AlertState]))
        ids = set.intersection(*sets)
        recs = await self.get_many(sorted(ids))
        recs.sort(key=lambda r: (r.alert.detected_at, r.alert.alert_id), reverse=True)
        return recs[:limit]

    async def incident_parcel_count(self, incident_id: str) -> tuple[int, list[str]]:
        key = self.key("incident-parcels", incident_id)
        count = await self.r.scard(key)
        sample = await self.r.srandmember(key, 20)
        return int(count), sorted(_s(m) for m in sample or [])

    async def open_incidents(self) -> list[AlertRecord]:
        return await self.get_many(sorted(_s(m) for m in await self.r.smembers(self.key("incidents:open"))))

    # ----------------------------------------------------------------- notifications

    async def notification(self, nid: str, receiver: str) -> Notification | None:
        raw = await self.r.hget(self.key("nlog", receiver), nid)
        return _notif_dec.decode(raw) if raw else None

    async def due(self, receiver: str, now: int, limit: int = 16) -> list[str]:
        got = await self.r.zrangebyscore(self.key("queue", receiver), "-inf", now, start=0, num=limit)
        return [_s(g) for g in got]

    async def next_due_ms(self, receiver: str) -> int | None:
        got = await self.r.zrange(self.key("queue", receiver), 0, 0, withscores=True)
        return int(got[0][1]) if got else None

    async def unqueue(self, receiver: str, nid: str, guard: Guard | None = None) -> None:
        """Drop a webhook-id from the receiver's queue (its notification is gone or already delivered)."""

        await self._atomic(lambda pipe: pipe.zrem(self.key("queue", receiver), nid), guard)

    async def reschedule(self, notif: Notification, due_ms: int, guard: Guard | None = None) -> None:
        def op(pipe: Any) -> None:
            pipe.hset(self.key("nlog", notif.receiver), notif.nid, _enc.encode(notif))
            pipe.zadd(self.key("queue", notif.receiver), {notif.nid: due_ms})

        await self._atomic(op, guard)

    async def delivered(self, notif: Notification, guard: Guard | None = None) -> None:
        def op(pipe: Any) -> None:
            pipe.hset(self.key("nlog", notif.receiver), notif.nid, _enc.encode(notif))
            pipe.zrem(self.key("queue", notif.receiver), notif.nid)

        await self._atomic(op, guard)

    async def dead_letter(self, notif: Notification, guard: Guard | None = None) -> None:
        def op(pipe: Any) -> None:
            pipe.hset(self.key("nlog", notif.receiver), notif.nid, _enc.encode(notif))
            pipe.zrem(self.key("queue", notif.receiver), notif.nid)
            pipe.rpush(self.key("dead", notif.receiver), notif.nid)

        await self._atomic(op, guard)

    async def dead_letters(self, receiver: str) -> list[str]:
        got = await self.r.lrange(self.key("dead", receiver), 0, -1)
        return [_s(g) for g in got]

    async def redrive(self, receiver: str, now: int) -> int:
        """Move the receiver's dead letters back into its queue (same webhook-ids), re-enable it."""

        n = 0
        while True:
            raw = await self.r.lpop(self.key("dead", receiver))
            if raw is None:
                break
            notif = await self.notification(_s(raw), receiver)
            if notif is None:
                continue
            notif.attempts = 0
            notif.last_error = None
            await self.reschedule(notif, now)
            n += 1
        await self.r.hdel(self.key("disabled"), receiver)
        return n

    async def disable(self, receiver: str, reason: str, guard: Guard | None = None) -> None:
        # on a cluster the delivery lease (receiver slot) is checked just before this index-slot write
        await self._atomic(lambda pipe: pipe.hset(self.key("disabled"), receiver, reason), guard)

    async def disabled(self) -> dict[str, str]:
        got = await self.r.hgetall(self.key("disabled"))
        return {_s(k): _s(v) for k, v in got.items()}

    # ----------------------------------------------------------------- silences, escalation, feedback

    async def add_silence(self, silence: Silence) -> None:
        await self.r.hset(self.key("silences"), silence.silence_id, _enc.encode(silence))

    async def silences(self) -> tuple[Silence, ...]:
        got = await self.r.hvals(self.key("silences"))
        return tuple(_sil_dec.decode(x) for x in got)

    async def due_escalations(self, now: int) -> list[str]:
        got = await self.r.zrangebyscore(self.key("escalation"), "-inf", now, start=0, num=100)
        return [_s(g) for g in got]

    async def drop_escalation(self, alert_id: str, guard: Guard | None = None) -> None:
        await self._atomic(lambda pipe: pipe.zrem(self.key("escalation"), alert_id), guard)

    async def record_false_alarm(self, record: AlertRecord, by: str, note: str) -> bool:
        """Store the report and publish the subject to the detectors' suppression set.

        Returns False when the alert was already marked (counted once).
        """

        a = record.alert
        subject = a.waybill_id or a.node_id or a.alert_id
        first = await self.r.sadd(self.key("false-alarm-ids"), a.alert_id)
        await self.r.sadd(self.suppression_key(a.alert_type.value), subject)  # its own slot
        if not first:
            return False
        def op(pipe: Any) -> None:
            fields = {"alert_id": a.alert_id, "alert_type": a.alert_type.value, "subject": subject, "by": by, "note": note[:500]}
            pipe.xadd(self.key("feedback"), fields)
            pipe.hincrby(self.key("false-alarms"), a.alert_type.value, 1)

        await self._atomic(op)
        return True

    async def counts(self) -> dict[str, Any]:
        """Open alerts per (type, severity) and open incidents, for the scrape-time collector."""

        ids = (await self.ids_in("state", "open")) | (await self.ids_in("state", "acknowledged"))
        per: dict[tuple[str, str], int] = {}
        for rec in await self.get_many(sorted(ids)):
            k = (rec.alert.alert_type.value, rec.alert.severity.value)
            per[k] = per.get(k, 0) + 1
        return {"open": per, "incidents_open": int(await self.r.scard(self.key("incidents:open")))}


#: Queue sort orders; each has a sorted set ``P q:<sort>`` whose descending order is
#: "most urgent first" except ``age`` (first-seen time: ascending is oldest first).
QUEUE_SORTS = ("severity", "lateness", "amount", "age")
#: Queue filter fields (``P qf:<field>:<value>``); ``hub`` is the alert's node.
QUEUE_FILTERS = ("type", "severity", "state", "merchant", "carrier", "region", "hub")
QUEUE_INDEX_VERSION = "1"


def in_queue(record: AlertRecord) -> bool:
    """The CS queue holds parcel alerts nobody resolved (incidents have their own page)."""

    return record.state != AlertState.RESOLVED and record.alert.alert_type is not AnomalyType.HUB_INCIDENT


def queue_tags(record: AlertRecord) -> set[tuple[str, str]]:
    a = record.alert
    tags = {("type", a.alert_type.value), ("severity", a.severity.value), ("state", record.state.value)}
    for name, value in (("merchant", a.merchant_id), ("carrier", a.carrier_id), ("region", a.region), ("hub", a.node_id)):
        if value:
            tags.add((name, value))
    return tags


def queue_scores(record: AlertRecord) -> dict[str, float]:
    """Scores per sort: severity first then the oldest (first seen) within a severity."""

    a = record.alert
    return {
        "severity": SEV_RANK.get(a.severity.value, 0) * 1e13 + (1e13 - record.first_seen_ms),
        "lateness": float(a.predicted_lateness_s or 0.0),
        "amount": float(a.order_amount or 0.0),
        "age": float(record.first_seen_ms),
    }


def _zrem(key: str, member: str) -> Op:
    return lambda c: c.zrem(key, member)


async def _record(group: Sequence[Op]) -> list[tuple[Any, ...]]:
    """The raw commands ``group``'s ops queue (a cluster transaction's one slot)."""

    rec = CommandRecorder()
    for op in group:
        queued = op(rec)
        if isinstance(queued, Awaitable):
            await queued
    return rec.commands


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
