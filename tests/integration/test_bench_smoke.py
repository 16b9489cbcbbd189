"""A tiny ``logiwatch bench`` run end to end: every phase runs and reports a real figure.

Not a speed assertion: it checks that each required key is present and
positive (a failed phase reports ``null`` and exits 1), that the files are
written and that the hand-written part of the report survives a rewrite. The
harness starts its own Tansu on a free port, as ``make bench`` does, and uses
the session's Redis through ``REDIS_URL``. The quixstreams phases are skipped
with ``--skip quix`` (they need their own virtualenv; see test_bench_quix.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from logiwatch.bench import HAND_MARKER, REQUIRED_KEYS
from logiwatch.bench.figures import QUIX_KEYS
from tests.unit.test_bench import ISSUE_FIGURES


def test_a_small_bench_run_reports_every_figure_and_writes_both_files(tmp_path: Path, redis_url: str) -> None:
    out_md, out_json = tmp_path / "benchmarks.md", tmp_path / "results.json"
    out_md.write_text(f"stale figures\n{HAND_MARKER}\n\n## Profile\n\nkept by hand\n")
    cmd = [sys.executable, "-m", "logiwatch.cli", "bench", "--events", "20000", "--json"]
    cmd += ["--faust-events", "2000", "--latency-seconds", "3", "--phase-seconds", "15"]
    cmd += ["--workdir", str(tmp_path / "work"), "--skip", "quix"]
    cmd += ["--out-md", str(out_md), "--out-json", str(out_json)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=340,
        env={
            **os.environ,
            "REDIS_URL": redis_url,
            "LOGIWATCH_LOG_LEVEL": "WARNING",
            # Tansu hands out partitions after half the session timeout: keep joins short.
            "LOGIWATCH_KAFKA__SESSION_TIMEOUT_MS": "4000",
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert results["errors"] == {}
    for key in (*ISSUE_FIGURES, *REQUIRED_KEYS):
        assert isinstance(results.get(key), float | int) and results[key] > 0, (key, results.get(key))
    assert results["events"] == 20_000
    # the quix keys are printed beside the others, null when their phases are skipped
    assert results["skipped"] == ["quix_bare", "quix_stateful"] and results["skip_reasons"] == {}
    assert all(key in results and results[key] is None for key in QUIX_KEYS)
    assert results["latency_p50_ms"] <= results["latency_p99_ms"]
    assert results["memory_parcels"] > 0 and results["worker_dlq"] == 0
    # the alert service handled the engine's alerts through its own consume loop
    assert 0 < results["alert_service_clocked"] <= results["alert_service_alerts"]
    assert results["alert_service_aps"] > 0
    # the front door: `ingest serve` answered signed pushes and produced their new scans to Kafka
    assert results["ingest_pushes_per_s"] > 0 and results["ingest_scans_per_s"] > 0
    assert results["ingest_failed"] == 0 and results["ingest_scans_duplicate"] > 0
    assert json.loads(out_json.read_text()) == results
    report = out_md.read_text()
    assert "stale figures" not in report
    assert report.endswith("kept by hand\n")
    assert "| logiwatch worker, 1 process |" in report
    # the harness removes the Redis state its workers wrote
    client = redis.Redis.from_url(redis_url)
    try:
        assert len(results["redis_prefixes"]) == 3  # one worker, two workers, latency
        for prefix in results["redis_prefixes"]:
            assert not list(client.scan_iter(match=f"{prefix}*", count=1000)), prefix
    finally:
        client.close()
