"""Per-partition state snapshots in Redis, written before offsets are committed.

Each events partition owns four keys under the configured prefix, all
carrying the partition's hash tag ``{topic:partition}`` (so on Redis Cluster
they live in one slot and share one transaction; :func:`partition_keys` is
the one place that spells them):
``{prefix}parcels:{topic:partition}`` (hash: waybill -> the engine's
serialised parcel state), ``{prefix}models:{topic:partition}`` (the
engine's clock, hub tracker and other small models),
``{prefix}baselines:{topic:partition}`` (hash: one field per learned
duration-baseline key; a checkpoint writes only the keys that changed) and
``{prefix}offset:{topic:partition}`` (the next offset the snapshot has *not*
applied). A checkpoint writes all four in ONE ``MULTI/EXEC`` pipeline, so a reader never sees parcels from one batch
with the offset of another, fenced so that a snapshot never moves backwards. Redis trouble is retried with capped
exponential backoff for as long as it lasts: the caller is the batch
handler's snapshot write, which the handler waits for once it has been in
flight for a checkpoint interval, so retrying *is* pausing consumption, and
nothing is lost or skipped. Writes are idempotent (same values, same keys), so a retry after an
ambiguous failure is safe.

With ``worker.checkpoint_compression`` values are stored through :mod:`logiwatch.streams.codec`
(deflate with a preset dictionary, behind a marker byte msgpack never uses); loading reads both
forms, so a checkpoint written either way restores, and :meth:`SnapshotStore.load` hands
the engine back exactly the bytes it gave. The bytes metric counts what is
stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, WatchError

from logiwatch.redisconn import check_prefix, slot_tag
from logiwatch.streams import codec
from logiwatch.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

# The checkpoint as one script, for Redis Cluster (redis-py's asyncio cluster
# transactions run every queued command through a thread of their own): the
# same fence (an offset never moves back) and the same writes, atomically.
# ARGV: offset, has-models flag, models, then three counted lists (deleted
# waybills; parcel field/value pairs; baseline field/value pairs).
# KEYS[1..4]: the untagged (pre-cluster) keys, KEYS[5..8] the tagged ones. Renames
# the old checkpoint only if it has an offset and the new layout has none yet.
_ADOPT_LEGACY = """
if redis.call('EXISTS', KEYS[4]) == 0 or redis.call('EXISTS', KEYS[8]) == 1 then return 0 end
local n = 0
for i = 1, 4 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[i + 4]); n = n + 1 end
end
return n
"""

_CHECKPOINT = """
local cur = redis.call('GET', KEYS[4])
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
local i = 4
local cmds = {{'HDEL', KEYS[1]}, {'HSET', KEYS[1]}, {'HSET', KEYS[3]}}
for _, cmd in ipairs(cmds) do
  local n = tonumber(ARGV[i])
  for j = 1, n, 1000 do
    redis.call(cmd[1], cmd[2], unpack(ARGV, i + j, i + math.min(j + 999, n)))
  end
  i = i + n + 1
end
if ARGV[2] == '1' then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('SET', KEYS[4], ARGV[1])
return 1
"""


def partition_keys(prefix: str, topic: str, partition: int) -> tuple[str, str, str, str]:
    """The parcels, models, baselines and offset keys of one events partition (one slot).

    >>> partition_keys("lw:", "ev", 3)[0]
    'lw:parcels:{ev:3}'
    """

    tag = slot_tag(topic, partition)
    return (f"{prefix}parcels:{tag}", f"{prefix}models:{tag}", f"{prefix}baselines:{tag}", f"{prefix}offset:{tag}")


@dataclass(frozen=True)
class Snapshot:
    """What Redis holds for one partition; ``offset`` is None if never written."""

    parcels: dict[str, bytes] = field(default_factory=dict)
    models: bytes | None = None
    offset: int | None = None
    #: baseline fields ("<baseline>:<key>" -> msgpack entry), as ``Engine.restore`` takes them
    baselines: dict[str, bytes] = field(default_factory=dict)


class SnapshotStore:
    """Load and write partition snapshots; every call retries until it succeeds.

    ``should_stop`` ends the retrying (raising the last error) when the worker
    shuts down, so a dead Redis cannot hold shutdown forever.
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        prefix: str,
        metrics: WorkerMetrics | None = None,
        *,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        should_stop: Callable[[], bool] = lambda: False,
        compress: bool = False,
    ) -> None:
        #: deflate the values a checkpoint writes (``worker.checkpoint_compression``); loading reads
        #: either form, so the setting can change between runs
        self.compress = compress
        self.client = client
        self.prefix = check_prefix(prefix)
        self.metrics = metrics
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.should_stop = should_stop

    def keys(self, topic: str, partition: int) -> tuple[str, str, str, str]:
        """The partition's parcels, models, baselines and offset keys."""

        return partition_keys(self.prefix, topic, partition)

    async def retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` retried like the store's own calls (the pooled-learning exchange uses it)."""

        return await self._retry(what, call)

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self.backoff_initial_s
        while True:
            try:
                return await call()
            except (RedisError, OSError) as exc:
                if self.metrics is not None:
                    self.metrics.redis_errors.inc()
                if self.should_stop():
                    raise
                log.warning("redis %s failed (%s); retrying in %.1fs, consumption paused", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)

    async def load(self, topic: str, partition: int) -> Snapshot:
        parcels_key, models_key, baselines_key, offset_key = self.keys(topic, partition)

        def text_keys(raw: dict[Any, bytes], key: str) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for k, v in raw.items():
                name = k.decode() if isinstance(k, bytes) else str(k)
                out[name] = codec.decode(v, f"{key} field {name!r}")
            return out

        async def _load() -> Snapshot:
            if not isinstance(self.client, RedisCluster):
                await self._adopt_legacy(topic, partition)
            # One MULTI/EXEC so the four keys come from the same checkpoint.
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(parcels_key)
                pipe.get(models_key)
                pipe.hgetall(baselines_key)
                pipe.get(offset_key)
                raw_parcels, models, raw_baselines, offset = await pipe.execute()
            return Snapshot(
                parcels=text_keys(raw_parcels, parcels_key),
                models=None if models is None else codec.decode(models, models_key),
                offset=None if offset is None else int(offset),
                baselines=text_keys(raw_baselines, baselines_key),
            )

        return await self._retry("load", _load)

    async def _adopt_legacy(self, topic: str, partition: int) -> None:
        """Rename a checkpoint written before the keys carried hash tags (one Redis only), once."""

        legacy = [k.replace("{", "").replace("}", "") for k in self.keys(topic, partition)]
        moved = await self.client.eval(_ADOPT_LEGACY, 8, *legacy, *self.keys(topic, partition))
        if moved:
            log.info("%s[%d]: adopted the checkpoint from the untagged key layout (%d keys renamed)", topic, partition, moved)

    async def save(
        self,
        topic: str,
        partition: int,
        *,
        upserts: Mapping[str, bytes],
        deletes: Sequence[str],
        models: bytes | None,
        offset: int,
        baselines: Mapping[str, bytes] | None = None,
    ) -> bool:
        """Write one checkpoint atomically; False if a newer one is already there.

        Fencing: snapshot offsets only grow. A worker that lost its partition
        while stuck (say, on a Redis outage) and writes late would otherwise
        overwrite the new owner's newer parcel states; ``WATCH`` on the offset
        key plus the check below makes that write a no-op instead.
        """

        parcels_key, models_key, baselines_key, offset_key = self.keys(topic, partition)
        started = time.perf_counter()
        if self.compress:
            # Compressed off the event loop (zlib lets go of the GIL): the handler goes on meanwhile.
            upserts, models, baselines = await asyncio.to_thread(_encode_values, upserts, models, baselines)

        async def _save_script() -> bool:
            argv: list[Any] = [offset, 0 if models is None else 1, models or b"", len(deletes), *deletes]
            argv += [2 * len(upserts), *(x for kv in upserts.items() for x in kv)]
            base = baselines or {}
            argv += [2 * len(base), *(x for kv in base.items() for x in kv)]
            keys = [parcels_key, models_key, baselines_key, offset_key]
            return bool(await self.client.eval(_CHECKPOINT, len(keys), *keys, *argv))

        async def _save() -> bool:
            if isinstance(self.client, RedisCluster):
                return await _save_script()
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(offset_key)
                        current = await pipe.get(offset_key)
                        if current is not None and int(current) > offset:
                            await pipe.unwatch()
                            return False
                        pipe.multi()
                        if deletes:
                            pipe.hdel(parcels_key, *deletes)
                        if upserts:
                            pipe.hset(parcels_key, mapping=dict[Any, Any](upserts))
                        if models is not None:
                            pipe.set(models_key, models)
                        if baselines:
                            pipe.hset(baselines_key, mapping=dict[Any, Any](baselines))
                        pipe.set(offset_key, offset)
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue  # someone wrote meanwhile: re-check the fence

        written = await self._retry("checkpoint", _save)
        if self.metrics is not None:
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
            if written:
                size = self.metrics.checkpoint_bytes
                size.labels("parcels").inc(sum(len(v) for v in upserts.values()))
                size.labels("models").inc(len(models or b""))
                size.labels("baselines").inc(sum(len(v) for v in (baselines or {}).values()))
        return written

    @staticmethod
    def stored_value(stored: bytes, what: str) -> bytes:
        """The engine's bytes of one stored value, compressed or not (``StateError`` if corrupt)."""

        return codec.decode(stored, what)

    async def delete(self, topic: str, partition: int) -> None:
        await self._retry("delete", lambda: self.client.delete(*self.keys(topic, partition)))


def _encode_values(
    upserts: Mapping[str, bytes], models: bytes | None, baselines: Mapping[str, bytes] | None
) -> tuple[dict[str, bytes], bytes | None, dict[str, bytes]]:
    """The values of one checkpoint as stored (:mod:`logiwatch.streams.codec`)."""

    parcels = codec.Compressor(codec.PARCELS).encode
    fields = codec.Compressor(codec.BASELINES).encode
    return (
        {k: parcels(v) for k, v in upserts.items()},
        None if models is None else codec.encode(models),
        {k: fields(v) for k, v in (baselines or {}).items()},
    )
