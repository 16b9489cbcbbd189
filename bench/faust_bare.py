"""Phase ``faust_bare``: the framework peer. Starts :mod:`logiwatch.bench.faust_agent`
as its own process and reads the rate it wrote.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

from logiwatch.bench.figures import rate
from logiwatch.bench.processes import spawn
from logiwatch.errors import LogiwatchError


def faust_bare_eps(bootstrap: str, topic: str, target: int, workdir: Path, session_ms: int) -> float:
    out = workdir / f"faust-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "logiwatch.bench.faust_agent", "--bootstrap", bootstrap, "--topic", topic]
    cmd += ["--group", f"bench-faust-{uuid.uuid4().hex[:8]}", "--target", str(target), "--out", str(out)]
    cmd += ["--session-timeout-s", str(session_ms / 1000)]
    proc = spawn("faust-bare", cmd, workdir)
    try:
        # Generous: start-up plus the sample at a few thousand events/s.
        deadline = time.monotonic() + 90.0 + target / 1000.0
        while not out.exists():
            proc.check_alive()
            if time.monotonic() > deadline:
                raise LogiwatchError(
                    f"bare Faust agent did not count {target:,} events in time; see {proc.log_path}"
                )
            time.sleep(0.2)
        data = json.loads(out.read_text())
    finally:
        proc.stop()
    return rate(int(data["count"]) - 1, float(data["last_s"]) - float(data["first_s"]))
