"""The append-only liability ledger in Redis, and its publication to Kafka.

Keys under ``<redis.key_prefix>liability:``, all in ONE Redis Cluster slot
(hash tag ``{<prefix>ledger}``, spelled only by :func:`ledger_key`): the
append script writes the stream, its idempotency key and the totals
atomically; on one Redis the batch's appends and the parcels' charges share
one MULTI/EXEC, on a cluster the appends go first and the charges after. Ledger
traffic is one write per chargeable alert, far below the event rate, so one
slot (one cluster node) carries it (docs/operations.md has the figures):

* ``ledger``: a Redis stream; each entry's ``entry`` field is the JSON
  :class:`~logiwatch.alerts.liability.Entry`. Adjustments are new entries
  (reversals), never edits;
* ``keys``: idempotency key -> entry id. An entry whose key is present is
  not appended again, which makes replays and redeliveries harmless;
* ``parcel:<waybill>``: the parcel's standing charges (charge key -> JSON
  :class:`~logiwatch.alerts.liability.Charge`), what re-attribution reads;
* ``totals``: ``party|rule`` -> net fen, updated in the same script;
* ``incident-of``: waybill -> declared incident covering it;
* ``published``: the last stream id produced to ``logistics.liability``.

The stream is also the outbox: the service reads :meth:`Ledger.pending`
(every entry after the ``published`` cursor), produces it and calls
:meth:`Ledger.advance` once the broker acknowledged, so a crash re-publishes (same ``entry_id``) but never skips.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.asyncio.cluster import RedisCluster

from logiwatch.alerts.fencing import Guard, execute, queue_checked_batch
from logiwatch.alerts.ledger_index import LedgerIndex, index_keys
from logiwatch.alerts.liability import Charge, Entry, RuleSet, evaluate, false_alarm_reversals
from logiwatch.detectors.model import Alert, AnomalyType
from logiwatch.redisconn import CommandRecorder, check_prefix, queue_slot_batch

_entry_dec = msgspec.json.Decoder(Entry)
_charge_dec = msgspec.json.Decoder(Charge)
_enc = msgspec.json.Encoder()

_APPEND = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local id = redis.call('XADD', KEYS[2], '*', 'entry', ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[4], ARGV[5])
for i = 4, #KEYS do redis.call('SADD', KEYS[i], id) end  -- ledger_index.index_keys
return 1
"""


@dataclass
class Totals:
    """Net amounts (fen) per party and per rule over a time range."""

    by_party: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, int] = field(default_factory=dict)
    entries: int = 0

    def add(self, e: Entry) -> None:
        self.by_party[e.party] = self.by_party.get(e.party, 0) + e.amount_fen
        self.by_rule[e.rule_id] = self.by_rule.get(e.rule_id, 0) + e.amount_fen
        self.entries += 1

    @property
    def net_fen(self) -> int:
        return sum(self.by_party.values())


def ledger_tag(key_prefix: str) -> str:
    """The hash tag of the ledger's one slot (the liability publisher's lease is tagged with it too)."""

    return f"{{{check_prefix(key_prefix)}ledger}}"


def ledger_key(key_prefix: str, name: str) -> str:
    """The ledger key ``name`` (``ledger``, ``keys``, ``totals``, ``parcel:<waybill>``...).

    >>> ledger_key("lw:", "totals")
    'lw:liability:{lw:ledger}totals'
    """

    return f"{check_prefix(key_prefix)}liability:{ledger_tag(key_prefix)}{name}"


class Ledger:
    """Applies the rules engine to alerts and appends the outcome."""

    def __init__(self, client: Any, key_prefix: str, rules: RuleSet) -> None:
        self.r = client
        self.prefix = check_prefix(key_prefix)
        self.rules = rules
        self._append = client.register_script(_APPEND)
        self.cluster = isinstance(client, RedisCluster)
        #: entries by parcel and by cited alert/incident (alerts/ledger_index.py)
        self.index = LedgerIndex(client, self.key)

    def key(self, name: str) -> str:
        return ledger_key(self.prefix, name)

    async def _queue_append(self, tx: Any, e: Entry) -> None:
        keys = [self.key("keys"), self.key("ledger"), self.key("totals"), *index_keys(self.key, e)]
        args = [e.key, e.entry_id, _enc.encode(e), f"{e.party}|{e.rule_id}", e.amount_fen]
        if self.cluster:  # a cluster pipeline sends EVAL: its nodes may not hold the script's SHA
            tx.eval(_APPEND, len(keys), *keys, *args)
        else:
            await self._append(keys=keys, args=args, client=tx)  # on a pipeline this only queues the EVALSHA

    async def charges(self, waybills: Iterable[str]) -> dict[str, Charge]:
        wbs = list(waybills)
        out: dict[str, Charge] = {}
        for i in range(0, len(wbs), 500):  # one pipelined round trip per 500 parcels
            pipe = self.r.pipeline(transaction=False)
            for wb in wbs[i : i + 500]:
                pipe.hgetall(self.key(f"parcel:{wb}"))
            for got in await pipe.execute():
                for raw in got.values():
                    c = _charge_dec.decode(raw)
                    out[c.charge_key] = c
        return out

    async def apply(self, alert: Alert) -> list[Entry]:
        """Evaluate ``alert`` and append the resulting entries; returns those actually appended."""

        return await self.apply_batch([alert])

    def _chargeable(self, alert: Alert) -> bool:
        version = self.rules.at(alert.detected_at)
        return bool(alert.waybill_id) and version is not None and version.rule_for(alert.alert_type) is not None

    async def apply_batch(self, alerts: list[Alert]) -> list[Entry]:
        """Evaluate a batch in order against the stored state and append in one MULTI/EXEC.

        Two round trips per batch: read every parcel's standing charges and
        incident, then write entries, charges and the incident map together
        (all or nothing). Later alerts in the batch see earlier ones' effects.
        """

        incidents = [a for a in alerts if a.alert_type == AnomalyType.HUB_INCIDENT]
        parcels = [a for a in alerts if a.alert_type != AnomalyType.HUB_INCIDENT and self._chargeable(a)]
        if not incidents and not parcels:
            return []  # nothing here can charge: spare the round trips
        wbs = sorted({wb for a in incidents for wb in a.affected_waybills} | {a.waybill_id or "" for a in parcels})
        parcel_wbs = sorted({a.waybill_id or "" for a in parcels})
        read = self.r.pipeline(transaction=False)
        for wb in wbs:
            read.hgetall(self.key(f"parcel:{wb}"))
        if parcel_wbs:
            read.hmget(self.key("incident-of"), parcel_wbs)
        got = await read.execute()
        charges: dict[str, dict[str, Charge]] = {}
        for wb, raw in zip(wbs, got[: len(wbs)], strict=True):
            charges[wb] = {c.charge_key: c for c in (_charge_dec.decode(v) for v in raw.values())}
        incident_of: dict[str, str] = {}
        if parcel_wbs:
            for wb, inc in zip(parcel_wbs, got[len(wbs)], strict=True):
                if inc is not None:
                    incident_of[wb] = inc.decode() if isinstance(inc, bytes) else str(inc)
        entries: list[Entry] = []
        touched: dict[str, Charge] = {}
        new_incident_of: dict[Any, Any] = {}
        for alert in alerts:
            if alert.alert_type == AnomalyType.HUB_INCIDENT:
                mine = {k: c for wb in alert.affected_waybills for k, c in charges.get(wb, {}).items()}
                found, updated = evaluate(alert, mine, self.rules)
                if alert.status.value == "firing":
                    incident_of.update(dict.fromkeys(alert.affected_waybills, alert.alert_id))
                    new_incident_of.update(dict.fromkeys(alert.affected_waybills, alert.alert_id))
            elif self._chargeable(alert):
                wb = alert.waybill_id or ""
                found, updated = evaluate(alert, charges.get(wb, {}), self.rules, incident_of.get(wb))
            else:
                continue
            entries += found
            for c in updated:
                charges.setdefault(c.charge_key.split("|", 1)[0], {})[c.charge_key] = c
                touched[c.charge_key] = c
        if not entries and not touched and not new_incident_of:
            return []
        hsets: list[tuple[str, dict[Any, Any]]] = []
        for c in touched.values():
            hsets.append((self.key(f"parcel:{c.charge_key.split('|', 1)[0]}"), {c.charge_key: _enc.encode(c)}))
        if new_incident_of:
            # parcels whose own alerts arrive later (without the incident id) are exempted too
            hsets.append((self.key("incident-of"), new_incident_of))
        appended = await self._write(entries, hsets)
        return [e for e, ok in zip(entries, appended, strict=True) if ok]

    async def _write(self, entries: list[Entry], hsets: list[tuple[str, dict[Any, Any]]]) -> list[bool]:
        """Append ``entries`` and write the charges: one MULTI/EXEC, or on a cluster the appends
        (each an atomic script, a no-op for a key already there) then the charges in one script,
        so a crash in between is repaired by the replay of the same alerts."""

        if not self.cluster:
            tx = self.r.pipeline(transaction=True)
            for e in entries:
                await self._queue_append(tx, e)
            for key, mapping in hsets:
                tx.hset(key, mapping=mapping)
            results = await tx.execute()
            return [bool(x) for x in results[: len(entries)]]
        appended: list[Any] = []
        if entries:
            pipe = self.r.pipeline(transaction=False)
            for e in entries:
                await self._queue_append(pipe, e)
            appended = list(await pipe.execute())
        if hsets:
            rec: Any = CommandRecorder()  # redis-py's typing wants a client; recording needs none
            for key, mapping in hsets:
                rec.hset(key, mapping=mapping)
            pipe = self.r.pipeline(transaction=False)
            queue_slot_batch(pipe, rec.commands)
            await pipe.execute()
        return [bool(x) for x in appended]

    async def reverse_false_alarm(self, alert: Alert, note: str, at_ms: int) -> list[Entry]:
        """Append the reversals of what ``alert`` charged (CS marked it a false alarm).

        Idempotent: the entries' keys name the charge and the mark, and the closed
        charge is skipped next time. Returns the entries actually appended.
        """

        if not alert.waybill_id:
            return []
        wb = alert.waybill_id
        standing = {c.charge_key: c for c in (await self.charges([wb])).values()}
        found, updated = false_alarm_reversals(alert.alert_id, standing, await self.entries(waybill=wb), note, at_ms)
        if not found and not updated:
            return []
        hsets = [(self.key(f"parcel:{wb}"), {c.charge_key: _enc.encode(c) for c in updated})] if updated else []
        appended = await self._write(found, hsets)
        return [e for e, ok in zip(found, appended, strict=True) if ok]

    async def entries(self, since_ms: int | None = None, until_ms: int | None = None, waybill: str | None = None) -> list[Entry]:
        if waybill is not None and since_ms is None and until_ms is None:
            return await self.index.entries("parcel", waybill)  # not the whole ledger
        out: list[Entry] = []
        start = "-"
        while True:
            batch = await self.r.xrange(self.key("ledger"), min=start, max="+", count=1000)
            if not batch:
                break
            for _sid, fields in batch:
                e = _entry_dec.decode(_raw(fields))
                if since_ms is not None and e.at_ms < since_ms:
                    continue
                if until_ms is not None and e.at_ms >= until_ms:
                    continue
                if waybill is not None and e.waybill_id != waybill:
                    continue
                out.append(e)
            last: Any = batch[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        return out

    async def totals(self, since_ms: int | None = None, until_ms: int | None = None) -> Totals:
        t = Totals()
        for e in await self.entries(since_ms, until_ms):
            t.add(e)
        return t

    async def pending(self, batch: int = 500) -> tuple[list[tuple[bytes, bytes]], Any]:
        """Up to ``batch`` (key, value) records after the publication cursor, and the last stream id."""

        cursor: Any = await self.r.get(self.key("published"))
        start = "(" + (cursor.decode() if isinstance(cursor, bytes) else str(cursor)) if cursor else "-"
        got: Any = await self.r.xrange(self.key("ledger"), min=start, max="+", count=batch)
        records = []
        for _sid, fields in got:
            raw = _raw(fields)
            records.append((_entry_dec.decode(raw).waybill_id.encode(), raw))
        return records, (got[-1][0] if got else None)

    async def advance(self, last_id: Any, guard: Guard | None = None) -> None:
        """Move the cursor once the broker has acknowledged everything up to ``last_id``.

        ``guard`` (the publisher's lease) fences it: a paused ex-publisher cannot move the cursor back.
        """

        if guard is None:
            await self.r.set(self.key("published"), last_id)
            return
        if not self.cluster:
            pipe = await guard.begin(self.r)
            pipe.set(self.key("published"), last_id)
            await pipe.execute()
            return
        # the publisher's lease is tagged with the ledger's slot (lease.lease_key): one checked script
        pipe = self.r.pipeline(transaction=False)
        queue_checked_batch(pipe, guard.checks(), [("SET", self.key("published"), last_id)])
        await execute(pipe)


def _raw(fields: Any) -> bytes:
    raw = fields.get(b"entry", fields.get("entry"))
    return raw if isinstance(raw, bytes) else str(raw).encode()
