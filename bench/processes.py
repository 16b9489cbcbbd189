"""Child processes of the harness (a worker, the bare Faust agent) with their
logs in the work directory, and reading a worker's Prometheus counters.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from logiwatch import stack
from logiwatch.errors import LogiwatchError


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int = 0

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise LogiwatchError(
                f"{self.name} exited with status {self.popen.returncode} ({tail or 'no output'}); see {self.log_path}"
            )

    def stop(self) -> None:
        stack.stop_pid(self.popen.pid, timeout=15.0, popen=self.popen)


def spawn(name: str, cmd: list[str], workdir: Path, env: Mapping[str, str] | None = None) -> Proc:
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return Proc(name, popen, log_path)


_METRIC_LINE = re.compile(r"^(logiwatch_worker_[a-z_]+?)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$")


def scrape(port: int, timeout: float = 2.0) -> dict[str, float]:
    """Sum of every sample per metric name from a worker's metrics endpoint (empty when not up yet)."""

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC_LINE.match(line)
        if m:
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + float(m.group(2))
    return sums
