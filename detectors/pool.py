"""Learning shared across partitions: baseline deltas pooled at epochs of the tick clock.

Each partition's engine learns from its own parcels. With pooling on
(``EngineConfig.pool_epoch_ms`` > 0) the models become one model of the whole
topic, up to a fixed delay, and stay deterministic:

- The tick clock cuts time into epochs of ``pool_epoch_ms``. Ticks reach
  every partition (the replay producer, the backtest and the live ticker all
  broadcast them), so every partition closes the same epochs, at the same
  place in its own record order.
- When a partition's first tick of a new epoch arrives, it *publishes* what
  it learned since its last publication (histogram and censoring counts per
  baseline key, feed-profile counts, the count tables of ``Env.add_counts``:
  all of them sums, so they merge by addition), then *applies* what every
  other partition published when it closed the epoch before (the sum of all
  partitions' deltas minus its own, which it already holds) (one epoch of
  delay, so a partition waits for no one unless another lags a whole epoch
  behind it).
- What a partition applies at its k-th epoch close is therefore fixed by the
  records of every partition up to their (k-1)-th close: the same in a live
  worker, a replay and the backtest, whatever the timing of the deliveries.

Duration baselines, feed profiles and count tables (e.g. predicted-late's outcome
tables) are pooled; the hub tracker, centroids and lane regions stay per partition.
A blob without count tables (written before they were pooled) reads as none.

``MemoryPool`` is the exchange of one process (the backtest). ``PoolMissing``
says that a partition needed an epoch another partition has not closed yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from logiwatch.detectors.codec import decode_event, decode_tick, encode_event, encode_tick
from logiwatch.detectors.model import ScanEvent, Tick
from logiwatch.detectors.state import add_counts

if TYPE_CHECKING:
    from logiwatch.detectors.state import Env

#: blob format version (bumped when the delta layout changes)
POOL_VERSION = 1

_encoder = msgspec.msgpack.Encoder()


class PoolMissing(RuntimeError):
    """An epoch's deltas are not all in yet (a partition lags a whole epoch behind)."""


class Pool(Protocol):
    """Where partitions exchange their per-epoch deltas."""

    def publish(self, epoch: int, partition: int, blob: bytes) -> None:
        """Store ``blob`` as ``partition``'s deltas of ``epoch`` (idempotent: same key, same bytes)."""
        ...

    def collect(self, epoch: int) -> Delta | None:
        """The sum of every partition's deltas of ``epoch`` (``total``), or None while any is missing."""
        ...

    def own(self, epoch: int, partition: int) -> Delta:
        """``partition``'s own deltas of ``epoch`` as published (empty if they are not in the total)."""
        ...


class MemoryPool:
    """A pool inside one process: the backtest's partitions share it.

    >>> empty = encode_delta({"version": POOL_VERSION, "baselines": {}, "feeds": {"ZTO": [1, 0, 0, 1]}})
    >>> pool = MemoryPool(2)
    >>> pool.publish(7, 0, empty)
    >>> pool.collect(7) is None
    True
    >>> pool.publish(7, 1, empty)
    >>> pool.collect(7)["feeds"]
    {'ZTO': [2, 0, 0, 2]}
    """

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("a pool needs at least one partition")
        self.partitions = partitions
        self.epochs: dict[int, dict[int, bytes]] = {}
        self._totals: dict[int, Delta] = {}
        self._decoded: dict[int, dict[int, Delta]] = {}

    def publish(self, epoch: int, partition: int, blob: bytes) -> None:
        self.epochs.setdefault(epoch, {})[partition] = blob
        self._totals.pop(epoch, None)

    def own(self, epoch: int, partition: int) -> Delta:
        got = self._decoded.get(epoch, {}).get(partition)
        return got if got is not None else total_of([])

    def collect(self, epoch: int) -> Delta | None:
        got = self.epochs.get(epoch, {})
        if len(got) < self.partitions:
            return None
        t = self._totals.get(epoch)
        if t is None:
            decoded = self._decoded[epoch] = {p: decode_delta(got[p]) for p in sorted(got)}
            t = self._totals[epoch] = total_of(list(decoded.values()))
            # an epoch every partition has applied is not needed again (each applies it once)
            for old in [e for e in self.epochs if e < epoch - 1]:
                del self.epochs[old]
                self._totals.pop(old, None)
                self._decoded.pop(old, None)
        return t


Delta = dict[str, object]


class PoolMember:
    """One partition engine's side of the pool: its epochs, its deltas in flight, the records it holds."""

    def __init__(self, epoch_ms: int) -> None:
        self.epoch_ms = epoch_ms
        self.pool: Pool | None = None
        self.partition = 0
        #: the epoch open now and the last one closed (whose total the next close applies)
        self.epoch: int | None = None
        self.closed: int | None = None
        #: its deltas of the epoch it is closing are published (the close waits for the others)
        self.published = False
        #: records from the tick that waits for the epoch before (the engine goes on from them)
        self.held: list[ScanEvent | Tick] = []

    def attach(self, pool: Pool, partition: int, env: Env) -> None:
        if self.epoch_ms <= 0:
            raise ValueError("pooling needs EngineConfig.pool_epoch_ms > 0")
        self.pool = pool
        self.partition = partition
        env.pooled = True
        for b in env.baselines().values():
            b.pooled = True

    def tick(self, env: Env, t: int) -> bool:
        """At a tick of a new epoch: publish this partition's deltas, apply the others' of the epoch before.

        False (nothing applied, the tick not taken) while another partition has not published
        that epoch yet: the engine holds the records from this tick on and tries again.
        """

        pool = self.pool
        assert pool is not None
        epoch = t // self.epoch_ms
        if self.epoch is None:
            self.epoch = epoch
            return True
        if epoch <= self.epoch:
            return True
        if not self.published:
            pool.publish(self.epoch, self.partition, encode_delta(take_delta(env)))
            self.published = True
        if self.closed is not None:
            everyone = pool.collect(self.closed)
            if everyone is None:
                return False
            apply_delta(env, everyone)
            apply_delta(env, pool.own(self.closed, self.partition), -1)  # its own were learned already
        self.published = False
        self.closed = self.epoch
        self.epoch = epoch
        return True

    def export(self, env: Env) -> dict[str, Any]:
        """For the engine's models blob: epochs, and (when pooled) what a restored partition needs.

        Small on purpose, since the core blob is written at every checkpoint: the baselines'
        pending deltas travel with their keys' own entries (``DurationBaseline.take_changed``),
        and this partition's published deltas are read back from the pool.
        """

        pending = None
        if self.pool is not None:
            pending = {
                "feeds": env.feeds_delta,
                "counts": env.counts_delta,
                "published": self.published,
                "held": [[1, encode_tick(r)] if isinstance(r, Tick) else [0, encode_event(r)] for r in self.held],
            }
        return {"pool_epochs": [self.epoch, self.closed], "pool_delta": pending}

    def load(self, env: Env, blob: Mapping[str, Any]) -> None:
        self.epoch, self.closed = blob.get("pool_epochs") or (None, None)
        pending = blob.get("pool_delta")
        if pending:
            env.feeds_delta = pending["feeds"]
            env.counts_delta = pending.get("counts") or {}
            self.published = bool(pending["published"])
            self.held = [decode_event(raw) if kind == 0 else decode_tick(raw) for kind, raw in pending["held"]]


def take_delta(env: Env) -> Delta:
    """What ``env`` learned since the last call (and start counting again)."""

    baselines = {}
    for name, b in env.baselines().items():
        if b.delta:
            baselines[name] = b.delta
            b.changed.update(b.delta)  # their checkpointed entries must drop the taken delta
            b.delta = {}
    delta: Delta = {
        "version": POOL_VERSION,
        "baselines": baselines,
        "feeds": env.feeds_delta,
        "counts": env.counts_delta,
    }
    env.feeds_delta = {}
    env.counts_delta = {}
    return delta


def encode_delta(delta: Delta) -> bytes:
    return _encoder.encode(delta)


class _Blob(msgspec.Struct):
    """The wire form of one partition's deltas (typed: decoded fast, bin numbers as ints)."""

    version: int
    baselines: dict[str, dict[str, tuple[dict[int, int], dict[int, int]]]]
    feeds: dict[str, list[int]]
    #: table name -> key -> counts (``Env.add_counts``); absent from blobs written before
    counts: dict[str, dict[str, list[int]]] = {}


_blob_decoder = msgspec.msgpack.Decoder(_Blob)


def decode_delta(blob: bytes) -> Delta:
    """One partition's published deltas (raises ``ValueError`` on another version)."""

    try:
        data = _blob_decoder.decode(blob)
    except msgspec.DecodeError as exc:
        raise ValueError(f"pooled deltas are not readable: {exc}") from None
    if data.version != POOL_VERSION:
        raise ValueError(f"pooled deltas have an unknown version {data.version}")
    return {"version": POOL_VERSION, "baselines": data.baselines, "feeds": data.feeds, "counts": data.counts}


def total(blobs: Mapping[int, bytes]) -> Delta:
    """The sum of every partition's deltas of one epoch (decoded once, applied by each partition)."""

    return total_of([decode_delta(blobs[p]) for p in sorted(blobs)])


def total_of(deltas: Sequence[Delta]) -> Delta:
    """The sum of decoded deltas (the inputs are not changed)."""

    baselines: dict[str, dict[str, list[dict[int, int]]]] = {}
    feeds: dict[str, list[int]] = {}
    count_tables: dict[str, dict[str, list[int]]] = {}
    for data in deltas:
        by_name = data["baselines"]
        assert isinstance(by_name, dict)
        for name, entries in by_name.items():
            into = baselines.setdefault(name, {})
            for key, (h_add, c_add) in entries.items():
                cur = into.get(key)
                if cur is None:
                    into[key] = [dict(h_add), dict(c_add)]
                    continue
                for dst, add in ((cur[0], h_add), (cur[1], c_add)):
                    for i, n in add.items():
                        dst[i] = dst.get(i, 0) + n
        feed_counts = data["feeds"]
        assert isinstance(feed_counts, dict)
        for carrier, counts in feed_counts.items():
            profile = feeds.setdefault(carrier, [0, 0, 0, 0])
            for i, n in enumerate(counts):
                profile[i] += n
        tables = data.get("counts") or {}
        assert isinstance(tables, dict)
        for name, entries in tables.items():
            into_table = count_tables.setdefault(name, {})
            for key, adds in entries.items():
                add_counts(into_table, key, adds)
    return {"version": POOL_VERSION, "baselines": baselines, "feeds": feeds, "counts": count_tables}


def apply_delta(env: Env, delta: Delta, sign: int = 1) -> None:
    """Add (``sign`` -1: take away) deltas to ``env``'s models, not to its own deltas."""

    baselines = env.baselines()
    entries_by_name = delta["baselines"]
    assert isinstance(entries_by_name, dict)
    for name, entries in entries_by_name.items():
        b = baselines.get(name)
        if b is not None:
            b.merge(entries, sign)
    feeds = delta["feeds"]
    assert isinstance(feeds, dict)
    for carrier, counts in feeds.items():
        profile = env.feeds.setdefault(carrier, [0, 0, 0, 0])
        for i, n in enumerate(counts):
            profile[i] += sign * n
    tables = delta.get("counts") or {}
    assert isinstance(tables, dict)
    for name, entries in tables.items():
        table = env.tables.get(name)
        if table is not None:  # a table no registered detector declares is not kept
            for key, adds in entries.items():
                add_counts(table, key, adds, sign)
