"""Atomic dedup of resent histories: per-scan claims in Redis, so each scan is produced once.

A feed resends a parcel's whole history on every push, and two pushes of the
same history may be in flight at once (the vendor's retry overtaking a slow
answer, two receivers behind a load balancer). A check-then-mark dedup lets
both see a checkpoint as new and both produce it. Here a push *claims* each
scan's event id first, in one Lua script per waybill (atomic in Redis): the
hash ``<prefix>ingest:scans:<feed>:<waybill>`` maps an event id to ``d``
(produced and acknowledged by Kafka) or ``p:<token>:<expiry_ms>`` (claimed by
the push holding ``token``, which is producing it now). A claim returns, per
scan, one of :data:`CLAIMED` (this push produces it), :data:`DONE` (already
in Kafka: drop it) or :data:`PENDING` (another push is producing it: wait
for it to be done, or for its claim to be released or to expire, then claim
again). After the acknowledgements the claimant marks its scans done; when
the broker refused them it releases its claims so a retry can take them.
A claim left by a receiver that died expires after ``pending_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from logiwatch.detectors.model import Scan

#: what :meth:`ScanClaims.claim` says of each scan
CLAIMED, DONE, PENDING = 0, 1, 2

# KEYS[1] the waybill's hash; ARGV: token, now_ms, pending_ms, ttl_s, event ids...
_CLAIM = """
local now = tonumber(ARGV[2])
local mine = 'p:' .. ARGV[1] .. ':' .. (now + tonumber(ARGV[3]))
local out = {}
for i = 5, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  local r = 0
  if v == 'd' then
    r = 1
  elseif v then
    local tok, exp = string.match(v, '^p:([^:]+):(%d+)$')
    if tok ~= nil and tok ~= ARGV[1] and tonumber(exp) > now then r = 2 end
  end
  if r == 0 then redis.call('HSET', KEYS[1], ARGV[i], mine) end
  out[#out + 1] = r
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return out
"""

# KEYS[1] the waybill's hash; ARGV: token, event ids... (only this token's claims go)
_RELEASE = """
local prefix = 'p:' .. ARGV[1] .. ':'
local n = 0
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and string.sub(v, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


def by_waybill(scans: Sequence[Scan]) -> dict[str, list[Scan]]:
    out: dict[str, list[Scan]] = {}
    for s in scans:
        out.setdefault(s.waybill_id, []).append(s)
    return out


class ScanClaims:
    """Claims on scans' event ids, per feed and waybill (``redis.asyncio`` client)."""

    def __init__(self, client: Any, prefix: str, ttl_s: int, pending_ms: int = 60_000) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.pending_ms = pending_ms
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def key(self, feed: str, waybill: str) -> str:
        return f"{self.prefix}ingest:scans:{feed}:{waybill}"

    async def claim(self, feed: str, scans: Sequence[Scan], token: str, now_ms: int) -> list[tuple[Scan, int]]:
        """Each scan with :data:`CLAIMED`, :data:`DONE` or :data:`PENDING` (atomic per waybill)."""

        out: list[tuple[Scan, int]] = []
        for wb, group in by_waybill(scans).items():
            args = [token, now_ms, self.pending_ms, self.ttl_s, *(s.event_id for s in group)]
            flags = [int(f) for f in await self._claim(keys=[self.key(feed, wb)], args=args)]
            if not set(flags) <= {CLAIMED, DONE, PENDING}:
                raise RuntimeError(f"the claim script answered {flags!r}")
            out.extend(zip(group, flags, strict=True))
        return out

    async def done(self, feed: str, scans: Sequence[Scan]) -> None:
        """Mark scans acknowledged by Kafka (later pushes drop them)."""

        async with self.client.pipeline(transaction=False) as pipe:
            for wb, group in by_waybill(scans).items():
                pipe.hset(self.key(feed, wb), mapping={s.event_id: "d" for s in group})
                pipe.expire(self.key(feed, wb), self.ttl_s)
            await pipe.execute()

    async def release(self, feed: str, scans: Sequence[Scan], token: str) -> None:
        """Give back this push's claims (the broker refused the scans: a retry produces them)."""

        for wb, group in by_waybill(scans).items():
            await self._release(keys=[self.key(feed, wb)], args=[token, *(s.event_id for s in group)])
