""":func:`run_bench`: start the broker and Redis, build and produce the
workload once, run every phase not skipped (one failing phase records an
error and leaves the others' figures), clean up, derive the ratios.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logiwatch import stack
from logiwatch.bench.alert_service import alert_service_run
from logiwatch.bench.engine import backtest_run, bytes_per_parcel, engine_eps
from logiwatch.bench.faust_bare import faust_bare_eps
from logiwatch.bench.figures import MEMORY_SAMPLE_EVENTS, PHASES, PhaseSkipped, derive
from logiwatch.bench.ingest import PUSHES_PER_BUDGET_S, ingest_phase
from logiwatch.bench.latency import latency_phase
from logiwatch.bench.quix import QuixTarget, create_events_topic, ensure_quix_python, quix_eps
from logiwatch.bench.raw import raw_aiokafka_eps, raw_kafka_python_eps
from logiwatch.bench.report import fmt, machine_info
from logiwatch.bench.workers import BenchContext, profile_worker, worker_eps
from logiwatch.bench.workload import BenchOptions, build_workload, produce_workload
from logiwatch.config import Settings
from logiwatch.detectors.model import Alert
from logiwatch.errors import LogiwatchError


def run_bench(
    options: BenchOptions, settings: Settings, workdir: Path, log: Callable[[str], None], command: str = ""
) -> dict[str, Any]:
    """Run every phase not skipped; return the results object (failed figures are ``None``)."""

    stack.quiet_client_logs()
    # kafka-python warns when its poll loop is "blocked"; decoding 5,000
    # records between polls is the point of the raw phase, not a bug.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "events": options.events,
        "partitions": options.partitions,
        "phase_seconds": options.phase_seconds,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or f"logiwatch bench --events {options.events}",
        "skipped": [p for p in PHASES if p in options.skip],
        "errors": {},
        "skip_reasons": {},  # phases that could not run here (not asked to be skipped), and why
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
        log(f"broker: Tansu at {tansu.url}; redis at {results['machine']['redis']}")
        run = _Run(options, settings, workdir, log, results, cleanup, tansu.url, redis_url)
        for name, figures in run.phases():
            run.phase(name, figures)
            if name == "alert_service":
                run.raised.clear()
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


class _Run:
    """One run's shared pieces (broker, workload, results) and its phases, each returning figures."""

    def __init__(
        self,
        options: BenchOptions,
        settings: Settings,
        workdir: Path,
        log: Callable[[str], None],
        results: dict[str, Any],
        cleanup: list[Callable[[], None]],
        bootstrap: str,
        redis_url: str,
    ) -> None:
        self.options, self.settings, self.workdir, self.log = options, settings, workdir, log
        self.results, self.cleanup, self.bootstrap, self.redis_url = results, cleanup, bootstrap, redis_url
        self.session_ms = settings.kafka.session_timeout_ms
        self.lateness_ms = settings.worker.allowed_lateness_ms  # the engines run as the worker's do
        self.workload = build_workload(options.events, options.partitions, options.seed, log)
        results["parcels"] = self.workload.parcels
        results["event_bytes_avg"] = (
            sum(len(v) for part in self.workload.by_partition for _, v in part) / self.workload.total
        )
        self.topic = topic = f"bench-events-{uuid.uuid4().hex[:8]}"
        create_events_topic(bootstrap, topic, options.partitions)  # with the configs quixstreams reads back
        cleanup.append(lambda: stack.delete_topics(bootstrap, [topic]))
        results["produce_eps"] = produce_workload(bootstrap, topic, self.workload)
        log(f"produced into {topic} at {results['produce_eps']:,.0f} events/s")
        self.n = self.workload.total
        self._quix: tuple[Path, str] | PhaseSkipped | None = None  # the quix virtualenv, made once
        self.raised: list[Alert] = []  # the engine phase's alerts, for the alert-service phase
        self.ctx = BenchContext(
            bootstrap=bootstrap,
            topic=topic,
            partitions=options.partitions,
            expected=self.n,
            redis_url=redis_url,
            workdir=workdir,
            session_ms=self.session_ms,
            lateness_ms=self.lateness_ms,
            phase_seconds=options.phase_seconds,
            cleanup=cleanup,
            prefixes=results["redis_prefixes"],
        )

    def phases(self) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
        """The phases in the order they run (``PHASES``, then the optional profile)."""

        out: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("raw_aiokafka", lambda: self.raw("raw_aiokafka", raw_aiokafka_eps)),
            ("raw_kafka_python", lambda: self.raw("raw_kafka_python", raw_kafka_python_eps)),
            ("faust_bare", self.faust_bare),
            ("quix_bare", lambda: self.quix("bare")),
            ("quix_stateful", lambda: self.quix("stateful")),
            ("worker", lambda: self.workers(1)),
            ("two_workers", lambda: self.workers(2)),
            ("engine", self.engine),
            ("alert_service", self.alert_service),
            ("backtest", self.backtest),
            ("latency", self.latency),
            ("memory", self.memory),
            ("ingest", self.ingest),
        ]
        if self.options.profile:
            out.append(("profile", lambda: profile_worker(self.ctx)))
        return out

    def phase(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name in self.options.skip:
            return
        self.log(f"phase {name} ...")
        t0 = time.perf_counter()
        try:
            figures = fn()
        except PhaseSkipped as why:  # cannot run here: no figure, and not a failure
            self.results["skipped"].append(name)
            self.results["skip_reasons"][name] = str(why)
            self.log(f"phase {name} skipped: {why}")
            return
        except Exception as exc:  # one broken phase must not hide the others' figures
            self.results["errors"][name] = f"{type(exc).__name__}: {exc}"
            self.log(f"phase {name} FAILED: {exc}")
            return
        self.results.update(figures)
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in figures.items() if not isinstance(v, dict))
        self.log(f"phase {name} done in {time.perf_counter() - t0:.1f} s: {shown}")

    def raw(self, name: str, fn: Callable[..., tuple[float, int]]) -> dict[str, Any]:
        eps, clocked = fn(self.bootstrap, self.topic, self.n, self.session_ms, self.options.phase_seconds)
        return {f"{name}_eps": eps, f"{name}_events": clocked}

    def faust_bare(self) -> dict[str, Any]:
        faust_n = min(self.n, self.options.faust_events)
        eps = faust_bare_eps(self.bootstrap, self.topic, faust_n, self.workdir, self.session_ms)
        return {"faust_bare_eps": eps, "faust_events": faust_n}

    def quix(self, mode: str) -> dict[str, Any]:
        if self._quix is None:
            try:
                self._quix = ensure_quix_python(Path(self.options.quix_venv), self.log)
            except PhaseSkipped as why:
                self._quix = why
        if isinstance(self._quix, PhaseSkipped):
            raise self._quix
        python, version = self._quix
        target = QuixTarget(
            bootstrap=self.bootstrap,
            topic=self.topic,
            partitions=self.options.partitions,
            expected=self.n,
            parcels=self.workload.parcels,
            workdir=self.workdir,
            session_ms=self.session_ms,
            phase_seconds=self.options.phase_seconds,
            cleanup=self.cleanup,
        )
        return {**quix_eps(target, python, mode), "quix_version": version}

    def workers(self, n_procs: int) -> dict[str, Any]:
        # Several processes are clocked over as many events as one process was: the
        # per-event cost grows with the parcels in flight, so a longer stretch of the
        # workload would make the scaling look worse than it is.
        cap = self.results.get("worker_events") if n_procs > 1 else None
        run = worker_eps(self.ctx, n_procs, max_events=int(cap) if cap else None)
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

    def engine(self) -> dict[str, Any]:
        eps, done, peak = engine_eps(
            self.workload,
            self.lateness_ms,
            self.options.phase_seconds,
            self.settings.worker.gc_gen0_threshold,
            self.raised,
        )
        return {"engine_eps": eps, "engine_events": done, "parcels_in_flight_peak": peak}

    def alert_service(self) -> dict[str, Any]:
        o, results = self.options, self.results
        figures = alert_service_run(
            self.raised, self.settings, self.bootstrap, self.redis_url, o.partitions, o.phase_seconds, self.cleanup
        )
        if results.get("worker_alerts") and results.get("worker_events") and results.get("worker_eps"):
            per_s = results["worker_alerts"] / results["worker_events"] * results["worker_eps"]
            figures["worker_alerts_eps"] = per_s
            figures["alert_service_worker_capacity"] = figures["alert_service_aps"] / per_s
        return figures

    def backtest(self) -> dict[str, Any]:
        # Sized from the engine rate to fit the phase budget (reading and
        # scoring add to the engine's time); all N when that is fast enough.
        size = self.n
        if self.results.get("engine_eps"):
            size = max(1000, min(self.n, int(self.results["engine_eps"] * self.options.phase_seconds * 0.6)))
        return backtest_run(self.workload.prefix(size), self.workdir, self.lateness_ms)

    def latency(self) -> dict[str, Any]:
        rate_eps = self.options.latency_rate
        if rate_eps is None:
            if not self.results.get("worker_eps"):
                raise LogiwatchError(
                    "no sustained worker rate to halve (worker phase failed or skipped); pass --latency-rate"
                )
            rate_eps = self.results["worker_eps"] / 2
        return latency_phase(self.ctx, self.workload, rate_eps, self.options.latency_seconds)

    def memory(self) -> dict[str, Any]:
        # A prefix of the first half, where parcels pile up in flight;
        # tracing allocations makes the engine several times slower.
        sample = self.workload.events[: max(1, min(len(self.workload.events) // 2, MEMORY_SAMPLE_EVENTS))]
        per, parcels, state = bytes_per_parcel(sample, self.lateness_ms)
        return {"bytes_per_parcel": per, "memory_parcels": parcels, "memory_state_bytes": state}

    def ingest(self) -> dict[str, Any]:
        # a prefix of the workload: about as many pushes as the budget can answer are built
        sample = self.workload.events[: max(1, int(self.options.phase_seconds * PUSHES_PER_BUDGET_S * 1.3))]
        return ingest_phase(self.bootstrap, self.redis_url, sample, self.options.phase_seconds, self.workdir)
