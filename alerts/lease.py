"""Leases with fencing tokens: which alert-service instance owns a piece of shared work.

Several ``logiwatch alerts serve`` instances share one Redis prefix. Alert
partitions are split by the Kafka consumer group; the work that is not tied
to a partition (each receiver's delivery and retry queue, the escalation
timers, the liability publisher) is owned through a lease per piece:

* ``<P>alerts:lease:<tag><name>`` holds ``"<token>|<owner>"`` with a TTL
  (``alerts.lease_ttl_s``); ``...:fence`` beside it (same hash tag, so each
  lease's script stays in one Redis Cluster slot) is the counter that gives
  every acquisition a new, larger token. The tag is the slot of what the lease
  guards (:func:`lease_key`), so on a cluster each fenced write is one script;
* every Redis write made under a lease goes through :meth:`Lease.begin`:
  WATCH the fence counter, check that the lease still holds this holder's
  token and that the counter has not moved past it, then MULTI/EXEC. If
  another instance took the lease in between (which INCRs the counter), EXEC
  refuses (``WatchError``), so a paused or partitioned ex-owner can never
  write after a takeover, whatever its own clock says. On a Redis Cluster the
  same two values are checked inside the write's own one-slot script instead
  (:meth:`Lease.checks`, :mod:`logiwatch.alerts.fencing`). The counter, not the
  lease key, is watched because renewals (PEXPIRE) touch the lease key and
  would abort the holder's own transactions;
* effects outside Redis (a webhook POST, a Kafka send) cannot be fenced:
  they are checked against the holder's local deadline (:meth:`Lease.valid`,
  the monotonic clock keeps running while a process is stopped) and are
  idempotent by key (webhook-id, ledger ``entry_id``) for what slips through.

A released lease is left as ``"0|released"`` so the next holder counts a
handover, not a takeover. :func:`fair_share` and the members heartbeat
spread leases over the live instances (see :class:`~logiwatch.alerts.ha.LeaseKeeper`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import WatchError

from logiwatch.alerts.ledger import ledger_tag
from logiwatch.alerts.store import AlertKeys
from logiwatch.errors import LogiwatchError

# KEYS: lease, fence counter. ARGV: owner, ttl ms.
# Returns {token, how}: how = 1 fresh, 2 takeover (expired holder), 3 handover (released),
# 0 already ours (renewed); {0, pttl} when somebody else holds it.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local tok, own = string.match(cur, '^(%d+)|(.*)$')
  if own == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {tonumber(tok), 0}
  end
  if tok ~= '0' then return {0, redis.call('PTTL', KEYS[1])} end
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], tok .. '|' .. ARGV[1], 'PX', ARGV[2])
if cur then return {tok, 3} end
if tok == 1 then return {tok, 1} end
return {tok, 2}
"""

# KEYS: lease. ARGV: "<token>|<owner>", ttl ms. 1 when renewed, 0 when lost.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: "<token>|<owner>", ttl ms.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], '0|released', 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: members zset. ARGV: owner, ttl ms. Heartbeat on the server's clock; returns live members.
_HEARTBEAT = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

#: how an acquisition came about (the ``how`` of :data:`_ACQUIRE`)
FRESH, TAKEOVER, HANDOVER = 1, 2, 3

#: errors that mean "a write under a lease was refused: this instance no longer holds it"
FENCED: tuple[type[Exception], ...]


class LeaseLost(LogiwatchError):
    """A write under a lease was refused: another instance holds it now."""


FENCED = (LeaseLost, WatchError)


@dataclass
class Lease:
    """One held lease; pass it as ``guard`` to the store's and ledger's writes."""

    name: str
    key: str
    token: int
    owner: str
    ttl_s: float
    #: monotonic time until which the lease surely holds (renewed before the TTL, less a margin)
    deadline: float = 0.0
    #: set once a renewal or a fenced write found another holder
    lost: bool = field(default=False)

    @property
    def value(self) -> str:
        return f"{self.token}|{self.owner}"

    @property
    def fence_key(self) -> str:
        return self.key + ":fence"

    def valid(self) -> bool:
        """Whether an effect outside Redis may still be started under this lease."""

        return not self.lost and time.monotonic() < self.deadline

    def extend(self, since: float) -> None:
        # a tenth of the TTL is kept as margin against the time a renewal takes
        self.deadline = since + self.ttl_s * 0.9

    def checks(self) -> list[tuple[str, Any]]:
        """On a cluster: what must still hold for a write under this lease (see :mod:`logiwatch.alerts.fencing`)."""

        return [(self.key, self.value), (self.fence_key, str(self.token))]

    async def begin(self, client: aioredis.Redis) -> Any:
        """A MULTI pipeline that EXEC refuses (``WatchError``) once another instance holds the lease.

        Raises :class:`LeaseLost` when the lease is not ours already.
        """

        pipe = client.pipeline(transaction=True)
        await pipe.watch(self.fence_key)
        current, fence = await pipe.mget(self.key, self.fence_key)
        if _s(current) != self.value or _s(fence) != str(self.token):
            await pipe.reset()
            self.lost = True
            raise LeaseLost(f"lease {self.name} is no longer held by {self.owner} (token {self.token})")
        pipe.multi()
        return pipe


def lease_key(key_prefix: str, name: str) -> str:
    """The lease's key; its hash tag keeps it and its fence counter in the Cluster slot of what
    it guards: ``deliver:<receiver>`` the receiver's queue and log, ``escalate`` the index
    (the escalation timers), ``liability`` the ledger (its publication cursor); others their own.

    >>> lease_key("lw:", "deliver:cs")
    'lw:alerts:lease:{lw:r:cs}deliver:cs'
    >>> lease_key("lw:", "escalate"), lease_key("lw:", "alertmanager")
    ('lw:alerts:lease:{lw:alerts}escalate', 'lw:alerts:lease:{lw:lease:alertmanager}alertmanager')
    """

    if "{" in name or "}" in name:
        raise ValueError(f"lease name {name!r} must not contain braces")
    kind, _, arg = name.partition(":")
    if kind == "deliver" and arg:
        tag = AlertKeys(key_prefix).tag("queue", arg)
    elif name == "escalate":
        tag = AlertKeys(key_prefix).tag("escalation")
    elif name == "liability":
        tag = ledger_tag(key_prefix)
    else:
        tag = f"{{{key_prefix}lease:{name}}}"
    return f"{key_prefix}alerts:lease:{tag}{name}"


def fair_share(leases: int, members: int) -> int:
    """How many leases one of ``members`` live instances should hold at most.

    >>> fair_share(3, 2), fair_share(3, 1), fair_share(2, 5), fair_share(3, 0)
    (2, 3, 1, 3)
    """

    return math.ceil(leases / max(1, members))


class Leases:
    """Acquire, renew and release leases for one instance (``owner``)."""

    def __init__(self, client: Any, key_prefix: str, owner: str, ttl_s: float) -> None:
        if "|" in owner:
            raise ValueError(f"instance id {owner!r} must not contain '|'")
        self.r = client
        self.prefix = key_prefix
        self.owner = owner
        self.ttl_s = ttl_s
        self.cluster = isinstance(client, RedisCluster)
        self._scripts = {s: client.register_script(s) for s in (_ACQUIRE, _RENEW, _RELEASE, _HEARTBEAT)}

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        # a cluster gets EVAL: its nodes may not hold a registered script's SHA
        if self.cluster:
            return await self.r.eval(script, len(keys), *keys, *args)
        return await self._scripts[script](keys=keys, args=args)

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    def key(self, name: str) -> str:
        return lease_key(self.prefix, name)

    def members_key(self) -> str:
        return f"{self.prefix}alerts:lease:{{{self.prefix}lease}}:members"

    async def acquire(self, name: str) -> tuple[Lease, int] | None:
        """The lease and how it came (:data:`FRESH`, :data:`TAKEOVER`, :data:`HANDOVER`, 0 renewed), or None."""

        key = self.key(name)
        t0 = time.monotonic()
        token, how = await self._run(_ACQUIRE, [key, key + ":fence"], [self.owner, self.ttl_ms])  # see Lease.fence_key
        if not token:
            return None
        lease = Lease(name, key, int(token), self.owner, self.ttl_s)
        lease.extend(t0)
        return lease, int(how)

    async def renew(self, lease: Lease) -> bool:
        t0 = time.monotonic()
        ok = bool(await self._run(_RENEW, [lease.key], [lease.value, self.ttl_ms]))
        if ok:
            lease.extend(t0)
        else:
            lease.lost = True
        return ok

    async def release(self, lease: Lease) -> None:
        lease.lost = True
        await self._run(_RELEASE, [lease.key], [lease.value, self.ttl_ms])

    async def heartbeat(self) -> list[str]:
        """Mark this instance alive; the instances seen alive within one TTL, sorted."""

        got = await self._run(_HEARTBEAT, [self.members_key()], [self.owner, self.ttl_ms])
        return sorted(_s(m) for m in got)

    async def leave(self) -> None:
        await self.r.zrem(self.members_key(), self.owner)

    async def holders(self, names: list[str]) -> dict[str, tuple[int, str]]:
        """name -> (token, owner) of the leases currently held (for status and tests)."""

        keys = [self.key(n) for n in names]
        raws = (await (self.r.mget_nonatomic(keys) if self.cluster else self.r.mget(keys))) if names else []
        out: dict[str, tuple[int, str]] = {}
        for name, raw in zip(names, raws, strict=True):
            tok, _, own = _s(raw).partition("|") if raw else ("0", "", "")
            if tok not in ("", "0"):
                out[name] = (int(tok), own)
        return out


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else ("" if x is None else str(x))
