"""Fixtures for the ops tests: Prometheus's own tools, installed if missing.

``promtool`` and ``prometheus`` come from Debian's ``prometheus`` package via
``scripts/ensure-prometheus.sh`` (the same script ``make test-ops`` runs
first). When they cannot be installed the tests fail, never skip: the
acceptance of issue 5 is that these checks run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _ensure_prometheus() -> None:
    if shutil.which("promtool") and shutil.which("prometheus"):
        return
    script = ROOT / "scripts" / "ensure-prometheus.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot install prometheus: {done.stderr.strip() or done.stdout.strip()}")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Absolute path of ``promtool``."""

    _ensure_prometheus()
    path = shutil.which("promtool")
    assert path, "promtool is still missing after scripts/ensure-prometheus.sh"
    return path


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Absolute path of the ``prometheus`` server binary."""

    _ensure_prometheus()
    path = shutil.which("prometheus")
    assert path, "prometheus is still missing after scripts/ensure-prometheus.sh"
    return path
