"""The harness's pure parts: phase names, the keys every run reports, the
targets, and the arithmetic on figures (percentiles, rates, ratios, derived
figures, the rule that matches an alert to the scan that triggered it, the
py-spy and batch summaries). No I/O, so ``tests/unit/test_bench.py`` checks them.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from logiwatch.detectors.partitioning import partition_for
from logiwatch.errors import LogiwatchError

#: Every phase, in the order they run; ``--skip`` takes these names.
PHASES = (
    "raw_aiokafka",
    "raw_kafka_python",
    "faust_bare",
    "quix_bare",
    "quix_stateful",
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


#: The quixstreams peer's keys (issue 14): ``--json`` always prints them, ``None`` when skipped or failed.
QUIX_KEYS = ("quix_bare_eps", "quix_stateful_eps", "worker_vs_quix_bare_ratio", "worker_vs_quix_stateful_ratio")


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


class PhaseSkipped(Exception):
    """A phase that cannot run here (its peer cannot be installed): skipped with this reason, no figure."""


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
    for peer in ("quix_bare", "quix_stateful"):
        results[f"worker_vs_{peer}_ratio"] = ratio(results.get("worker_eps"), results.get(f"{peer}_eps"))
    for key in (*REQUIRED_KEYS, *QUIX_KEYS):
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
