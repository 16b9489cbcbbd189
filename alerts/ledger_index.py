"""Ledger entries by parcel and by the alert (or incident) they cite, so the parcel and
incident pages read their own lines instead of the whole ledger.

Index keys, from :func:`index_key` only, under the ledger's own key function (so a
change of the ledger's key layout, such as Redis Cluster hash tags, carries over):

* ``ix:parcel:<waybill>``: set of the ledger stream ids of the parcel's entries;
* ``ix:ref:<id>``: set of the stream ids of the entries whose evidence names ``<id>``
  (an alert id; a hub incident is an alert, so its id finds what it moved);
* ``ix:version``: the index version once a ledger written before the index was
  indexed (:meth:`LedgerIndex.ensure`, one pass over the stream, idempotent).

The ledger's append script adds the new stream id to the keys of :func:`index_keys` in
the same script call as the append, so an entry is never in the ledger without being
indexed. Sets, not lists: adding twice (a backfill racing an append) changes nothing;
readers sort by stream id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from logiwatch.alerts.liability import Entry

INDEX_VERSION = "1"
#: which index: the parcel's entries, or the entries citing an alert or incident id
INDEXES = ("parcel", "ref")
_entry_dec = msgspec.json.Decoder(Entry)


def index_key(key: Callable[[str], str], index: str, value: str) -> str:
    """The index set's Redis key; ``key`` is the ledger's key function."""

    if index not in INDEXES:
        raise ValueError(f"no ledger index {index!r}")
    return key(f"ix:{index}:{value}")


def index_keys(key: Callable[[str], str], entry: Entry) -> list[str]:
    """Every index set an entry belongs to."""

    return [index_key(key, "parcel", entry.waybill_id), *(index_key(key, "ref", ref) for ref in dict.fromkeys(entry.evidence))]


def _stream_order(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


class LedgerIndex:
    """Reads entries through the index; builds it once for a ledger written before it."""

    def __init__(self, client: aioredis.Redis, key: Callable[[str], str]) -> None:
        self.r = client
        self.key = key
        self._ready = False

    async def ensure(self) -> int:
        """Index a ledger written before the index existed (once; returns entries indexed)."""

        if self._ready:
            return 0
        got = await self.r.get(self.key("ix:version"))
        if got is not None and _s(got) == INDEX_VERSION:
            self._ready = True
            return 0
        n, start = 0, "-"
        while True:
            batch: Any = await self.r.xrange(self.key("ledger"), min=start, max="+", count=1000)
            if not batch:
                break
            pipe = self.r.pipeline(transaction=False)
            for sid, fields in batch:
                raw = fields.get(b"entry", fields.get("entry"))
                for k in index_keys(self.key, _entry_dec.decode(raw)):
                    pipe.sadd(k, sid)
                n += 1
            await pipe.execute()
            start = "(" + _s(batch[-1][0])
        await self.r.set(self.key("ix:version"), INDEX_VERSION)
        self._ready = True
        return n

    async def entries(self, index: str, value: str) -> list[Entry]:
        """The entries in one index set, in ledger (stream) order."""

        await self.ensure()
        sids = sorted((_s(m) for m in await self.r.smembers(index_key(self.key, index, value))), key=_stream_order)
        if not sids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for sid in sids:
            pipe.xrange(self.key("ledger"), min=sid, max=sid, count=1)
        out = []
        for got in await pipe.execute():
            for _sid, fields in got:
                out.append(_entry_dec.decode(fields.get(b"entry", fields.get("entry"))))
        return out


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
