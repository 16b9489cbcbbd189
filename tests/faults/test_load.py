"""Sustained peak-season load: the worker keeps up, and its memory stays bounded.

``logiwatch simulate --scenario peak`` (hub incidents, overflow, slower
linehaul) produces at a fixed rate for about a minute into the real broker
while a real ``logiwatch worker`` consumes it. Every two seconds the test
samples the worker's consumer lag (its own gauge, computed from the fetch
high watermark, which Tansu reports correctly) and its resident memory
(``/proc``). The bounds, stated here and in ``docs/reliability.md``:

* lag never exceeds ``LAG_BOUND_S`` seconds of input once the group has joined,
  and returns to zero once the producer stops;
* RSS never exceeds ``RSS_BOUND_MIB``, and grows by at most
  ``RSS_GROWTH_BOUND_MIB`` between the first sample under load and the end
  (the per-parcel state of a peak day, not a leak).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from logiwatch import stack
from logiwatch.config import Settings
from tests.faults.test_alerts_faults import figures
from tests.helpers import wait_until
from tests.integration.test_worker_support import settings_env

pytestmark = pytest.mark.slow

RATE = 1900  # events/s: the benchmark's latency phase, half the measured one-worker rate (docs/benchmarks.md)
PARCELS = 3500  # base parcels; peak triples them: about 104k scans, about a minute at RATE
LAG_BOUND_S = 10
RSS_BOUND_MIB = 600
RSS_GROWTH_BOUND_MIB = 200
SAMPLE_S = 2.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def scrape(port: int) -> dict[str, float]:
    """Sums of the worker's gauges and counters we sample, by metric name."""

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            continue
    return out


def test_worker_keeps_up_with_sustained_peak_load_with_bounded_lag_and_memory(
    topic_factory: Callable[..., str], settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    ev_topic, al_topic, dlq_topic = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", 1)
    cfg = settings_factory(
        kafka={
            "topics": {"events": ev_topic, "alerts": al_topic, "dlq": dlq_topic},
            "worker_group": f"g-{ev_topic}",
            "session_timeout_ms": 6000,
        },
    )
    metrics_port = stack.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_")}
    env.update(settings_env(cfg))
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "logiwatch.cli", "--log-level", "INFO", "worker", "--metrics-port", str(metrics_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sim_log = tmp_path / "simulate.log"
    sim: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, float, float, float]] = []  # (t, lag records, rss MiB, parcels in flight)
    try:
        wait_until(lambda: scrape(metrics_port), 60, what=f"worker metrics up: {worker_log.read_text()[-800:]}")
        with open(sim_log, "ab") as log:
            sim = subprocess.Popen(
                [
                    sys.executable, "-m", "logiwatch.cli", "simulate",
                    "--scenario", "peak", "--seed", "7", "--parcels", str(PARCELS),
                    "--rate", str(RATE), "--ticks-every-s", "600",
                    "--bootstrap", cfg.kafka.bootstrap, "--topic", ev_topic,
                    "--labels", str(tmp_path / "labels.jsonl"),
                ],  # fmt: skip
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = time.monotonic()
        next_sample = started
        # Sample at a fixed cadence while the simulator runs (a sampling clock, not a wait).
        while sim.poll() is None:
            assert worker.poll() is None, f"worker died under load: {worker_log.read_text()[-1500:]}"
            m = scrape(metrics_port)
            samples.append(
                (
                    time.monotonic() - started,
                    m.get("logiwatch_worker_consumer_lag", 0.0),
                    rss_mib(worker.pid),
                    m.get("logiwatch_worker_parcels_in_flight", 0.0),
                )
            )
            next_sample += SAMPLE_S
            time.sleep(max(0.0, next_sample - time.monotonic()))
        produced_s = time.monotonic() - started
        assert sim.returncode == 0, sim_log.read_text()[-1500:]
        # Once the producer stops, the worker drains: every event counted, lag back to zero.
        found = re.search(r"produced (\d+) events", sim_log.read_text())
        assert found, sim_log.read_text()[-800:]
        events = int(found.group(1))
        wait_until(
            lambda: scrape(metrics_port).get("logiwatch_worker_events_consumed_total", 0) >= events,
            60,
            what="worker consumed every event",
        )
        wait_until(lambda: scrape(metrics_port).get("logiwatch_worker_consumer_lag", 1) == 0, 30, what="lag back to 0")
        end_rss = rss_mib(worker.pid)
        final = scrape(metrics_port)
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait(10)
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
    # Skip the group join (about half the session timeout) before bounding lag.
    loaded = [s for s in samples if s[0] >= 10]
    assert len(loaded) >= 10, f"too few samples under load: {samples}"
    max_lag = max(s[1] for s in loaded)
    assert max_lag <= LAG_BOUND_S * RATE, f"lag reached {max_lag:.0f} records (> {LAG_BOUND_S} s of input): {loaded}"
    max_rss = max([s[2] for s in samples] + [end_rss])
    assert max_rss <= RSS_BOUND_MIB, f"worker RSS reached {max_rss:.0f} MiB"
    growth = end_rss - loaded[0][2]
    assert growth <= RSS_GROWTH_BOUND_MIB, f"worker RSS grew {growth:.0f} MiB under load"
    figures(
        "sustained_peak_load",
        rate_events_per_s=RATE,
        events=events,
        produce_seconds=round(produced_s, 1),
        samples=len(samples),
        max_lag_records=int(max_lag),
        max_lag_seconds_of_input=round(max_lag / RATE, 2),
        rss_first_loaded_mib=round(loaded[0][2], 1),
        rss_max_mib=round(max_rss, 1),
        rss_end_mib=round(end_rss, 1),
        parcels_in_flight_max=int(max(s[3] for s in samples)),
        alerts_emitted=int(final.get("logiwatch_worker_alerts_emitted_total", 0)),
        dlq=int(final.get("logiwatch_worker_dlq_total", 0)),
    )
