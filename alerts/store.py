"""Redis persistence of the alert service.

One :class:`AlertStore` per process, on ``redis.asyncio``. Keys live under
``<redis.key_prefix>alerts:`` (``P`` below) except the detector-facing
suppression sets:

* ``P alert:<id>``: the :class:`AlertRecord` (msgspec JSON);
  index sets ``P state:<state>``, ``P type:<type>``, ``P waybill:<id>``,
  ``P incident:<incident id>`` (parcel alert ids grouped under it),
  ``P incident-parcels:<incident id>`` (waybills), ``P incidents:open``;
* ``P nlog``: the notification log, webhook-id -> :class:`Notification`;
  a webhook-id is added once, ever, which is what stops re-notification;
* ``P queue:<receiver>``: sorted set of webhook-ids by due time (ms);
  ``P dead:<receiver>``: the dead-letter list; ``P disabled``: receivers
  switched off by a 410;
* ``P silences``, ``P escalation`` (alert id by due time), ``P feedback``
  (stream of false-alarm reports), ``P false-alarms`` (count per type);
* ``<redis.key_prefix>suppress:<alert_type>``: set of subjects (waybill, or
  hub for incidents) that customer service marked as false alarms, for the
  detectors to skip.

An alert and the notifications it causes are written in one MULTI/EXEC, so
the consumer may commit its offset as soon as :meth:`commit` returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from logiwatch.alerts.model import AlertRecord, AlertState, Notification, Silence
from logiwatch.detectors.model import AnomalyType

_rec_dec = msgspec.json.Decoder(AlertRecord)
_notif_dec = msgspec.json.Decoder(Notification)
_sil_dec = msgspec.json.Decoder(Silence)
_enc = msgspec.json.Encoder()

# Adds the notification to the log and the receiver's queue only if its id
# is new: the log is the dedup that survives restarts and redeliveries.
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


class AlertStore:
    """Typed access to the alert keys; every method is one or two round trips."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self.r = client
        self.root = key_prefix
        self.p = f"{key_prefix}alerts:"
        self._enqueue = client.register_script(_ENQUEUE)

    def key(self, *parts: str) -> str:
        return self.p + ":".join(parts)

    def suppression_key(self, alert_type: str) -> str:
        return f"{self.root}suppress:{alert_type}"

    # ----------------------------------------------------------------- alerts

    async def get(self, alert_id: str) -> AlertRecord | None:
        raw = await self.r.get(self.key("alert", alert_id))
        return _rec_dec.decode(raw) if raw else None

    async def get_many(self, alert_ids: Iterable[str]) -> list[AlertRecord]:
        ids = list(alert_ids)
        if not ids:
            return []
        raws = await self.r.mget([self.key("alert", i) for i in ids])
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

    async def get_map(self, alert_ids: Iterable[str]) -> dict[str, AlertRecord]:
        ids = sorted(set(alert_ids))
        if not ids:
            return {}
        raws = await self.r.mget([self.key("alert", i) for i in ids])
        return {i: _rec_dec.decode(raw) for i, raw in zip(ids, raws, strict=True) if raw}

    async def commit_many(self, commits: Sequence[Commit]) -> list[list[bool]]:
        """Several :meth:`commit` calls in one MULTI/EXEC (one round trip for a polled batch)."""

        pipe = self.r.pipeline(transaction=True)
        spans: list[tuple[int, int]] = []
        for record, previous, notifications, escalate_at_ms in commits:
            n = self._queue_commit(pipe, record, previous, escalate_at_ms)
            for notif, due_ms in notifications:
                await self._enqueue(  # on a pipeline this only queues the EVALSHA; execute() runs it
                    keys=[self.key("nlog"), self.key("queue", notif.receiver)],
                    args=[notif.nid, _enc.encode(notif), due_ms],
                    client=pipe,
                )
            spans.append((n, len(notifications)))
        results = await pipe.execute()
        out: list[list[bool]] = []
        pos = 0
        for n_ops, n_notifs in spans:
            pos += n_ops
            out.append([bool(x) for x in results[pos : pos + n_notifs]])
            pos += n_notifs
        return out

    def _queue_commit(self, pipe: Any, record: AlertRecord, previous: AlertRecord | None, escalate_at_ms: int | None) -> int:
        """Queue the record and its indexes on ``pipe``; returns how many commands were queued."""

        a = record.alert
        aid = a.alert_id
        before = len(pipe.command_stack)
        pipe.set(self.key("alert", aid), _enc.encode(record))
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
        if record.state == AlertState.RESOLVED or record.state == AlertState.ACKNOWLEDGED:
            pipe.zrem(self.key("escalation"), aid)
        elif escalate_at_ms is not None:
            pipe.zadd(self.key("escalation"), {aid: escalate_at_ms}, nx=True)
        return len(pipe.command_stack) - before

    async def ids_in(self, index: str, value: str) -> set[str]:
        members = await self.r.smembers(self.key(index, value))
        return {_s(m) for m in members}

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

    async def notification(self, nid: str) -> Notification | None:
        raw = await self.r.hget(self.key("nlog"), nid)
        return _notif_dec.decode(raw) if raw else None

    async def due(self, receiver: str, now: int, limit: int = 16) -> list[str]:
        got = await self.r.zrangebyscore(self.key("queue", receiver), "-inf", now, start=0, num=limit)
        return [_s(g) for g in got]

    async def next_due_ms(self, receiver: str) -> int | None:
        got = await self.r.zrange(self.key("queue", receiver), 0, 0, withscores=True)
        return int(got[0][1]) if got else None

    async def unqueue(self, receiver: str, nid: str) -> None:
        """Drop a webhook-id from the receiver's queue (its notification is gone or already delivered)."""

        await self.r.zrem(self.key("queue", receiver), nid)

    async def reschedule(self, notif: Notification, due_ms: int) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("nlog"), notif.nid, _enc.encode(notif))
        pipe.zadd(self.key("queue", notif.receiver), {notif.nid: due_ms})
        await pipe.execute()

    async def delivered(self, notif: Notification) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("nlog"), notif.nid, _enc.encode(notif))
        pipe.zrem(self.key("queue", notif.receiver), notif.nid)
        await pipe.execute()

    async def dead_letter(self, notif: Notification) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("nlog"), notif.nid, _enc.encode(notif))
        pipe.zrem(self.key("queue", notif.receiver), notif.nid)
        pipe.rpush(self.key("dead", notif.receiver), notif.nid)
        await pipe.execute()

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
            notif = await self.notification(_s(raw))
            if notif is None:
                continue
            notif.attempts = 0
            notif.last_error = None
            await self.reschedule(notif, now)
            n += 1
        await self.r.hdel(self.key("disabled"), receiver)
        return n

    async def disable(self, receiver: str, reason: str) -> None:
        await self.r.hset(self.key("disabled"), receiver, reason)

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

    async def drop_escalation(self, alert_id: str) -> None:
        await self.r.zrem(self.key("escalation"), alert_id)

    async def record_false_alarm(self, record: AlertRecord, by: str, note: str) -> bool:
        """Store the report and publish the subject to the detectors' suppression set.

        Returns False when the alert was already marked (counted once).
        """

        a = record.alert
        subject = a.waybill_id or a.node_id or a.alert_id
        first = await self.r.sadd(self.key("false-alarm-ids"), a.alert_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.sadd(self.suppression_key(a.alert_type.value), subject)
        if first:
            pipe.xadd(
                self.key("feedback"),
                {"alert_id": a.alert_id, "alert_type": a.alert_type.value, "subject": subject, "by": by, "note": note[:500]},
            )
            pipe.hincrby(self.key("false-alarms"), a.alert_type.value, 1)
        await pipe.execute()
        return bool(first)

    async def counts(self) -> dict[str, Any]:
        """Open alerts per (type, severity) and open incidents, for the scrape-time collector."""

        ids = (await self.ids_in("state", "open")) | (await self.ids_in("state", "acknowledged"))
        per: dict[tuple[str, str], int] = {}
        for rec in await self.get_many(sorted(ids)):
            k = (rec.alert.alert_type.value, rec.alert.severity.value)
            per[k] = per.get(k, 0) + 1
        return {"open": per, "incidents_open": int(await self.r.scard(self.key("incidents:open")))}


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
