"""``logiwatch demo`` end to end, as a user runs it, on the session's broker and Redis.

The demo runs as a subprocess for about 30 s: simulator -> Tansu -> the
``logiwatch worker`` subprocess -> alerts -> the alert service -> a verifying
webhook receiver. The test reads its output while it runs (and fetches the
CS board URL it prints), then checks the accounting in the summary: every
produced record consumed by the worker, every malformed one dead-lettered,
alerts of several types, verified notifications, a liability summary, and
nothing of the run left behind (topics and Redis keys are named after it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import redis
from kafka import KafkaAdminClient

from tests.helpers import wait_until


def _demo_env(kafka_bootstrap: str, redis_url: str, prefix: str, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_") and k != "REDIS_URL"}
    env |= {
        "LOGIWATCH_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "LOGIWATCH_REDIS__URL": redis_url,
        "LOGIWATCH_REDIS__KEY_PREFIX": prefix,
        "LOGIWATCH_STACK__STATE_DIR": str(state_dir),
        "LOGIWATCH_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def test_demo_runs_the_whole_pipeline_and_accounts_for_every_record(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "logiwatch.cli", "demo", "--duration", "30", "--progress-every", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_demo_env(kafka_bootstrap, redis_url, redis_prefix, state_dir),
    )
    lines: list[str] = []
    pump = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    pump.start()
    try:
        board = wait_until(
            lambda: next((m for line in list(lines) if (m := re.match(r"board: OK (\S+)", line))), None),
            timeout=90,
            what="the demo printing 'board: OK <url>'",
        )
        assert board is not None
        # The board must answer while the demo runs, not only in the demo's own check.
        with urllib.request.urlopen(board.group(1), timeout=10) as resp:
            assert resp.status == 200
            assert b"<html" in resp.read(4096).lower()
        code = proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pump.join(timeout=10)
    out = "".join(lines)
    assert code == 0, out[-6000:]

    run_id = re.search(r"demo: run ([0-9a-f]+):", out)
    assert run_id, out
    assert f"using the broker at {kafka_bootstrap}" in out
    assert re.search(r"\] produced \d+ events \| worker consumed \d+ records", out), "progress lines"
    assert re.search(r"^  alert  #1 ", out, re.M), "live alert samples"
    assert re.search(r"^  webhook alert\.firing ", out, re.M), "live notification lines"

    summary = re.search(
        r"produced (\d+) \((\d+) events, (\d+) malformed\), consumed (\d+), dead letters (\d+), missing (-?\d+)",
        out,
    )
    assert summary, out[-6000:]
    total, events, malformed, consumed, dead, missing = map(int, summary.groups())
    assert events > 1000 and malformed > 0
    assert total == events + malformed
    assert (consumed, dead, missing) == (events, malformed, 0), out[-6000:]

    worker = re.search(r"worker: +(\d+) records consumed = (\d+) events \+ (\d+) ticks \+ (\d+) dead letters", out)
    assert worker, out[-6000:]
    records, w_events, ticks, w_dead = map(int, worker.groups())
    assert ticks > 0 and records == w_events + ticks + w_dead

    alerts = re.search(r"alerts: +(\d+) emitted \((\d+) firing, (\d+) resolved\), (\d+) read back; firing by type: (.*)", out)
    assert alerts, out[-6000:]
    emitted, firing, resolved, read_back = map(int, alerts.groups()[:4])
    assert emitted > 0 and emitted == firing + resolved == read_back
    types = dict(re.findall(r"([a-z_]+) (\d+)", alerts.group(5)))
    assert len(types) >= 4, alerts.group(5)

    notes = re.search(r"notifications: (\d+) received and verified \((\d+) bad signatures\)", out)
    assert notes, out[-6000:]
    assert int(notes.group(1)) > 0 and int(notes.group(2)) == 0
    liability = re.search(r"liability \(yuan, by party\): (.*)", out)
    assert liability and re.search(r"[a-z]+ \d+\.\d\d", liability.group(1)), out[-3000:]
    assert f"CS board:      {board.group(1)}" in out
    # a share of the parcels came through the front door (signed pushes -> ingest serve -> the join)
    assert re.search(r"^demo: front door: `logiwatch ingest serve` at http://127\.0\.0\.1:\d+ ", out, re.M), out[-3000:]
    assert re.search(r"^  push   #1 +(aftership|kuaidi100) +\S+ +\d+ scans so far -> 200 \d+ new scans$", out, re.M)
    front = re.search(
        r"front door: +(\d+) registrations, pushes: aftership (\d+) accepted / (\d+) refused, "
        r"kuaidi100 (\d+) accepted / (\d+) refused; (\d+) new scans produced, (\d+) resent ones dropped, "
        r"(\d+) gave up \((\d+) of the (\d+) events above\); the worker joined (\d+) slim scans to their "
        r"registrations, (\d+) went on",
        out,
    )
    assert front, out[-3000:]
    regs, as_ok, as_bad, kd_ok, kd_bad, new_scans, dropped, gave_up, records, all_events, joined, defaulted = map(
        int, front.groups()
    )
    assert regs > 0 and as_ok > 0 and kd_ok > 0 and (as_bad, kd_bad, gave_up) == (0, 0, 0), front.group(0)
    assert new_scans > 0 and dropped > 0, front.group(0)
    assert records == regs + new_scans and all_events == events, front.group(0)
    # the slim scans reached the engine through the join, most of them joined to their registration
    assert 0 < joined + defaulted <= new_scans and joined >= new_scans * 9 // 10, front.group(0)
    print(front.group(0))

    # Nothing of the run is left: its topics are deleted, its Redis keys gone,
    # and it started no stack of its own (the broker was already running).
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        leftovers = [t for t in admin.list_topics() if t.endswith(f".demo-{run_id.group(1)}")]
    finally:
        admin.close()
    assert leftovers == []
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{redis_prefix}demo-{run_id.group(1)}:*", count=1000)) == []
    finally:
        client.close()
    assert not (state_dir / "stack.json").exists()


def test_demo_whose_worker_cannot_start_fails_in_one_line_naming_its_log_and_cleans_up(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    env = _demo_env(kafka_bootstrap, redis_url, redis_prefix, state_dir)
    # The worker cannot bind its metrics server on an address this host does not have
    # (TEST-NET-3), and it binds that port before anything else; the rest of the demo
    # (broker, Redis, alert service, board) starts fine.
    env["LOGIWATCH_WORKER__METRICS_HOST"] = "203.0.113.7"
    try:
        # Longer than the demo's own waits (board and worker 60 s each, then the
        # clean-up), so that a slow start fails with the demo's message, not ours.
        done = subprocess.run(
            [sys.executable, "-m", "logiwatch.cli", "demo", "--duration", "20"],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
    except subprocess.TimeoutExpired as exc:
        log = state_dir / "demo-worker.log"
        raise AssertionError(
            f"the demo hung; worker log:\n{log.read_text() if log.exists() else '(none)'}\n"
            f"demo output:\n{exc.stdout!r}\n{exc.stderr!r}"
        ) from None
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"logiwatch demo: error: the worker exited during start-up \(exit status 1\); see (\S+)", last)
    assert found, done.stderr
    assert "metrics port" in Path(found.group(1)).read_text(), "the log says why"
    run_id = re.search(r"demo: run ([0-9a-f]+):", done.stdout)
    assert run_id, done.stdout
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert [t for t in admin.list_topics() if t.endswith(f".demo-{run_id.group(1)}")] == []
    finally:
        admin.close()


def test_demo_rejects_a_parcel_count_outside_its_range_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "logiwatch.cli", "demo", "--parcels", "3"],
        capture_output=True,
        text=True,
        env={**os.environ, "LOGIWATCH_STACK__STATE_DIR": str(tmp_path / "state")},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--parcels" in done.stderr, done.stderr
    assert not (tmp_path / "state").exists()  # refused before starting anything


def test_demo_sizing_and_sampling_examples_hold() -> None:
    import doctest

    from logiwatch import demo

    result = doctest.testmod(demo)
    assert result.attempted >= 5 and result.failed == 0
