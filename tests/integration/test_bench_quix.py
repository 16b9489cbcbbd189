"""The quixstreams phases of ``logiwatch bench`` end to end, with the other phases skipped.

One run whose quix virtualenv cannot be made: both phases are skipped with the
reason and the run still succeeds, their keys ``null``. One run with the real
virtualenv (``.venv-quix`` at the repository root, which ``make bench``
creates; skipped when it is not there, since creating it downloads
quixstreams): both apps read the bench's topic and report real rates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from logiwatch.bench import PHASES
from logiwatch.bench.figures import QUIX_KEYS

REPO = Path(__file__).parents[2]
OTHERS = ",".join(p for p in PHASES if p not in ("raw_aiokafka", "quix_bare", "quix_stateful"))


def _bench(tmp_path: Path, redis_url: str, events: int, venv: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    cmd = [sys.executable, "-m", "logiwatch.cli", "bench", "--events", str(events), "--json", "--skip", OTHERS]
    cmd += ["--phase-seconds", "15", "--quix-venv", str(venv), "--workdir", str(tmp_path / "work")]
    cmd += ["--out-md", str(tmp_path / "b.md"), "--out-json", str(tmp_path / "b.json")]
    env = {**os.environ, "REDIS_URL": redis_url, "LOGIWATCH_KAFKA__SESSION_TIMEOUT_MS": "4000"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout)


def test_without_a_usable_quix_virtualenv_both_phases_are_skipped_with_the_reason(
    tmp_path: Path, redis_url: str
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    proc, results = _bench(tmp_path, redis_url, 2000, blocker / "venv")
    assert results["errors"] == {}
    reasons = results["skip_reasons"]
    assert set(reasons) == {"quix_bare", "quix_stateful"}
    assert "could not create the virtualenv" in reasons["quix_bare"] and "not-a-dir" in reasons["quix_bare"]
    assert all(results[key] is None for key in QUIX_KEYS)
    assert results["raw_aiokafka_eps"] > 0  # the other phases still ran
    assert "phase quix_bare skipped: could not create the virtualenv" in proc.stderr
    assert "## Skipped phases (could not run here)" in (tmp_path / "b.md").read_text()


def test_both_quix_apps_read_the_bench_topic_and_report_rates(tmp_path: Path, redis_url: str) -> None:
    venv = REPO / ".venv-quix"
    probe = venv / "bin" / "python"
    if not probe.is_file() or subprocess.run([str(probe), "-c", "import quixstreams"]).returncode:
        pytest.skip(f"no quixstreams virtualenv at {venv} (`make bench` creates it)")
    _, results = _bench(tmp_path, redis_url, 20_000, venv)
    assert results["errors"] == {} and results["skip_reasons"] == {}
    for mode in ("bare", "stateful"):
        assert results[f"quix_{mode}_eps"] > 0
        assert results[f"quix_{mode}_events"] == 20_000  # fast enough to read all within 15 s
    assert results["quix_version"].startswith("3.")
    assert 0 <= results["quix_stateful_out_of_order"] < 20_000
    assert results["worker_vs_quix_bare_ratio"] is None  # the worker was skipped: no ratio, no zero
