"""Redis snapshots of partition state: round trip, atomic offset, outages paused through."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from logiwatch import stack
from logiwatch.redisconn import connect
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.state import Snapshot, SnapshotStore
from tests.helpers import wait_until


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    """Every test here runs on one Redis and on a 3-master Redis Cluster."""

    return redis_url_both


def test_snapshot_round_trips_parcels_models_baselines_and_offset(redis_url: str, redis_prefix: str) -> None:
    async def scenario() -> tuple[Snapshot, Snapshot]:
        client = connect(redis_url)
        store = SnapshotStore(client, redis_prefix)
        try:
            empty = await store.load("events", 2)
            await store.save(
                "events",
                2,
                upserts={"WB1": b"a", "WB2": b"b"},
                deletes=[],
                models=b"m1",
                baselines={"dwell:HUB-A": b"h1", "dwell:HUB-B": b"h2"},
                offset=10,
            )
            # A checkpoint writes only the baseline keys that changed; the others stay.
            await store.save(
                "events",
                2,
                upserts={"WB3": b"c", "WB1": b"a2"},
                deletes=["WB2"],
                models=b"m2",
                baselines={"dwell:HUB-A": b"h1'"},
                offset=25,
            )
            return empty, await store.load("events", 2)
        finally:
            await client.aclose()

    empty, snap = asyncio.run(scenario())
    assert (empty.parcels, empty.models, empty.offset, empty.baselines) == ({}, None, None, {})
    assert snap.parcels == {"WB1": b"a2", "WB3": b"c"}
    assert snap.baselines == {"dwell:HUB-A": b"h1'", "dwell:HUB-B": b"h2"}
    assert (snap.models, snap.offset) == (b"m2", 25)


def test_checkpoint_waits_out_a_redis_outage_instead_of_failing(tmp_path: Path) -> None:
    port = stack.free_port()  # nothing listens here yet: Redis is "down"
    url = f"redis://127.0.0.1:{port}/0"
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    errors = lambda: registry.get_sample_value("logiwatch_worker_redis_errors_total") or 0.0  # noqa: E731
    started: list[stack.RunningProcess] = []

    def bring_redis_up() -> None:
        wait_until(lambda: errors() >= 2, timeout=30, what="the checkpoint retrying")
        started.append(stack.start_redis(port, tmp_path / "redis"))

    async def scenario() -> Snapshot:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
        store = SnapshotStore(client, "lwtest:", metrics, backoff_initial_s=0.05, backoff_max_s=0.2)
        try:
            await store.save("events", 0, upserts={"WB1": b"s"}, deletes=[], models=b"m", offset=3)
            return await store.load("events", 0)
        finally:
            await client.aclose()

    helper = threading.Thread(target=bring_redis_up)
    helper.start()
    try:
        snap = asyncio.run(scenario())
    finally:
        helper.join()
        for proc in started:
            proc.stop()
    assert errors() >= 2
    assert snap.parcels == {"WB1": b"s"} and snap.offset == 3


def test_a_stale_worker_cannot_move_a_snapshot_backwards(redis_url: str, redis_prefix: str) -> None:
    async def scenario() -> tuple[bool, bool, Snapshot]:
        client = connect(redis_url)
        store = SnapshotStore(client, redis_prefix)
        try:
            newer = await store.save(
                "events", 1, upserts={"WB1": b"new"}, deletes=[], models=b"m-new", offset=50
            )
            stale = await store.save(
                "events", 1, upserts={"WB1": b"old"}, deletes=[], models=b"m-old", offset=20
            )
            return newer, stale, await store.load("events", 1)
        finally:
            await client.aclose()

    newer, stale, snap = asyncio.run(scenario())
    assert newer and not stale
    assert (snap.parcels, snap.models, snap.offset) == ({"WB1": b"new"}, b"m-new", 50)


def test_a_checkpoint_in_the_untagged_key_layout_is_adopted_on_one_redis(single_redis_url: str) -> None:
    redis_prefix = f"lwtest:{uuid4().hex}:"

    async def scenario() -> tuple[Snapshot, list[int]]:
        client = connect(single_redis_url)
        try:
            store = SnapshotStore(client, redis_prefix)
            # what a worker before the hash tags wrote
            await client.hset(f"{redis_prefix}parcels:ev:2", mapping={"WB1": b"s1"})
            await client.set(f"{redis_prefix}models:ev:2", b"m")
            await client.set(f"{redis_prefix}offset:ev:2", 41)
            snap = await store.load("ev", 2)
            left = [await client.exists(f"{redis_prefix}{k}:ev:2") for k in ("parcels", "models", "offset")]
            return snap, left
        finally:
            await client.aclose()

    try:
        snap, left = asyncio.run(scenario())
    finally:
        stack.delete_redis_prefix(single_redis_url, redis_prefix)
    assert (snap.parcels, snap.models, snap.offset) == ({"WB1": b"s1"}, b"m", 41)
    assert left == [0, 0, 0]
