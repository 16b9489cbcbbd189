"""``logiwatch stack`` without starting services: usage errors, state-file safety, helpers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from logiwatch import stack
from logiwatch.cli import main
from logiwatch.config import Settings


def test_unknown_stack_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["stack", "sideways"])
    assert exc.value.code == 2
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_out_of_range_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["stack", "up", "--kafka-port", port])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--kafka-port" in err


def test_status_without_state_says_not_running_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stack", "status", "--state-dir", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().out


def test_corrupt_state_file_is_a_one_line_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "stack.json").write_text("{not json")
    assert main(["stack", "down", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(tmp_path / "stack.json") in err


def test_down_never_kills_a_process_whose_pid_was_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The recorded broker pid now belongs to an unrelated process (this one would do, but a
    # child is safer): `down` must see it is not a tansu and leave it alone.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = {
            "kafka": {
                "name": "tansu",
                "pid": child.pid,
                "url": "127.0.0.1:1",
                "started": True,
                "log_path": None,
            }
        }
        (tmp_path / "stack.json").write_text(json.dumps(state))
        assert main(["stack", "down", "--state-dir", str(tmp_path)]) == 0
        assert "kafka: was not running" in capsys.readouterr().out
        assert child.poll() is None
        assert not (tmp_path / "stack.json").exists()
    finally:
        child.kill()
        child.wait()


def test_port_in_use_sees_a_listener_and_free_port_is_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert stack.port_in_use(sock.getsockname()[1])
    assert not stack.port_in_use(stack.free_port())


def test_pid_alive_is_false_once_a_child_has_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert stack.pid_alive(os.getpid())
    assert not stack.pid_alive(child.pid)


def test_bundled_binaries_are_found() -> None:
    assert os.access(stack.tansu_binary(), os.X_OK)
    assert os.access(stack.redis_server_binary(), os.X_OK)


def test_stack_topics_follow_the_configured_names_and_partitions() -> None:
    s = Settings.model_validate({"kafka": {"topics": {"events": "ev", "events_partitions": 8}}})
    assert stack.stack_topics(s) == {
        "ev": 8,
        "logistics.alerts": 4,
        "logistics.liability": 1,
        "logistics.events.dlq": 1,
        "logistics.shipments": 8,  # co-partitioned with the events
        "ev-hubs": 1,  # the hub stage's summaries: one partition, one stage over all
    }
