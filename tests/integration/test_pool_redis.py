"""Pooled learning through Redis (streams/pool.py) gives the backtest's alerts whatever the batch order.

The worker test (test_worker_equivalence, "pooled") runs the whole Kafka path;
these drive four engines in process with a random interleaving of batch sizes
and partitions, as a consumer's fetches would, against the real Redis, and
restart one partition from its checkpoint midway. On one Redis and on a
3-master Redis Cluster (the exchange is single-key commands on a plain pipeline).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from logiwatch import stack
from logiwatch.detectors.codec import encode_alert
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import Alert, ScanEvent, Tick
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.redisconn import connect
from logiwatch.sim.traffic import generate
from logiwatch.streams.pool import RedisPool
from logiwatch.streams.state import SnapshotStore

CONFIG = EngineConfig(pool_epoch_ms=6 * 3_600_000)
N = 4


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    return redis_url_both


@pytest.fixture()
def prefix(redis_url: str) -> Iterator[str]:
    name = f"lwtest:{uuid4().hex}:"
    yield name
    stack.delete_redis_prefix(redis_url, name)


def _split(records: list[ScanEvent | Tick]) -> list[list[ScanEvent | Tick]]:
    per: list[list[ScanEvent | Tick]] = [[] for _ in range(N)]
    for r in records:
        if isinstance(r, ScanEvent):
            per[partition_for(r.waybill_id, N)].append(r)
        else:
            for q in per:
                q.append(r)
    return per


async def _drive(redis_url: str, prefix: str, per: list[list[ScanEvent | Tick]], seed: int, restart: bool) -> list[Alert]:
    client = connect(redis_url, decode_responses=False)
    pool = RedisPool(client, prefix=prefix, topic="events", partitions=N)
    engines = [Engine(CONFIG) for _ in range(N)]
    for p, e in enumerate(engines):
        e.attach_pool(pool, p)
    rng = random.Random(seed)
    pos = [0] * N
    out: list[Alert] = []
    restarted = not restart
    try:
        while any(pos[p] < len(per[p]) for p in range(N)):
            p = rng.randrange(N)
            n = rng.randint(1, 400)
            out += engines[p].process(per[p][pos[p] : pos[p] + n])
            pos[p] += n
            if not restarted and engines[p].held and pos[p] > len(per[p]) // 2:
                # a worker dies holding records: its checkpoint carries them
                restarted = True
                blob = engines[p].export_models()
                await pool.sync()  # the worker writes the pool before the snapshot
                engines[p] = Engine.restore(CONFIG, engines[p].parcel_blobs(), blob)
                engines[p].attach_pool(pool, p)
            while True:  # what the worker's pool round does
                await pool.sync()
                before = [e.held for e in engines]
                for e in engines:
                    if e.held:
                        out += e.process([])
                if [e.held for e in engines] == before:
                    break
        assert not any(e.held for e in engines), "every partition must get through"
        assert restarted
    finally:
        await client.aclose()
    return out


@pytest.mark.parametrize("seed,restart", [(1, False), (2, True)])
def test_redis_pooled_partitions_give_the_backtests_alerts(redis_url: str, prefix: str, seed: int, restart: bool) -> None:
    events, _ = generate("default", seed=5, parcels=400)
    records = list(interleave_ticks(events, 3_600_000))
    expected = Counter(map(encode_alert, run_partitioned(records, N, CONFIG)))
    got = asyncio.run(_drive(redis_url, prefix, _split(records), seed, restart))
    assert Counter(map(encode_alert, got)) == expected


def test_an_epoch_missing_past_the_wait_goes_on_with_what_is_there(redis_url: str, prefix: str) -> None:
    now = [0.0]
    partial: list[int] = []

    async def run() -> None:
        client = connect(redis_url, decode_responses=False)
        pool = RedisPool(
            client, prefix=prefix, topic="events", partitions=2, wait_s=60, monotonic=lambda: now[0],
            on_partial=lambda: partial.append(1),
        )
        try:
            a, b = Engine(CONFIG), Engine(CONFIG)
            a.attach_pool(pool, 0)
            b.attach_pool(pool, 1)
            ticks = [Tick(tick_time=k * CONFIG.pool_epoch_ms + 1, source="test") for k in range(3)]
            a.process(ticks)  # its epoch-0 deltas are published; it needs b's, which never come
            await pool.sync()
            assert a.held == 1
            now[0] = 30.0
            a.process([])
            assert a.held == 1 and not partial
            now[0] = 61.0
            a.process([])
            assert a.held == 0 and partial == [1]
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_pool_sync_waits_out_a_redis_that_does_not_answer(tmp_path: Path) -> None:
    """Redis gone for a moment: the worker's retry (the snapshot store's) writes what was published once Redis is back."""

    port = stack.free_port()
    first = stack.start_redis(port, tmp_path / "a")
    url = f"redis://127.0.0.1:{port}/0"

    async def run() -> None:
        client = connect(url, decode_responses=False)
        pool = RedisPool(client, prefix="t:", topic="ev", partitions=2)
        store = SnapshotStore(client, "t:", backoff_max_s=0.2)
        pool.publish(3, 0, b"x")
        stack.stop_pid(first.pid, timeout=5, popen=first.popen)  # Redis goes away
        task = asyncio.create_task(store.retry("pool sync", pool.sync))
        await asyncio.sleep(1.0)
        assert not task.done(), "the sync must wait for Redis, not fail the batch"
        again = stack.start_redis(port, tmp_path / "b")
        try:
            await asyncio.wait_for(task, 30)
            assert await client.hget(pool.key(3), "0") == b"x"
        finally:
            await client.aclose()
            stack.stop_pid(again.pid, timeout=5, popen=again.popen)

    asyncio.run(run())


async def _round(pool: RedisPool, engines: list[Engine]) -> list[list[Alert]]:
    """What the worker's pool round does: sync, let held partitions go on, until none moves."""

    out: list[list[Alert]] = [[] for _ in engines]
    while True:
        await pool.sync()
        before = [e.held for e in engines]
        for p, e in enumerate(engines):
            if e.held:
                out[p] += e.process([])
        if [e.held for e in engines] == before:
            return out


async def _restored_far_behind(redis_url: str, prefix: str, per: list[list[ScanEvent | Tick]]) -> list[Alert]:
    """Partition 0 is checkpointed a quarter in; the others and it run to the end; then it is restored
    from that checkpoint in the same process (whose pool has read the newest epochs) and catches up."""

    client = connect(redis_url, decode_responses=False)
    pool = RedisPool(client, prefix=prefix, topic="events", partitions=N)
    engines = [Engine(CONFIG) for _ in range(N)]
    for p, e in enumerate(engines):
        e.attach_pool(pool, p)
    out: list[Alert] = []
    pos, at = [0] * N, len(per[0]) // 4
    try:
        out += engines[0].process(per[0][:at])
        out += (await _round(pool, engines))[0]
        checkpoint = (engines[0].parcel_blobs(), engines[0].export_models())
        victim: list[Alert] = []  # the old owner's alerts after the checkpoint: the restored one re-emits them
        pos[0] = at
        while any(pos[p] < len(per[p]) for p in range(N)):
            for p in range(N):
                got = engines[p].process(per[p][pos[p] : pos[p] + 300])
                (victim if p == 0 else out).extend(got)
                pos[p] += 300
            for p, got in enumerate(await _round(pool, engines)):
                (victim if p == 0 else out).extend(got)
        restored = Engine.restore(CONFIG, *checkpoint)
        restored.attach_pool(pool, 0)
        engines[0] = restored
        again: list[Alert] = []  # the others are through: every alert from here on is the restored one's
        for start in range(at, len(per[0]), 300):
            again += restored.process(per[0][start : start + 300])
            again += (await _round(pool, engines))[0]
        assert not restored.held, "the restored partition must get through the epochs the others are past"
        assert Counter(map(encode_alert, again)) == Counter(map(encode_alert, victim))
        out += again
    finally:
        await client.aclose()
    return out


def test_a_partition_restored_far_behind_the_others_catches_up_with_the_same_alerts(
    redis_url: str, prefix: str
) -> None:
    # Regression: the worker's pool keeps the newest epochs' sums and read an older one again for
    # the partition restored far behind, then pruned it before that partition took it (stuck).
    events, _ = generate("default", seed=5, parcels=400)
    records = list(interleave_ticks(events, 3_600_000))
    expected = Counter(map(encode_alert, run_partitioned(records, N, CONFIG)))
    got = asyncio.run(_restored_far_behind(redis_url, prefix, _split(records)))
    assert Counter(map(encode_alert, got)) == expected
