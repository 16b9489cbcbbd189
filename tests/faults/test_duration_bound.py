"""``--duration`` bounds the demo even when the broker it adopted dies under it.

The demo is pointed at a Tansu broker this test started (so the demo did not
start it): it must say so in one line, watch it, and when the broker is
SIGKILLed mid-run it must end within its watchdog's grace with a one-line
message naming the broker, well inside ``--duration`` plus the grace,
instead of retrying the dead connection.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from logiwatch import stack
from logiwatch.watchdog import EXIT_STATUS
from tests.faults.test_alerts_faults import figures
from tests.helpers import wait_until

DURATION_S = 60.0
#: the watchdog's probes (3 x 1 s) plus its grace after a service went away (10 s), plus slack
AFTER_KILL_BOUND_S = 3 + 10 + 7


def test_demo_whose_adopted_broker_dies_ends_within_its_deadline_with_one_line(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    broker = stack.start_tansu(stack.free_port(), tmp_path / "tansu", timeout=60.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_") and k != "REDIS_URL"}
    env |= {
        "LOGIWATCH_KAFKA__BOOTSTRAP": broker.url,
        "LOGIWATCH_REDIS__URL": redis_url,
        "LOGIWATCH_REDIS__KEY_PREFIX": redis_prefix,
        "LOGIWATCH_STACK__STATE_DIR": str(tmp_path / "state"),
        "LOGIWATCH_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "logiwatch.cli", "demo", "--duration", f"{DURATION_S:g}", "--progress-every", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    pump = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    pump.start()
    try:
        wait_until(lambda: any("demo: producing" in line for line in list(lines)), 90, what="the demo producing")
        broker.popen.kill()  # type: ignore[union-attr]  # our child: SIGKILL, no goodbye
        killed = time.monotonic()
        code = proc.wait(timeout=DURATION_S + 60)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop(timeout=5.0)
    pump.join(timeout=10)
    out = "".join(lines)
    adopted = [line for line in lines if f"using the broker at {broker.url}" in line]
    assert adopted and "did not start" in adopted[0] and "watching it" in adopted[0], out[-3000:]
    gone = [line for line in lines if re.match(rf"demo: the broker at {re.escape(broker.url)} went away", line)]
    assert len(gone) == 1, out[-3000:]
    assert code != 0, out[-3000:]
    assert ended - killed <= AFTER_KILL_BOUND_S, f"ended {ended - killed:.1f} s after the broker died\n{out[-3000:]}"
    assert ended - started <= DURATION_S + 10, out[-3000:]
    if code == EXIT_STATUS:  # the watchdog had to end it: it said why, in one line
        assert any(line.startswith("demo: stopped by its deadline: the broker at") for line in lines), out[-3000:]
    figures(
        "duration_bound_broker_dies",
        duration_s=DURATION_S,
        broker_killed_after_s=round(killed - started, 1),
        ended_after_kill_s=round(ended - killed, 1),
        exit_status=code,
    )
