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
* ``P revisions:<alert id>``: the alert's revisions as they arrived (last 50);
* ``P notifs:<alert id>``: the webhook-ids an alert caused (the parcel page's deliveries);
* the CS queue (open and acknowledged parcel alerts, no incidents, see :data:`QUEUE_SORTS`):
  sorted sets ``P q:<sort>`` (one score per sort order) and filter sets
  ``P qf:<field>:<value>`` holding only queue members, so a page is a ZRANGE
  or one ZINTERSTORE and the counts are SCARDs; ``P order:<order id>``
  (all alerts of an order, for search); ``P incident-series:<id>`` (an
  incident's revisions over time, for its chart);
* ``P changes``: a counter bumped by every commit (the console's live updates);
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
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis

from logiwatch.alerts.model import AlertRecord, AlertState, Notification, Silence
from logiwatch.detectors.model import Alert, AnomalyType

_rec_dec = msgspec.json.Decoder(AlertRecord)
_notif_dec = msgspec.json.Decoder(Notification)
_sil_dec = msgspec.json.Decoder(Silence)
_alert_dec = msgspec.json.Decoder(Alert)
#: revisions kept per alert for the parcel timeline
MAX_REVISIONS = 50
_enc = msgspec.json.Encoder()

# Adds the notification to the log and the receiver's queue only if its id
# is new: the log is the dedup that survives restarts and redeliveries.
_ENQUEUE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[1])
  return 1
end
return 0
"""


# Walks a sorted set (KEYS[1]) in score order, 500 members at a time, keeping those in every
# set KEYS[3..] and, when ARGV[7] is 1, whose score in KEYS[2] (first seen, ms) lies within
# [ARGV[1], ARGV[2]]: returns the count of matches walked (to the end only when ARGV[6] is 1)
# then ARGV[4] ids from match ARGV[3] on.
_WALK = """
local lo, hi = tonumber(ARGV[1]), tonumber(ARGV[2])
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local desc, count_all, windowed = ARGV[5] == '1', ARGV[6] == '1', ARGV[7] == '1'
local out, seen, start = {-1}, 0, 0
while true do
  local chunk
  if desc then chunk = redis.call('ZREVRANGE', KEYS[1], start, start + 499)
  else chunk = redis.call('ZRANGE', KEYS[1], start, start + 499) end
  if #chunk == 0 then break end
  local ok = {}
  for i = 1, #chunk do ok[i] = true end
  if windowed then
    local ages = redis.call('ZMSCORE', KEYS[2], unpack(chunk))
    for i = 1, #chunk do
      local t = tonumber(ages[i])
      ok[i] = t ~= nil and t >= lo and t <= hi
    end
  end
  for k = 3, #KEYS do
    local member = redis.call('SMISMEMBER', KEYS[k], unpack(chunk))
    for i = 1, #chunk do ok[i] = ok[i] and member[i] == 1 end
  end
  for i = 1, #chunk do
    if ok[i] then
      if seen >= offset and #out <= limit then out[#out + 1] = chunk[i] end
      seen = seen + 1
    end
  end
  if not count_all and #out > limit then break end
  start = start + 500
end
out[1] = seen
return out
"""

#: (record, previous record, [(notification, due ms)], escalate at ms) for :meth:`AlertStore.commit_many`.
Commit = tuple[AlertRecord, AlertRecord | None, Sequence[tuple[Notification, int]], int | None]


def now_ms() -> int:
    return int(time.time() * 1000)


class Guard(Protocol):
    """A lease (:class:`logiwatch.alerts.lease.Lease`): writes made under it are fenced."""

    async def begin(self, client: aioredis.Redis) -> Any:
        """A MULTI pipeline whose EXEC fails once the lease has another holder."""


class AlertStore:
    """Typed access to the alert keys; every method is one or two round trips."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self.r = client
        self.root = key_prefix
        self.p = f"{key_prefix}alerts:"
        self._enqueue = client.register_script(_ENQUEUE)
        self._walk = client.register_script(_WALK)

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

    async def changes(self) -> int:
        """How many commits the store has seen (the console's server-sent events watch it)."""

        got = await self.r.get(self.key("changes"))
        return int(got) if got is not None else 0

    async def commit_many(self, commits: Sequence[Commit], guard: Guard | None = None, unescalate: Sequence[str] = ()) -> list[list[bool]]:
        """Several :meth:`commit` calls in one MULTI/EXEC (one round trip for a polled batch).

        ``unescalate``: alert ids whose escalation timer is removed first (an escalation
        re-arms it in the same transaction); ``guard``: fence the write by that lease.
        """

        pipe = await self._tx(guard)
        for aid in unescalate:
            pipe.zrem(self.key("escalation"), aid)
        base = len(unescalate)
        spans: list[tuple[int, int]] = []
        for record, previous, notifications, escalate_at_ms in commits:
            n = self._queue_commit(pipe, record, previous, escalate_at_ms)
            for notif, due_ms in notifications:
                await self._enqueue(  # on a pipeline this only queues the EVALSHA; execute() runs it
                    keys=[self.key("nlog"), self.key("queue", notif.receiver), self.key("notifs", notif.alert_id)],
                    args=[notif.nid, _enc.encode(notif), due_ms],
                    client=pipe,
                )
            spans.append((n, len(notifications)))
        if commits:
            pipe.incr(self.key("changes"))  # the console's live updates watch this (last in the reply)
        results = await pipe.execute()
        out: list[list[bool]] = []
        pos = base
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
        if a.order_id:
            pipe.sadd(self.key("order", a.order_id), aid)
        if a.alert_type.value == "hub_incident":
            point: dict[str, Any] = {"t": a.detected_at, "revision": a.revision, "parcels": len(a.affected_waybills), "severity": a.severity.value}
            point.update({k: v for k, v in a.evidence.items() if isinstance(v, int | float) and not isinstance(v, bool)})
            pipe.zadd(self.key("incident-series", aid), {_enc.encode(point): a.detected_at})
        self._queue_index(pipe, record, previous)
        if previous is None or (previous.alert.revision, previous.alert.status, previous.alert.severity) != (a.revision, a.status, a.severity):
            # the parcel page's timeline shows every revision, not only the latest record
            pipe.rpush(self.key("revisions", aid), _enc.encode(a))
            pipe.ltrim(self.key("revisions", aid), -MAX_REVISIONS, -1)
        if record.state == AlertState.RESOLVED or record.state == AlertState.ACKNOWLEDGED:
            pipe.zrem(self.key("escalation"), aid)
        elif escalate_at_ms is not None:
            pipe.zadd(self.key("escalation"), {aid: escalate_at_ms}, nx=True)
        return len(pipe.command_stack) - before

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

    async def queue_page(
        self,
        *,
        sort: str = "severity",
        descending: bool = True,
        filters: dict[str, str] | None = None,
        first_seen_range: tuple[int | None, int | None] = (None, None),
        search: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[AlertRecord], int]:
        """One page of the CS queue and how many match.

        ``filters`` maps a :data:`QUEUE_FILTERS` field to one value; ``first_seen_range``
        bounds when the service first saw the alert (ms); ``search`` is a waybill or order id.
        Each query takes the cheapest of three plans (docs/console.md): a range of the sort's
        sorted set (within score bands for an age window on the ``severity``/``age`` sorts);
        an intersection into a temporary key when what matches is a small share of the
        queue (its cost follows the smallest input); or, when it is a large share, a walk of
        the sort order on the server that stops once the page is full (counted by
        SINTERCARD, ZCOUNT, or both: :meth:`_count_in_window`).
        """

        zkey = self.key("q", sort)
        sets = [self.key("qf", f, v) for f, v in sorted((filters or {}).items())]
        lo, hi = first_seen_range
        aged = lo is not None or hi is not None
        bands = age_bands(sort, lo, hi) if aged else None
        tmp = self.key("tmp", uuid.uuid4().hex)
        if search:
            sets.append(tmp + ":s")
        elif aged and bands is None:
            ids, total = await self._aged_page(zkey, sets, tmp, lo, hi, descending, offset, limit)
            return await self.get_many(ids), total
        elif sets and not aged and not await self._narrow(zkey, sets, offset, limit):
            ids, total = await self._walk_page(zkey, sets, None, descending, offset, limit)
            return await self.get_many(ids), total
        if not sets:
            ids, total = await self._page(zkey, bands, descending, offset, limit)
            return await self.get_many(ids), total
        tx = self.r.pipeline(transaction=True)
        if search:
            tx.sunionstore(tmp + ":s", [self.key("waybill", search), self.key("order", search)])
        tx.zinterstore(tmp, {zkey: 1, **dict.fromkeys(sets, 0)})
        tx.expire(tmp, 60)  # a crashed request leaves nothing behind for long
        tx.delete(tmp + ":s")
        await tx.execute()
        try:
            if aged and bands is None:  # a search: a handful of alerts, walked whole
                ids, total = await self._walk_page(tmp, [], (lo, hi), descending, offset, limit, count=True)
            else:
                ids, total = await self._page(tmp, bands, descending, offset, limit)
        finally:
            await self.r.delete(tmp)
        return await self.get_many(ids), total

    async def _narrow(self, zkey: str, sets: list[str], offset: int, limit: int) -> bool:
        """Whether intersecting the filter sets costs less than walking the sort order."""

        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(zkey)
        for k in sets:
            pipe.scard(k)
        size, *cards = (int(x) for x in await pipe.execute())
        return not cheaper_to_walk(size, cards, offset, limit)

    async def _walk_page(
        self, source: str, sets: list[str], window: tuple[int | None, int | None] | None, descending: bool, offset: int, limit: int, count: bool = False
    ) -> tuple[list[str], int]:
        """The page by walking ``source`` in order on the server; the total by SINTERCARD of the
        sets (no window), or by the walk itself (``count``: it then goes to the end)."""

        lo, hi = window or (None, None)
        got = await self._walk(
            keys=[source, self.key("q", "age"), *sets],
            args=[-1e18 if lo is None else lo, 1e18 if hi is None else hi, offset, limit, int(descending), int(count), int(window is not None)],
        )
        total = int(got[0]) if count else int(await self.r.sintercard(len(sets), list[Any](sets)))
        return [_s(i) for i in got[1:]], total

    async def _aged_page(
        self, zkey: str, sets: list[str], tmp: str, lo: int | None, hi: int | None, descending: bool, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """A page in the sort's order of the alerts first seen within ``[lo, hi]`` and in every
        filter set. Narrow (window or smallest set under an eighth of the queue): intersect
        starting from the narrowest, cost ~ its size. Wide: walk the sort order (the count is
        a ZCOUNT of the window without filters, else :meth:`_count_in_window`)."""

        age_key = self.key("q", "age")
        lo_s, hi_s = (str(lo) if lo is not None else "-inf"), (str(hi) if hi is not None else "+inf")
        pipe = self.r.pipeline(transaction=False)
        pipe.zcount(age_key, lo_s, hi_s)
        pipe.zcard(zkey)
        for k in sets:
            pipe.scard(k)
        window, size, *cards = (int(x) for x in await pipe.execute())
        smallest = min(cards, default=size)
        if not cheaper_to_walk(size, [*cards, window], offset, limit):
            tx = self.r.pipeline(transaction=True)
            if window <= smallest:
                tx.zrangestore(tmp + ":a", age_key, lo_s, hi_s, byscore=True)
            else:
                tx.zinterstore(tmp + ":a", {age_key: 1, **dict.fromkeys(sets, 0)})
                tx.zremrangebyscore(tmp + ":a", "-inf", f"({lo_s}")
                tx.zremrangebyscore(tmp + ":a", f"({hi_s}", "+inf")
            tx.zinterstore(tmp, {tmp + ":a": 0, zkey: 1, **dict.fromkeys(sets, 0)})
            tx.expire(tmp, 60)
            tx.delete(tmp + ":a")
            await tx.execute()
            try:
                return await self._page(tmp, None, descending, offset, limit)
            finally:
                await self.r.delete(tmp)
        got = await self._walk(
            keys=[zkey, age_key, *sets],
            args=[-1e18 if lo is None else lo, 1e18 if hi is None else hi, offset, limit, int(descending), 0, 1],
        )
        total = window if not sets else await self._count_in_window(sets, cards, tmp, lo_s, hi_s)
        return [_s(i) for i in got[1:]], total

    async def _count_in_window(self, sets: list[str], cards: list[int], tmp: str, lo_s: str, hi_s: str) -> int:
        """How many alerts are in every filter set and first seen within the (wide) window: those
        in the sets less those outside the window (a small part of the age index, copied out)."""

        age_key = self.key("q", "age")
        pieces = [(tmp + ":lo", "-inf", f"({lo_s}")] if lo_s != "-inf" else []
        pieces += [(tmp + ":hi", f"({hi_s}", "+inf")] if hi_s != "+inf" else []
        tx = self.r.pipeline(transaction=True)
        for key, start, end in pieces:
            tx.zrangestore(key, age_key, start, end, byscore=True)
        for key, _, _ in pieces:  # ZINTERCARD walks its smallest input: the piece outside
            tx.zintercard(1 + len(sets), [key, *sets])
        tx.delete(*(key for key, _, _ in pieces))
        got = await tx.execute()
        outside = sum(int(n) for n in got[len(pieces) : 2 * len(pieces)])
        inside = cards[0] if len(sets) == 1 else int(await self.r.sintercard(len(sets), list[Any](sets)))
        return inside - outside

    async def _page(
        self, key: str, bands: list[tuple[float, float]] | None, descending: bool, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """``limit`` ids from ``offset`` of a sorted set, optionally only within score bands
        (walked in sort order: the severity sort's age filter is one band per severity)."""

        if bands is None:
            pipe = self.r.pipeline(transaction=False)
            pipe.zcard(key)
            pipe.zrange(key, offset, offset + limit - 1, desc=descending)
            total, got = await pipe.execute()
            return [_s(i) for i in got], int(total)
        bands = sorted(bands, reverse=descending)
        pipe = self.r.pipeline(transaction=False)
        for lo, hi in bands:
            pipe.zcount(key, lo, hi)
        counts = [int(c) for c in await pipe.execute()]
        ids: list[str] = []
        skip = offset
        for (lo, hi), n in zip(bands, counts, strict=True):
            if len(ids) >= limit:
                break
            if skip >= n:
                skip -= n
                continue
            if descending:
                got = await self.r.zrevrangebyscore(key, hi, lo, start=skip, num=limit - len(ids))
            else:
                got = await self.r.zrangebyscore(key, lo, hi, start=skip, num=limit - len(ids))
            ids += [_s(i) for i in got]
            skip = 0
        return ids, sum(counts)

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
            pipe.smembers(self.key("notifs", aid))
        nids = sorted({_s(n) for got in await pipe.execute() for n in got})
        if not nids:
            return []
        raws = await self.r.hmget(self.key("nlog"), nids)
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

    async def _tx(self, guard: Guard | None) -> Any:
        """A MULTI/EXEC pipeline; under a lease, one that is refused once another instance holds it."""

        return await guard.begin(self.r) if guard is not None else self.r.pipeline(transaction=True)

    async def unqueue(self, receiver: str, nid: str, guard: Guard | None = None) -> None:
        """Drop a webhook-id from the receiver's queue (its notification is gone or already delivered)."""

        pipe = await self._tx(guard)
        pipe.zrem(self.key("queue", receiver), nid)
        await pipe.execute()

    async def reschedule(self, notif: Notification, due_ms: int, guard: Guard | None = None) -> None:
        pipe = await self._tx(guard)
        pipe.hset(self.key("nlog"), notif.nid, _enc.encode(notif))
        pipe.zadd(self.key("queue", notif.receiver), {notif.nid: due_ms})
        await pipe.execute()

    async def delivered(self, notif: Notification, guard: Guard | None = None) -> None:
        pipe = await self._tx(guard)
        pipe.hset(self.key("nlog"), notif.nid, _enc.encode(notif))
        pipe.zrem(self.key("queue", notif.receiver), notif.nid)
        await pipe.execute()

    async def dead_letter(self, notif: Notification, guard: Guard | None = None) -> None:
        pipe = await self._tx(guard)
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

    async def disable(self, receiver: str, reason: str, guard: Guard | None = None) -> None:
        pipe = await self._tx(guard)
        pipe.hset(self.key("disabled"), receiver, reason)
        await pipe.execute()

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
        pipe = await self._tx(guard)
        pipe.zrem(self.key("escalation"), alert_id)
        await pipe.execute()

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


#: Queue sort orders; each has a sorted set ``P q:<sort>`` whose descending order is
#: "most urgent first" except ``age`` (first-seen time: ascending is oldest first).
QUEUE_SORTS = ("severity", "lateness", "amount", "age")
#: Queue filter fields (``P qf:<field>:<value>``); ``hub`` is the alert's node.
QUEUE_FILTERS = ("type", "severity", "state", "merchant", "carrier", "region", "hub")
QUEUE_INDEX_VERSION = "1"
_SEV_RANK = {"info": 0, "warning": 1, "critical": 2}


def age_bands(sort: str, lo: int | None, hi: int | None) -> list[tuple[float, float]] | None:
    """Score ranges of ``q:<sort>`` holding the alerts first seen within ``[lo, hi]`` (ms),
    or None when the sort's scores do not encode the age (lateness, amount).

    >>> age_bands("age", 10, None)
    [(10, inf)]
    >>> len(age_bands("severity", 0, 5))
    3
    """

    if sort == "age":
        return [(lo if lo is not None else float("-inf"), hi if hi is not None else float("inf"))]
    if sort != "severity":
        return None
    out = []
    for rank in sorted(set(_SEV_RANK.values())):
        base = rank * 1e13 + 1e13
        out.append((base - hi if hi is not None else rank * 1e13, base - lo if lo is not None else base))
    return out


def cheaper_to_walk(size: int, cards: Sequence[int], offset: int, limit: int) -> bool:
    """Whether walking the sort order (``size`` members) to fill a page beats intersecting
    sets of sizes ``cards``: an intersection costs about its smallest input, written out
    (counted twice); a walk about the members it passes before ``offset + limit`` match,
    guessed from the sets' shares as if independent.

    >>> cheaper_to_walk(100_000, [11_000], 0, 50)   # one filter, 11 %: a few hundred steps
    True
    >>> cheaper_to_walk(100_000, [11_000, 20_000, 10_000], 0, 50)  # 0.2 % match: intersect
    False
    >>> cheaper_to_walk(100_000, [11_000], 50_000, 50)  # deep page: intersect
    False
    """

    if size <= 0 or not cards:
        return False
    share = 1.0
    for c in cards:
        share *= min(c, size) / size
    walk = min(float(size), (offset + limit) / share) if share > 0 else float(size)
    return walk < 2 * min(cards)


def in_queue(record: AlertRecord) -> bool:
    """The CS queue holds parcel alerts nobody resolved (incidents have their own page)."""

    return record.state != AlertState.RESOLVED and record.alert.alert_type.value != "hub_incident"


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
        "severity": _SEV_RANK.get(a.severity.value, 0) * 1e13 + (1e13 - record.first_seen_ms),
        "lateness": float(a.predicted_lateness_s or 0.0),
        "amount": float(a.order_amount or 0.0),
        "age": float(record.first_seen_ms),
    }


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
