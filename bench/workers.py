"""Phases ``worker`` and ``two_workers`` (and ``--profile``): real ``logiwatch
worker`` processes on the workload, clocked from the moment each has
consumed to the moment the group committed every event, read from their
metrics and the committed offsets.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logiwatch import stack
from logiwatch.bench.figures import (
    ALERTS,
    CHECKPOINT_BYTES,
    CONSUMED,
    DLQ,
    PROGRESS_TIMEOUT_S,
    batch_profile,
    rate,
    summarise_profile,
)
from logiwatch.bench.processes import Proc, scrape, spawn
from logiwatch.errors import LogiwatchError


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

    procs: list[Proc]
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
            proc = spawn(
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
    spy_proc = spawn("py-spy", cmd, ctx.workdir)
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
