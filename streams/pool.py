"""The workers' exchange of pooled learning (``logiwatch.detectors.pool``) through Redis.

Every worker process holds one :class:`RedisPool` for the events topic. An
engine publishes its deltas of an epoch and collects the sum of every
partition's deltas of the epoch before; both calls are synchronous (the engine
is), so the pool buffers and the worker calls :meth:`RedisPool.sync` between
batches: it writes what was published (one hash per epoch,
``{prefix}pool:{topic}:{epoch}``, field = partition; idempotent, a restarted
partition writes the same bytes) and reads the epochs an engine is waiting for.
The worker writes before it checkpoints, so a snapshot never records an epoch
as published that Redis does not hold.

An epoch stays in Redis for ``ttl_s`` of wall time. If a partition waits
longer than ``wait_s`` for an epoch (a worker is down, or a partition lags far
behind), the pool gives the sum of what is there, logs it and counts it in
``logiwatch_pool_partial_total``: the partition goes on with less pooled
learning and its alerts may then differ from a backtest's (the only case where
they do).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from logiwatch.detectors.pool import Delta, decode_delta, total_of

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class RedisPool:
    """The engines' ``Pool`` for one events topic, kept in Redis (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        topic: str,
        partitions: int,
        wait_s: float = 300.0,
        ttl_s: int = 14 * 86_400,
        monotonic: Callable[[], float] = time.monotonic,
        on_partial: Callable[[], Any] | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("the pool needs the events topic's partition count (>= 1)")
        self.client = client
        self.prefix = prefix
        self.topic = topic
        self.partitions = partitions
        self.wait_s = wait_s
        self.ttl_s = ttl_s
        self.monotonic = monotonic
        self.on_partial = on_partial
        self._outbox: dict[tuple[int, int], bytes] = {}
        #: epoch -> the sum of all partitions' deltas (complete, or partial after ``wait_s``)
        self._totals: dict[int, Delta] = {}
        #: epoch -> (when an engine first asked for it, the blobs read so far)
        self._wanted: dict[int, tuple[float, dict[int, bytes]]] = {}
        #: epoch -> the decoded deltas its total was made of (a partition takes its own back out)
        self._parts: dict[int, dict[int, Delta]] = {}

    def key(self, epoch: int) -> str:
        return f"{self.prefix}pool:{self.topic}:{epoch}"

    # -- the engines' side (synchronous) ---------------------------------------
    def publish(self, epoch: int, partition: int, blob: bytes) -> None:
        self._outbox[(epoch, partition)] = blob

    def own(self, epoch: int, partition: int) -> Delta:
        got = self._parts.get(epoch, {}).get(partition)
        return got if got is not None else total_of([])

    def _sum(self, epoch: int, blobs: dict[int, bytes]) -> Delta:
        parts = self._parts[epoch] = {p: decode_delta(blobs[p]) for p in sorted(blobs)}
        got = self._totals[epoch] = total_of(list(parts.values()))
        return got

    def collect(self, epoch: int) -> Delta | None:
        got = self._totals.get(epoch)
        if got is not None:
            return got
        if epoch not in self._wanted:
            self._wanted[epoch] = (self.monotonic(), {})
            return None
        since, blobs = self._wanted[epoch]
        if self.monotonic() - since < self.wait_s:
            return None
        log.warning(
            "pool %s epoch %d: %d of %d partitions published after %.0f s; going on without the rest",
            self.topic,
            epoch,
            len(blobs),
            self.partitions,
            self.wait_s,
        )
        if self.on_partial is not None:
            self.on_partial()
        got = self._sum(epoch, blobs)
        del self._wanted[epoch]
        return got

    @property
    def waiting(self) -> bool:
        """Some engine waits for an epoch not complete yet."""

        return bool(self._wanted)

    # -- the worker's side (async) ------------------------------------------------
    async def sync(self) -> bool:
        """Write what was published, read what is wanted; True if an epoch became available.

        A Redis error propagates: the worker calls this through ``SnapshotStore.retry``, which
        retries with backoff as for a checkpoint (the batch waits).
        """

        if self._outbox:
            pipe = self.client.pipeline(transaction=False)
            for (epoch, partition), blob in sorted(self._outbox.items()):
                pipe.hset(self.key(epoch), str(partition), blob)
                pipe.expire(self.key(epoch), self.ttl_s)
            await pipe.execute()
            self._outbox.clear()
        ready: set[int] = set()
        for epoch in sorted(self._wanted):
            raw = await self.client.hgetall(self.key(epoch))
            blobs = {int(k): v if isinstance(v, bytes) else str(v).encode() for k, v in raw.items()}
            since = self._wanted[epoch][0]
            if len(blobs) >= self.partitions:
                self._sum(epoch, blobs)
                del self._wanted[epoch]
                ready.add(epoch)
            else:
                self._wanted[epoch] = (since, blobs)
        self._prune(keep=ready)
        return bool(ready)

    def _prune(self, keep: set[int]) -> None:
        """Forget old totals, never one just read: the engine that waits for it has not taken it yet.

        An engine needs an epoch's total once per partition, mostly within about an epoch of its
        close; a partition restored from an older snapshot asks for older epochs again, which are
        then read from Redis again. Pruning the epoch such a partition had just waited for (it is
        older than the four newest) made it wait for ever: read, pruned, asked again, read, ...
        """

        for old in sorted(self._totals)[:-4]:
            if old not in keep:
                del self._totals[old]
                self._parts.pop(old, None)
