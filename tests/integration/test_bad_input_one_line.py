"""Bad input to the CLI ends in one line on stderr and exit 1 or 2, never a traceback.

Each case runs the real ``logiwatch`` command as a user would (a subprocess)
against the real broker and Redis where it needs them; the services that must
be missing are addresses nothing listens on, the port that must be taken is
held by this test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from logiwatch import stack

DATA = Path(__file__).parents[1] / "data"
#: one valid scan event (from `logiwatch simulate --seed 3`)
ONE_EVENT = (
    '{"event_id":"WB3-0000047-00","waybill_id":"WB3-0000047","order_id":"OD3-0000047","merchant_id":"M0278",'
    '"carrier_id":"YTO","event_type":"ORDER_PAID","node_id":"WH-M0278","node_type":"MERCHANT","region":"guangdong",'
    '"origin_region":"guangdong","dest_region":"zhejiang","event_time":1793583459962,'
    '"promised_dispatch_by":1793756259962,"promised_delivery_by":1794095940000,"category":"apparel",'
    '"order_amount":94.51,"schema_version":1,"lat":23.2397,"lon":113.0395,"detail":null}'
)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_")}
    base |= {"LOGIWATCH_STACK__STATE_DIR": str(cwd / "state"), "LOGIWATCH_LOG_LEVEL": "ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "logiwatch.cli", *args],
        capture_output=True,
        text=True,
        env=base | env,
        cwd=cwd,
        timeout=60,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode in (1, 2), (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_backtest_refuses_a_tick_cadence_that_is_not_a_finite_positive_number(tmp_path: Path, value: str) -> None:
    (tmp_path / "e.jsonl").write_text("")
    (tmp_path / "l.jsonl").write_text("")
    done = _run(["backtest", "--events", "e.jsonl", "--labels", "l.jsonl", f"--ticks-every-s={value}"], {}, tmp_path)
    _assert_one_line(done, "--ticks-every-s", value)
    assert done.returncode == 2


def test_simulate_refuses_a_parcel_count_it_cannot_hold_in_memory(tmp_path: Path) -> None:
    done = _run(["simulate", "--parcels", "1000000000", "--out", "sim"], {}, tmp_path)
    _assert_one_line(done, "--parcels", "at most")
    assert not (tmp_path / "sim").exists()


def test_replay_to_a_topic_that_does_not_exist_refuses_and_creates_nothing(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    from kafka.admin import KafkaAdminClient

    (tmp_path / "events.jsonl").write_text(ONE_EVENT + "\n")
    misspelt = f"logistics.evnets-{uuid4().hex[:8]}"
    done = _run(["replay", "events.jsonl", "--bootstrap", kafka_bootstrap, "--topic", misspelt], {}, tmp_path)
    _assert_one_line(done, misspelt, "does not exist")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert misspelt not in set(admin.list_topics())
    finally:
        admin.close()


@pytest.mark.parametrize("kind", ["directory", "not-utf8"])
def test_alerts_check_names_a_routes_file_it_cannot_read(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "routes"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe[[receivers]]\n")
    done = _run(["alerts", "check"], {"LOGIWATCH_ALERTS__ROUTES_FILE": str(path)}, tmp_path)
    _assert_one_line(done, "routes file", str(path))


def test_alerts_redrive_with_redis_down_says_so_in_one_line(tmp_path: Path) -> None:
    env = {
        "LOGIWATCH_ALERTS__ROUTES_FILE": str(DATA / "routes_good.toml"),
        "LOGIWATCH_REDIS__URL": f"redis://127.0.0.1:{stack.free_port()}/0",
    }
    done = _run(["alerts", "redrive"], env, tmp_path)
    _assert_one_line(done, "cannot reach Redis")


def test_alerts_serve_with_the_broker_unreachable_fails_at_once_in_one_line(tmp_path: Path, redis_url: str) -> None:
    env = {"LOGIWATCH_REDIS__URL": redis_url, "LOGIWATCH_KAFKA__BOOTSTRAP": f"127.0.0.1:{stack.free_port()}"}
    done = _run(["alerts", "serve"], env, tmp_path)
    _assert_one_line(done, "cannot reach Kafka")


def test_alerts_serve_with_its_api_port_taken_fails_in_one_line(
    tmp_path: Path, redis_url: str, kafka_bootstrap: str, taken_port: int
) -> None:
    env = {
        "LOGIWATCH_REDIS__URL": redis_url,
        "LOGIWATCH_REDIS__KEY_PREFIX": f"lwtest:badinput-{taken_port}:",
        "LOGIWATCH_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "LOGIWATCH_ALERTS__API_PORT": str(taken_port),
    }
    done = _run(["alerts", "serve"], env, tmp_path)
    _assert_one_line(done, "cannot serve the API", str(taken_port))


@pytest.mark.parametrize("command", [["worker", "--metrics-port", "0"], ["alerts", "serve"]])
@pytest.mark.parametrize("url", ["notaurl", "http://127.0.0.1:6379/0"])
def test_a_redis_url_that_is_not_one_stops_the_services_in_one_line(tmp_path: Path, command: list[str], url: str) -> None:
    done = _run(command, {"LOGIWATCH_REDIS__URL": url}, tmp_path)
    _assert_one_line(done, "invalid setting redis.url", f"{url!r} is not a Redis URL", "redis://")


def test_worker_with_redis_unreachable_stops_at_start_in_one_line_naming_the_url(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{stack.free_port()}/0"
    done = _run(["worker", "--metrics-port", "0"], {"LOGIWATCH_REDIS__URL": url}, tmp_path)
    _assert_one_line(done, f"cannot reach Redis at {url}")


def test_worker_on_an_events_topic_that_does_not_exist_refuses_and_creates_nothing(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    from kafka.admin import KafkaAdminClient

    tag = uuid4().hex[:8]
    misspelt, alerts, dlq = f"logistics.evnets-{tag}", f"al-{tag}", f"dlq-{tag}"
    env = {
        "LOGIWATCH_REDIS__URL": redis_url,
        "LOGIWATCH_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "LOGIWATCH_KAFKA__TOPICS__EVENTS": misspelt,
        "LOGIWATCH_KAFKA__TOPICS__ALERTS": alerts,
        "LOGIWATCH_KAFKA__TOPICS__DLQ": dlq,
    }
    done = _run(["worker", "--metrics-port", "0"], env, tmp_path)
    _assert_one_line(done, repr(misspelt), "does not exist", "kafka.topics.events")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert not {misspelt, alerts, dlq} & set(admin.list_topics())
    finally:
        admin.close()
