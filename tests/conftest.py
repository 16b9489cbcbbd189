"""Session fixtures: the real Tansu broker and the real Redis, started once.

They are started by :mod:`logiwatch.stack`, the same code as ``logiwatch
stack up``, so the tests exercise what users run. When a service cannot
start, every test that needs it fails (errors), never skips. Per-test
isolation comes from factories: uuid topic names (deleted afterwards, since
Tansu keeps everything in memory) and uuid Redis key prefixes (keys deleted
afterwards). Tests wait with :func:`wait_until`, never with sleeps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis

from logiwatch import stack
from logiwatch.config import Settings
from logiwatch.redisconn import connect_sync
from tests.helpers import wait_until

__all__ = ["wait_until"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python loads its protocol schemas through a deprecated
    # importlib.resources API on every client start: noise, not our bug.
    for text in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{text}:DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Folder decides the marker, so `-m "not integration"` works without
    # every test having to remember its decorator.
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "faults" in parts:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a Tansu broker running for the whole session."""

    state_dir = tmp_path_factory.mktemp("tansu")
    proc = stack.start_tansu(stack.free_port(), state_dir, timeout=60.0)
    try:
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def single_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``REDIS_URL``, or the local Redis on 6379 if it answers, else a redis-server we start."""

    wanted = os.environ.get("REDIS_URL")
    if wanted:
        if not stack.redis_reachable(wanted):
            pytest.fail(f"REDIS_URL={wanted} does not answer PING")
        yield wanted
        return
    if stack.redis_reachable(DEFAULT_REDIS_URL):
        yield DEFAULT_REDIS_URL
        return
    proc = stack.start_redis(stack.free_port(), tmp_path_factory.mktemp("redis"))
    try:
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def redis_url(single_redis_url: str) -> str:
    """The Redis the tests use: one server (a module may override this with :func:`redis_url_both`)."""

    return single_redis_url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+cluster://...`` of a 3-master Redis Cluster on free loopback ports, for the whole session.

    Started by :func:`logiwatch.stack.start_redis_cluster` (``redis-server
    --cluster-enabled yes`` x 3, slots assigned with CLUSTER ADDSLOTS) only
    when a test asks for it, and stopped at the end of the session.
    """

    cluster = stack.start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def redis_url_both(request: pytest.FixtureRequest) -> str:
    """The single Redis, then the Redis Cluster: a module that overrides ``redis_url`` with
    this runs each of its tests against both (``def redis_url(redis_url_both): return redis_url_both``)."""

    name = "single_redis_url" if request.param == "single" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """``make_topic(prefix="t", partitions=4) -> name``: a fresh topic, deleted after the test."""

    made: list[str] = []

    def make_topic(prefix: str = "t", partitions: int = 4) -> str:
        name = f"{prefix}-{uuid4().hex}"
        stack.create_topics(kafka_bootstrap, {name: partitions})
        made.append(name)
        return name

    yield make_topic
    if made:
        stack.delete_topics(kafka_bootstrap, made)


@pytest.fixture
def worker_topics(topic_factory: Callable[..., str]) -> tuple[str, str, str]:
    """``(events, alerts, dlq)``: fresh topics for one worker group, of 4, 4 and 1 partitions."""

    return topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client on the test Redis (bytes in, bytes out)."""

    client = connect_sync(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique Redis key prefix; every key under it is deleted after the test."""

    prefix = f"lwtest:{uuid4().hex}:"
    yield prefix
    stack.delete_redis_prefix(redis_url, prefix)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def settings_factory(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., Settings]]:
    """``make_settings(**overrides) -> Settings`` on the test broker and Redis.

    Each call gets its own Redis key prefix (cleaned up after the test) and a
    state dir under the test's tmp_path; ``overrides`` are nested dicts, e.g.
    ``make_settings(kafka={"topics": {"events": name}})``.
    """

    prefixes: list[str] = []

    def make_settings(**overrides: Any) -> Settings:
        prefix = f"lwtest:{uuid4().hex}:"
        prefixes.append(prefix)
        base: dict[str, Any] = {
            "kafka": {"bootstrap": kafka_bootstrap},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "stack": {"state_dir": str(tmp_path / "state")},
        }
        merged = _merge(base, overrides)
        if "redis" in overrides and "key_prefix" in overrides["redis"]:
            prefixes.append(str(overrides["redis"]["key_prefix"]))
        return Settings(**merged)

    yield make_settings
    for prefix in prefixes:
        stack.delete_redis_prefix(redis_url, prefix)
