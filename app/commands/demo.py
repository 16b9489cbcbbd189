"""``logiwatch demo``: the whole pipeline on the embedded stack, live, then a summary.

Starts (or reuses) the embedded stack, gives this run its own topics
(``<topic>.demo-<run>``), consumer groups and Redis key prefix so that
repeated demos on one stack never see each other's data, and then runs the
real pieces side by side: ``logiwatch worker`` as a subprocess (the Faust
stream processor), the alert service in this process with a local webhook
receiver that verifies every signature (:func:`logiwatch.alerts.demo.run_alerts_demo`),
and a kafka-python producer that plays the simulator's default scenario
compressed so that about twelve simulated days pass during the run, with
clock ticks in every partition (silent parcels' stalls fire without new
scans) and a few malformed records for the dead-letter topic. A progress
line every few seconds reads the worker's own Prometheus counters; sample
alerts and notifications are printed as they arrive. After ``--duration``
(or Ctrl-C) it stops producing, lets the worker and the alert service
drain, stops everything it started, deletes the run's topics and keys, and
prints the summary: records in and out, dead letters, alerts by type,
notifications, liability by party and the CS board URL. A component that
fails to start, or a worker that does not account for every produced record,
ends the command with one line (and the log path) and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logiwatch import stack
from logiwatch.commands.simulate import positive_float
from logiwatch.config import Settings
from logiwatch.detectors.model import ScanEvent
from logiwatch.errors import ConfigError, LogiwatchError

#: Event-time cadence of the clock ticks. Stall and loss deadlines are hours
#: long, so five minutes is precise enough and keeps tick records (written to
#: every partition) fewer than the scans themselves.
TICK_EVERY_MS = 5 * 60_000
#: Default production rate: the worker's per-record path does ~4-5k records/s
#: on one core, and on a 2-core machine it shares the CPU with the broker and
#: this process, so the demo stays well below that (ticks come on top).
DEFAULT_RATE = 800.0
#: Scans per parcel in the default scenario (measured: 9.9), to size a run.
EVENTS_PER_PARCEL = 10
MIN_PARCELS, MAX_PARCELS = 50, 20_000
#: Parcels when no duration is given (runs until Ctrl-C).
OPEN_ENDED_PARCELS = 4000
#: Undecodable records mixed into the stream (the simulator cycles 9 kinds).
MALFORMED_COUNT = 12
#: The simulated order window starts this many days before now. A run spans
#: up to ~15 simulated days (lost parcels stay silent longest), so every event
#: time lies in the recent past, inside the worker's sanity window.
SIM_DAYS_BACK = 21
#: Seconds at the end of a timed run left for the worker to catch up.
CATCH_UP_S = 12.0
#: Print the first SAMPLE_FIRST alerts and notifications, then one in SAMPLE_EVERY.
SAMPLE_FIRST, SAMPLE_EVERY = 10, 50
DRAIN_TIMEOUT_S = 60.0
#: At most this long for the front door's queued pushes once production stopped.
FRONT_DRAIN_S = 20.0
#: At most this long for queued notifications after the alerts are recorded.
NOTIFY_DRAIN_S = 10.0
START_TIMEOUT_S = 60.0


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not MIN_PARCELS <= value <= MAX_PARCELS:
        raise argparse.ArgumentTypeError(f"must be {MIN_PARCELS}..{MAX_PARCELS}, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=positive_float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--parcels", type=_count, default=None, help="parcels to simulate (default: sized to the duration)"
    )
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        help=f"events per second (default: sized, about {DEFAULT_RATE:g})",
    )
    pace.add_argument(
        "--speed",
        type=positive_float,
        default=None,
        help="pace by event time instead: simulated seconds per second",
    )
    parser.add_argument(
        "--progress-every",
        type=positive_float,
        default=3.0,
        help="seconds between progress lines (default 3)",
    )


# --------------------------------------------------------------------------- planning (pure)


@dataclass(frozen=True)
class Plan:
    """How big the run is and how it is paced."""

    parcels: int
    #: seconds of production the pacing aims at (None: open-ended)
    produce_s: float | None
    rate: float | None
    speed: float | None


def plan_run(duration: float | None, parcels: int | None, rate: float | None, speed: float | None) -> Plan:
    """Size the run so that production ends ``CATCH_UP_S`` before the duration.

    >>> plan_run(60, None, None, None)
    Plan(parcels=3840, produce_s=48.0, rate=None, speed=None)
    >>> plan_run(None, None, None, None).parcels
    4000
    >>> plan_run(10, 500, 100.0, None)
    Plan(parcels=500, produce_s=5.0, rate=100.0, speed=None)
    """

    produce_s = None if duration is None else max(duration * 0.5, duration - CATCH_UP_S)
    if parcels is None:
        if produce_s is None:
            parcels = OPEN_ENDED_PARCELS
        else:
            per_s = rate if rate is not None else DEFAULT_RATE
            parcels = int(produce_s * per_s / EVENTS_PER_PARCEL)
        parcels = min(MAX_PARCELS, max(MIN_PARCELS, parcels))
    return Plan(parcels=parcels, produce_s=produce_s, rate=rate, speed=speed)


def pacing_rate(plan: Plan, n_events: int) -> float | None:
    """Events per second for ``n_events``: the given rate, or spread over the production time.

    ``None`` when pacing by ``--speed``.

    >>> pacing_rate(Plan(100, 10.0, None, None), 5000)
    500.0
    >>> pacing_rate(Plan(100, None, None, 3600.0), 5000) is None
    True
    """

    if plan.speed is not None:
        return None
    if plan.rate is not None:
        return plan.rate
    if plan.produce_s is None:
        return DEFAULT_RATE
    return max(1.0, n_events / plan.produce_s)


def sample_due(n: int) -> bool:
    """Print the n-th (1-based) alert or notification? The first few, then one in 50.

    >>> [n for n in range(1, 200) if sample_due(n)]
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 100, 150]
    """

    return n <= SAMPLE_FIRST or n % SAMPLE_EVERY == 0


@dataclass
class WorkerCounters:
    """The worker's own counters, summed over partitions and reasons."""

    consumed: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, status) -> n
    join: Counter[str] = field(default_factory=Counter)  # contract v2 join outcome -> scans

    @property
    def dead_letters(self) -> int:
        return sum(self.dlq.values())

    @property
    def alerts_total(self) -> int:
        return sum(self.alerts.values())


def parse_worker_metrics(text: str) -> WorkerCounters:
    """Read the counters the demo shows from a Prometheus text exposition."""

    from prometheus_client.parser import text_string_to_metric_families

    out = WorkerCounters()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "logiwatch_worker_events_consumed_total":
                out.consumed += int(s.value)
            elif s.name == "logiwatch_worker_dlq_total":
                out.dlq[s.labels.get("reason", "?")] += int(s.value)
            elif s.name == "logiwatch_worker_join_scans_total":
                out.join[s.labels.get("outcome", "?")] += int(s.value)
            elif s.name == "logiwatch_worker_alerts_emitted_total":
                out.alerts[(s.labels.get("type", "?"), s.labels.get("status", "?"))] += int(s.value)
    return out


def sum_samples(text: str, name: str) -> int:
    """The sum of one metric's samples in a Prometheus text exposition."""

    from prometheus_client.parser import text_string_to_metric_families

    return int(
        sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)
    )


# --------------------------------------------------------------------------- services


@dataclass
class Services:
    """The broker and Redis this run uses, and what it must stop afterwards."""

    bootstrap: str
    redis_url: str
    started_stack: bool = False
    own_redis: stack.RunningProcess | None = None

    def close(self, settings: Settings) -> None:
        if self.own_redis is not None:
            self.own_redis.stop(timeout=5.0)
            print(f"demo: stopped the redis-server it started ({self.own_redis.url})")
        if self.started_stack:
            stack.stack_down(settings, log=lambda line: print(f"demo: {line}"))


def _redis_for(settings: Settings, recorded: str | None) -> tuple[str, stack.RunningProcess | None]:
    if recorded and stack.redis_reachable(recorded):
        return recorded, None
    url, proc = stack.ensure_redis(
        stack.preferred_redis_url(settings), stack.free_port(), Path(settings.stack.state_dir)
    )
    if proc is not None:
        print(f"demo: started redis-server at {url} for this run")
    return url, proc


def find_services(settings: Settings) -> Services:
    """Reuse a running stack or broker, else start the embedded stack."""

    status = {s.name: s for s in stack.stack_status(settings)}
    kafka = status.get("kafka")
    if kafka is not None and kafka.running:
        print(f"demo: reusing the running stack (kafka {kafka.url})")
        redis = status.get("redis")
        url, proc = _redis_for(settings, redis.url if redis and redis.running else None)
        return Services(kafka.url, url, own_redis=proc)
    host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
    try:
        # A cheap connect first: probing a dead address with a Kafka client takes seconds.
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0).close()
        stack.wait_for_kafka(settings.kafka.bootstrap, timeout=5.0)
    except (OSError, ValueError, LogiwatchError):
        urls = stack.stack_up(settings, log=lambda line: print(f"demo: {line}"))
        return Services(urls["kafka"], urls["redis"], started_stack=True)
    print(f"demo: using the broker at {settings.kafka.bootstrap}")
    url, proc = _redis_for(settings, None)
    return Services(settings.kafka.bootstrap, url, own_redis=proc)


def run_settings(
    settings: Settings, services: Services, run_id: str, api_port: int, metrics_port: int
) -> Settings:
    """This run's settings: suffixed topics and groups, its own Redis prefix and ports."""

    data = settings.model_dump()
    suffix = f".demo-{run_id}"
    kafka = data["kafka"]
    kafka["bootstrap"] = services.bootstrap
    kafka["worker_group"] = f"{settings.kafka.worker_group}-demo-{run_id}"
    kafka["alerts_group"] = f"{settings.kafka.alerts_group}-demo-{run_id}"
    for kind in ("events", "alerts", "liability", "dlq", "shipments"):
        kafka["topics"][kind] = kafka["topics"][kind] + suffix
    data["redis"] = {"url": services.redis_url, "key_prefix": f"{settings.redis.key_prefix}demo-{run_id}:"}
    data["worker"]["metrics_port"] = metrics_port
    host = settings.alerts.api_host
    data["alerts"].update(api_port=api_port, public_url=f"http://{host}:{api_port}")
    return Settings.model_validate(data)


def _reachable(host: str) -> str:
    """Where to reach a server bound to ``host``: loopback for a wildcard address.

    >>> _reachable("0.0.0.0"), _reachable("10.1.2.3"), _reachable("::1")
    ('127.0.0.1', '10.1.2.3', '[::1]')
    """

    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class Worker:
    """The ``logiwatch worker`` subprocess of this run, configured through ``LOGIWATCH_*``."""

    def __init__(self, settings: Settings, log_path: Path, config: str | None) -> None:
        k, t = settings.kafka, settings.kafka.topics
        env = {
            **os.environ,
            "LOGIWATCH_KAFKA__BOOTSTRAP": k.bootstrap,
            "LOGIWATCH_KAFKA__TOPICS__EVENTS": t.events,
            "LOGIWATCH_KAFKA__TOPICS__ALERTS": t.alerts,
            "LOGIWATCH_KAFKA__TOPICS__DLQ": t.dlq,
            "LOGIWATCH_KAFKA__TOPICS__LIABILITY": t.liability,
            "LOGIWATCH_KAFKA__TOPICS__SHIPMENTS": t.shipments,
            "LOGIWATCH_KAFKA__WORKER_GROUP": k.worker_group,
            "LOGIWATCH_REDIS__URL": settings.redis.url,
            "LOGIWATCH_REDIS__KEY_PREFIX": settings.redis.key_prefix,
            "LOGIWATCH_WORKER__METRICS_PORT": str(settings.worker.metrics_port),
            "LOGIWATCH_STACK__STATE_DIR": str(settings.stack.state_dir),
            "LOGIWATCH_LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", "logiwatch.cli"] + (["--config", config] if config else []) + ["worker"]
        self.log_path = log_path
        self.metrics_url = f"http://{_reachable(settings.worker.metrics_host)}:{settings.worker.metrics_port}/metrics"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:  # the latest run's log only
            # Its own session: a Ctrl-C in the terminal reaches only the demo,
            # which then stops the worker in order (after the drain).
            self.popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def failed(self, what: str) -> LogiwatchError:
        return LogiwatchError(f"the worker {what} (exit status {self.popen.poll()}); see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (it checkpoints and commits), SIGKILL after ``timeout``."""

        stack.stop_pid(self.popen.pid, timeout=timeout, popen=self.popen)
        return self.popen.returncode


# --------------------------------------------------------------------------- the live run


@dataclass
class Live:
    """Everything the progress line and the summary show."""

    started: float = field(default_factory=time.monotonic)
    events_sent: int = 0
    produce_stats: Any = None  # logiwatch.producer.ProduceStats once production ended
    worker: WorkerCounters = field(default_factory=WorkerCounters)
    alerts_seen: int = 0
    alert_types: Counter[str] = field(default_factory=Counter)
    notifications: int = 0
    queued: int = 0  # notifications still waiting for delivery when the service stopped
    alerts_summary: dict[str, Any] = field(default_factory=dict)
    board_url: str = ""
    hurried: bool = False
    #: records the front door put on Kafka (registrations + slim scans), and its summary line
    front_records: int = 0
    front_line: str = ""
    front: Any = None  # logiwatch.frontdoor.FrontDoor while the run lasts

    def line(self) -> str:
        w = self.worker
        return (
            f"[{time.monotonic() - self.started:6.1f}s] produced {self.events_sent} events"
            f" | worker consumed {w.consumed} records (events+ticks), dlq {w.dead_letters}"
            f" | alerts {w.alerts_total} | notifications {self.notifications}"
        )


class Stoppable(Sequence[ScanEvent]):
    """The events, ending early once ``stop`` is set; counts what was handed out.

    A ``Sequence`` (with the full length) so that the producer spreads the
    malformed records evenly through the planned stream.
    """

    def __init__(self, events: Sequence[ScanEvent], stop: threading.Event, live: Live) -> None:
        self.events, self.stop, self.live = events, stop, live

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: Any) -> Any:
        return self.events[index]

    def __iter__(self) -> Iterator[ScanEvent]:
        from logiwatch.frontdoor import through_front_door

        front = self.live.front
        for ev in self.events:
            if self.stop.is_set():
                return
            if front is not None and through_front_door(ev.waybill_id):
                front.offer(ev)  # arrives as a signed feed push instead
                continue
            self.live.events_sent += 1
            yield ev


async def _http_get(session: Any, url: str) -> tuple[int, str]:
    import aiohttp

    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0, ""


async def _wait_for(
    check: Callable[[], Any], timeout: float, give_up: Callable[[], Exception | None] | None = None
) -> bool:
    """Await ``check()`` until truthy; False after ``timeout``; raise what ``give_up`` returns."""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        if give_up is not None and (exc := give_up()) is not None:
            raise exc
        await asyncio.sleep(0.25)
    return False


async def _read_alerts(settings: Settings, live: Live, done: asyncio.Event) -> None:
    """Print sample alerts as they land on this run's alerts topic."""

    from aiokafka import AIOKafkaConsumer

    from logiwatch.detectors.codec import decode_alert
    from logiwatch.detectors.errors import DecodeError

    # No group: the topic is this run's own, so reading it from the start sees only our alerts.
    consumer = AIOKafkaConsumer(
        settings.kafka.topics.alerts,
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not done.is_set():
            batches = await consumer.getmany(timeout_ms=300, max_records=2000)
            for records in batches.values():
                for rec in records:
                    try:
                        alert = decode_alert(rec.value or b"")
                    except DecodeError as exc:
                        print(f"  alert  (undecodable: {exc.reason})", flush=True)
                        continue
                    live.alerts_seen += 1
                    live.alert_types[alert.alert_type.value] += 1
                    if sample_due(live.alerts_seen):
                        where = alert.waybill_id or alert.node_id or "-"
                        print(
                            f"  alert  #{live.alerts_seen:<5} {alert.alert_type.value:<20} {alert.status.value:<8}"
                            f" {where:<14} {alert.summary}",
                            flush=True,
                        )
    finally:
        await consumer.stop()


async def _live(args: argparse.Namespace, plan: Plan, settings: Settings, worker: Worker, live: Live) -> None:
    import aiohttp

    from logiwatch.alerts.demo import run_alerts_demo
    from logiwatch.producer import produce_events
    from logiwatch.simulator import generate, malformed_lines

    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            hurry.set()
            print("demo: stopping now, without waiting for the drain", flush=True)
        else:
            stop.set()
            print("demo: stopping (Ctrl-C again to skip the drain)", flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    def report(line: str) -> None:
        if line.lstrip().startswith("webhook"):
            live.notifications += 1
            if sample_due(live.notifications):
                print(f"{line}  (#{live.notifications})", flush=True)
        else:
            print(line, flush=True)

    def worker_gone() -> Exception | None:
        return None if worker.alive() else worker.failed("exited during start-up")

    start_ms = (int(time.time() * 1000) // 86_400_000 - SIM_DAYS_BACK) * 86_400_000
    events, _labels = await loop.run_in_executor(
        None, lambda: generate("default", seed=args.seed, parcels=plan.parcels, start=start_ms)
    )
    raw = malformed_lines(args.seed, MALFORMED_COUNT, events[:500])
    rate = pacing_rate(plan, len(events))
    days = (events[-1].event_time - events[0].event_time) / 86_400_000 if events else 0.0

    alert_stop, reader_done, produce_stop = asyncio.Event(), asyncio.Event(), threading.Event()
    alerts_task = asyncio.create_task(run_alerts_demo(settings, alert_stop, report))
    reader: asyncio.Task[None] | None = None
    producer: asyncio.Future[Any] | None = None
    live.board_url = f"http://{settings.alerts.api_host}:{settings.alerts.api_port}/"
    health_url = live.board_url + "healthz"
    session = aiohttp.ClientSession()
    from logiwatch.frontdoor import SHARE, FrontDoor

    front = FrontDoor(settings)

    def service_gone() -> Exception | None:
        if alerts_task.done():
            exc = alerts_task.exception() if not alerts_task.cancelled() else None
            return LogiwatchError(f"the alert service stopped during start-up: {exc}")
        return worker_gone()

    async def worker_counters() -> WorkerCounters | None:
        status, text = await _http_get(session, worker.metrics_url)
        # The port answers before the worker has built its pipeline; it is up
        # once its own metrics are registered.
        up = status == 200 and "logiwatch_worker_" in text
        return parse_worker_metrics(text) if up else None

    async def scrape() -> None:
        if (got := await worker_counters()) is not None:
            live.worker = got

    try:

        async def board_ok() -> bool:
            return (await _http_get(session, live.board_url))[0] == 200

        if not await _wait_for(board_ok, START_TIMEOUT_S, service_gone):
            raise LogiwatchError(
                f"the CS board at {live.board_url} did not answer within {START_TIMEOUT_S:.0f} s"
            )
        print(f"board: OK {live.board_url}", flush=True)
        await front.start(session)
        live.front = front
        print(
            f"demo: front door: `logiwatch ingest serve` at {front.url} (metrics {front.url}/metrics); "
            f"1 parcel in {SHARE} arrives as signed AfterShip- or Kuaidi100-style pushes",
            flush=True,
        )
        if not await _wait_for(worker_counters, START_TIMEOUT_S, worker_gone):
            raise LogiwatchError(
                f"the worker's metrics did not answer within {START_TIMEOUT_S:.0f} s; see {worker.log_path}"
            )
        print(
            f"demo: worker up (pid {worker.popen.pid}, metrics {worker.metrics_url}, log {worker.log_path})"
        )
        pace = f"{rate:.0f} events/s" if rate is not None else f"{plan.speed:g}x event time"
        print(
            f"demo: producing {len(events)} events of {plan.parcels} parcels ({days:.1f} simulated days) "
            f"at {pace}, ticks every {TICK_EVERY_MS // 60_000} min of event time, {len(raw)} malformed records",
            flush=True,
        )
        reader = asyncio.create_task(_read_alerts(settings, live, reader_done))
        live.started = time.monotonic()
        producer = loop.run_in_executor(
            None,
            lambda: produce_events(
                settings.kafka.bootstrap,
                settings.kafka.topics.events,
                Stoppable(events, produce_stop, live),
                rate=rate,
                speed=plan.speed,
                tick_every_ms=TICK_EVERY_MS,
                num_partitions=settings.kafka.topics.events_partitions,
                extra_raw=raw,
                # A final tick at the first event time moves no clock: a run cut
                # short must not declare every parcel in transit lost.
                final_tick_ms=events[0].event_time if events else None,
            ),
        )
        deadline = None if args.duration is None else live.started + args.duration
        next_line = time.monotonic() + args.progress_every
        announced = False
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            wait = min(next_line, deadline or next_line) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, wait))
            if not worker.alive():
                raise worker.failed("exited during the demo")
            if alerts_task.done():
                raise LogiwatchError(f"the alert service stopped during the demo: {alerts_task.exception()}")
            if producer.done() and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]  # a LogiwatchError from produce_events
            if producer.done() and not announced:
                announced = True
                print(
                    "demo: all events produced" + ("; Ctrl-C to stop" if deadline is None else ""), flush=True
                )
            if time.monotonic() >= next_line:
                next_line += args.progress_every
                await scrape()
                print(live.line(), flush=True)

        # ---- drain: stop producing, let the worker and the alert service catch up
        produce_stop.set()
        live.produce_stats = await producer
        stats = live.produce_stats
        if not await front.drain(FRONT_DRAIN_S):
            print("demo: the front door did not post every push in time", flush=True)
        live.front_records = front.produced_scans() + front.registrations
        live.front_line = front.summary()
        total = stats.events + stats.ticks + stats.raw + live.front_records
        print(
            f"demo: stopped producing ({stats.events} events, {stats.ticks} ticks, {stats.raw} malformed); draining",
            flush=True,
        )

        async def drained() -> bool:
            await scrape()
            return hurry.is_set() or live.worker.consumed >= total

        async def alerts_read() -> bool:
            return hurry.is_set() or live.alerts_seen >= live.worker.alerts_total

        async def service_caught_up() -> bool:
            status, text = await _http_get(session, health_url)
            return hurry.is_set() or (
                status == 200 and json.loads(text).get("consumed", 0) >= live.alerts_seen
            )

        await _wait_for(drained, DRAIN_TIMEOUT_S)
        await _wait_for(alerts_read, 20.0)
        await _wait_for(service_caught_up, 30.0)
        # Notifications wait out the route's group_wait (2 s) and the receiver's
        # rate limit (10/s): go on once none arrived for 3 s, or after 10 s.
        quiet_since, seen, give_up = time.monotonic(), live.notifications, time.monotonic() + NOTIFY_DRAIN_S
        while not hurry.is_set() and time.monotonic() - quiet_since < 3.0 and time.monotonic() < give_up:
            await asyncio.sleep(0.25)
            if live.notifications != seen:
                quiet_since, seen = time.monotonic(), live.notifications
        await scrape()
        status, text = await _http_get(session, live.board_url + "metrics")
        if status == 200:
            live.queued = sum_samples(text, "logiwatch_alerts_queue_depth")
        print(live.line(), flush=True)
        live.hurried = hurry.is_set()
    finally:
        produce_stop.set()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer
        alert_stop.set()
        reader_done.set()
        results = await asyncio.gather(alerts_task, *([reader] if reader else []), return_exceptions=True)
        live.front = None
        with contextlib.suppress(Exception):
            await front.close()
        await session.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if isinstance(results[0], BaseException):
        raise LogiwatchError(f"the alert service failed: {type(results[0]).__name__}: {results[0]}")
    live.alerts_summary = results[0] if isinstance(results[0], dict) else {}


# --------------------------------------------------------------------------- the command


def _cleanup(settings: Settings, log: Callable[[str], None]) -> None:
    """Delete the run's topics, Redis keys and Faust data dir (all named after the run)."""

    topics = list(stack.stack_topics(settings))
    try:
        stack.delete_topics(settings.kafka.bootstrap, topics)
    except Exception as exc:  # kafka-python's own error tree; cleanup must not hide the result
        log(f"demo: could not delete the run's topics ({exc})")
    try:
        stack.delete_redis_prefix(settings.redis.url, settings.redis.key_prefix)
    except Exception as exc:  # redis.RedisError or a refused connection
        log(f"demo: could not delete the run's Redis keys ({exc})")
    shutil.rmtree(Path(settings.stack.state_dir) / "faust" / settings.kafka.worker_group, ignore_errors=True)


def _summary(live: Live) -> tuple[list[str], int]:
    """The summary lines and the number of produced records the worker did not account for."""

    s, w = live.produce_stats, live.worker
    events, ticks, malformed = (s.events, s.ticks, s.raw) if s is not None else (live.events_sent, 0, 0)
    events += live.front_records  # registrations and slim scans from the front door
    produced = events + malformed
    consumed_events = w.consumed - ticks - w.dead_letters
    missing = events + ticks + malformed - w.consumed
    elapsed = time.monotonic() - live.started
    firing = Counter({t: n for (t, st), n in w.alerts.items() if st == "firing"})
    resolved = sum(n for (_, st), n in w.alerts.items() if st == "resolved")
    by_type = ", ".join(f"{t} {n}" for t, n in firing.most_common()) or "none"
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(w.dlq.items())) or "none"
    a = live.alerts_summary
    liability = ", ".join(f"{k} {v:.2f}" for k, v in a.get("by_party_yuan", {}).items()) or "none"
    lines = [
        f"demo summary: {elapsed:.1f}s, produced {produced} ({events} events, {malformed} malformed), "
        f"consumed {consumed_events}, dead letters {w.dead_letters}, missing {missing}",
        f"  worker:        {w.consumed} records consumed = {consumed_events} events + {ticks} ticks + "
        f"{w.dead_letters} dead letters ({reasons})",
        f"  alerts:        {w.alerts_total} emitted ({sum(firing.values())} firing, {resolved} resolved), "
        f"{live.alerts_seen} read back; firing by type: {by_type}",
        f"  notifications: {a.get('notifications', live.notifications)} received and verified "
        f"({a.get('bad_signatures', 0)} bad signatures)"
        + (f", {live.queued} still queued (the receiver is rate-limited)" if live.queued else ""),
        f"  liability (yuan, by party): {liability}",
        f"  CS board:      {live.board_url} (answered during the run; it stops with the demo)",
        f"  front door:    {live.front_line or 'did not run'} "
        f"({live.front_records} of the {events} events above); the worker joined "
        f"{w.join.get('joined', 0)} slim scans to their registrations, {w.join.get('defaulted', 0)} went on "
        f"without one",
    ]
    return lines, missing


def run(args: argparse.Namespace, settings: Settings) -> int:
    plan = plan_run(args.duration, args.parcels, args.rate, args.speed)
    if plan.parcels < MIN_PARCELS:  # unreachable through argparse; guards programmatic callers
        raise ConfigError(f"--parcels must be at least {MIN_PARCELS}")
    # Fail on a bad rules file before anything starts (the alert service loads it again).
    from logiwatch.alerts.liability import load_rules

    load_rules(settings.alerts.liability_rules_file)
    stack.quiet_client_logs()
    # The service's own "up" line would repeat the board URL the demo prints.
    logging.getLogger("logiwatch.alerts.service").setLevel(logging.WARNING)
    # kafka-python warns when one of its I/O tasks runs >100 ms; on a busy
    # 2-core machine running the whole pipeline that is expected, not news.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    services = find_services(settings)
    live = Live()
    try:
        run_id = uuid.uuid4().hex[:8]
        rs = run_settings(
            settings, services, run_id, api_port=stack.free_port(), metrics_port=stack.free_port()
        )
        stack.create_topics(services.bootstrap, stack.stack_topics(rs))
        print(
            f"demo: run {run_id}: topics {rs.kafka.topics.events} (+alerts, liability, dlq), "
            f"Redis {rs.redis.url} prefix {rs.redis.key_prefix}",
            flush=True,
        )
        worker: Worker | None = None
        try:
            worker = Worker(rs, Path(rs.stack.state_dir) / "demo-worker.log", getattr(args, "config", None))
            asyncio.run(_live(args, plan, rs, worker, live))
        finally:
            if worker is not None:
                code = worker.stop()
                print(f"demo: worker stopped (exit status {code})", flush=True)
            _cleanup(rs, print)
    finally:
        services.close(settings)
    lines, missing = _summary(live)
    print("\n".join(lines), flush=True)
    if missing and not live.hurried:
        raise LogiwatchError(
            f"the worker did not account for {missing} produced records within {DRAIN_TIMEOUT_S:.0f} s "
            f"of stopping; see {worker.log_path if worker else 'its log'}"
        )
    return 0
