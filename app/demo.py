"""``logiwatch demo``: the whole pipeline on the embedded stack, live, then a summary.

Everything the demo does, outside the services it shows (the command module
only parses its options). :func:`run_demo` starts (or reuses) the embedded
stack, gives this run its own topics (``<topic>.demo-<run>``), consumer
groups and Redis key prefix so that repeated demos on one stack never see
each other's data, and then runs the real pieces side by side: ``logiwatch
worker`` as a subprocess (the Faust stream processor), the alert service in
this process with a local webhook receiver that verifies every signature
(:func:`run_alerts_demo`), and a kafka-python producer that plays the
simulator's default scenario compressed so that about twelve simulated days
pass during the run, with clock ticks in every partition (silent parcels'
stalls fire without new scans) and a few malformed records for the
dead-letter topic. One parcel in ten comes through the front door instead
(:mod:`logiwatch.frontdoor`): its registration goes to the run's shipments
topic and its scans arrive as signed AfterShip- and Kuaidi100-style history
resends through the real ``logiwatch ingest serve`` receiver, which the
worker joins to the registrations. A progress line every few seconds reads the worker's own
Prometheus counters; sample alerts and notifications are printed as they
arrive. After the duration (or Ctrl-C) it stops producing, lets the worker
and the alert service drain, stops everything it started, deletes the run's
topics and keys, and prints the summary: records in and out, dead letters,
alerts by type, notifications, liability by party, the CS board URL and the
front door's pushes and joins. A
component that fails to start, or a worker that does not account for every
produced record, ends the run with one line (and the log path) and exit
status 1.

Reading order: the sizing rules (pure, with examples), the services and the
worker subprocess, the verifying receiver and the alert service, the live
run (:class:`LiveRun`: start, produce, drain, stop), the summary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logiwatch import stack
from logiwatch.config import Settings
from logiwatch.demo_services import DemoReceiver, Worker
from logiwatch.detectors.model import AnomalyType, ScanEvent
from logiwatch.errors import ConfigError, LogiwatchError
from logiwatch.redisconn import redact
from logiwatch.streams.metrics import WorkerCounters, parse_worker_metrics, sum_samples
from logiwatch.watchdog import Watchdog

if TYPE_CHECKING:
    pass

# The alert service, aiohttp and the simulator are imported where they are used, so
# that every `logiwatch` command (the CLI reads each command's options) starts fast.

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
#: how long past --duration the demo may take to drain and clean up before its watchdog ends it
DEADLINE_GRACE_S = 30.0
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoOptions:
    """What ``logiwatch demo`` was asked for (see its ``--help``)."""

    duration: float | None = None
    parcels: int | None = None
    seed: int = 1
    rate: float | None = None
    speed: float | None = None
    progress_every: float = 3.0
    config: str | None = None  # the --config file, handed on to the worker subprocess


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


# --------------------------------------------------------------------------- services


def run_settings(
    settings: Settings, services: stack.Services, run_id: str, api_port: int, metrics_port: int
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


async def run_alerts_demo(settings: Settings, stop: asyncio.Event, report: Callable[[str], Any] = print) -> dict[str, Any]:
    """Serve alerts to a local verifying receiver until ``stop``; return and print the summary."""

    from logiwatch.alerts.liability import load_rules
    from logiwatch.alerts.routing import parse_routes
    from logiwatch.alerts.service import AlertService

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver = DemoReceiver(secret, report)
    await receiver.start()
    routing = parse_routes(
        {
            "group_wait_s": 2,
            "receivers": [
                {
                    "name": "demo-cs",
                    "url": receiver.url,
                    "secret": secret,
                    "allow_private_networks": True,
                    "rate_per_s": 200,
                }
            ],
            "routes": [{"receiver": "demo-cs", "types": list(NOTIFY_TYPES)}],
        }
    )
    service = AlertService(settings, routing, load_rules(settings.alerts.liability_rules_file))
    try:
        await service.run(stop)
    finally:
        await receiver.stop()
    totals = await _totals(settings)
    report(f"alerts: {receiver.received} notifications received and verified ({receiver.bad_signatures} bad signatures)")
    report("liability (yuan): " + (", ".join(f"{k} {v:.2f}" for k, v in totals["by_party_yuan"].items()) or "none"))
    return {"notifications": receiver.received, "bad_signatures": receiver.bad_signatures, **totals}


#: The alert types the demo routes to its receiver: all but the early warning
#: ``predicted_late``, which stays on the board.
NOTIFY_TYPES = tuple(t.value for t in AnomalyType if t != AnomalyType.PREDICTED_LATE)


async def _totals(settings: Settings) -> dict[str, Any]:
    from logiwatch.alerts.ledger import Ledger
    from logiwatch.alerts.liability import load_rules
    from logiwatch.redisconn import connect

    client = connect(settings.redis.url)
    try:
        t = await Ledger(client, settings.redis.key_prefix, load_rules(settings.alerts.liability_rules_file)).totals()
    finally:
        await client.aclose()
    return {"by_party_yuan": {k: v / 100 for k, v in sorted(t.by_party.items())}, "by_rule_yuan": {k: v / 100 for k, v in sorted(t.by_rule.items())}}


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
    #: the front door (logiwatch.frontdoor.FrontDoor) while the run lasts
    front: Any = None
    #: records the front door put on Kafka (registrations + new slim scans) and its summary line
    front_records: int = 0
    front_line: str = ""
    #: the worker's contract-v2 join outcomes (joined, waited, defaulted) -> scans
    join: Counter[str] = field(default_factory=Counter)

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


class LiveRun:
    """One run on one event loop: start, produce, drain, stop (:meth:`run`).

    The worker is a subprocess; the alert service, the alert reader and the
    producer (in a thread) are tasks of this loop. The first Ctrl-C stops
    producing and drains, a second one skips the drain.
    """

    def __init__(self, options: DemoOptions, plan: Plan, settings: Settings, worker: Worker, live: Live) -> None:
        self.options, self.plan, self.settings, self.worker, self.live = options, plan, settings, worker, live
        self.stop, self.hurry = asyncio.Event(), asyncio.Event()
        self.alert_stop, self.reader_done, self.produce_stop = asyncio.Event(), asyncio.Event(), threading.Event()
        self.alerts_task: asyncio.Task[dict[str, Any]] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.producer: asyncio.Future[Any] | None = None
        self.session: Any = None  # aiohttp.ClientSession, made on the loop
        self.front: Any = None  # logiwatch.frontdoor.FrontDoor, made on the loop
        live.board_url = f"http://{settings.alerts.api_host}:{settings.alerts.api_port}/"

    async def run(self) -> None:
        import aiohttp

        from logiwatch.sim.traffic import generate, malformed_lines

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        start_ms = (int(time.time() * 1000) // 86_400_000 - SIM_DAYS_BACK) * 86_400_000
        events, _labels = await loop.run_in_executor(
            None, lambda: generate("default", seed=self.options.seed, parcels=self.plan.parcels, start=start_ms)
        )
        raw = malformed_lines(self.options.seed, MALFORMED_COUNT, events[:500])
        self.alerts_task = asyncio.create_task(run_alerts_demo(self.settings, self.alert_stop, self._report))
        self.session = aiohttp.ClientSession()
        from logiwatch.frontdoor import FrontDoor

        self.front = FrontDoor(self.settings, report=lambda line: print(line, flush=True), sample=sample_due)
        try:
            await self._start()
            await self._produce(events, raw)
            await self._drain()
        finally:
            results = await self._close()
        if isinstance(results[0], BaseException):
            raise LogiwatchError(f"the alert service failed: {type(results[0]).__name__}: {results[0]}")
        self.live.alerts_summary = results[0] if isinstance(results[0], dict) else {}

    # ------------------------------------------------------------------ helpers

    def _on_signal(self) -> None:
        if self.stop.is_set():
            self.hurry.set()
            print("demo: stopping now, without waiting for the drain", flush=True)
        else:
            self.stop.set()
            print("demo: stopping (Ctrl-C again to skip the drain)", flush=True)

    def _report(self, line: str) -> None:
        live = self.live
        if line.lstrip().startswith("webhook"):
            live.notifications += 1
            if sample_due(live.notifications):
                print(f"{line}  (#{live.notifications})", flush=True)
        else:
            print(line, flush=True)

    def _worker_gone(self) -> Exception | None:
        return None if self.worker.alive() else self.worker.failed("exited during start-up")

    def _service_gone(self) -> Exception | None:
        task = self.alerts_task
        if task is not None and task.done():
            exc = task.exception() if not task.cancelled() else None
            return LogiwatchError(f"the alert service stopped during start-up: {exc}")
        return self._worker_gone()

    async def _worker_counters(self) -> WorkerCounters | None:
        status, text = await _http_get(self.session, self.worker.metrics_url)
        # The port answers before the worker has built its pipeline; it is up
        # once its own metrics are registered.
        up = status == 200 and "logiwatch_worker_" in text
        if up:
            from logiwatch.frontdoor import join_outcomes

            self.live.join = join_outcomes(text)
        return parse_worker_metrics(text) if up else None

    async def _scrape(self) -> None:
        if (got := await self._worker_counters()) is not None:
            self.live.worker = got

    # ------------------------------------------------------------------ the steps

    async def _start(self) -> None:
        """Wait for the CS board and the worker's metrics (a component that died: its error)."""

        board = self.live.board_url

        async def board_ok() -> bool:
            return (await _http_get(self.session, board))[0] == 200

        if not await _wait_for(board_ok, START_TIMEOUT_S, self._service_gone):
            raise LogiwatchError(f"the CS board at {board} did not answer within {START_TIMEOUT_S:.0f} s")
        print(f"board: OK {board}", flush=True)
        w = self.worker
        if not await _wait_for(self._worker_counters, START_TIMEOUT_S, self._worker_gone):
            raise LogiwatchError(
                f"the worker's metrics did not answer within {START_TIMEOUT_S:.0f} s; see {w.log_path}"
            )
        print(f"demo: worker up (pid {w.popen.pid}, metrics {w.metrics_url}, log {w.log_path})")
        from logiwatch.frontdoor import SHARE

        await self.front.start(self.session)
        self.live.front = self.front
        print(
            f"demo: front door: `logiwatch ingest serve` at {self.front.url} (metrics {self.front.url}/metrics); "
            f"1 parcel in {SHARE} arrives as signed AfterShip- or Kuaidi100-style pushes",
            flush=True,
        )

    async def _produce(self, events: list[ScanEvent], raw: list[bytes]) -> None:
        """Produce (paced, in a thread) until the duration ends or Ctrl-C; a progress line meanwhile."""

        from logiwatch.producer import produce_events

        plan, settings, live, options = self.plan, self.settings, self.live, self.options
        rate = pacing_rate(plan, len(events))
        days = (events[-1].event_time - events[0].event_time) / 86_400_000 if events else 0.0
        pace = f"{rate:.0f} events/s" if rate is not None else f"{plan.speed:g}x event time"
        print(
            f"demo: producing {len(events)} events of {plan.parcels} parcels ({days:.1f} simulated days) "
            f"at {pace}, ticks every {TICK_EVERY_MS // 60_000} min of event time, {len(raw)} malformed records",
            flush=True,
        )
        self.reader = asyncio.create_task(_read_alerts(settings, live, self.reader_done))
        live.started = time.monotonic()
        self.producer = producer = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: produce_events(
                settings.kafka.bootstrap,
                settings.kafka.topics.events,
                Stoppable(events, self.produce_stop, live),
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
        deadline = None if options.duration is None else live.started + options.duration
        next_line = time.monotonic() + options.progress_every
        announced = False
        while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
            wait = min(next_line, deadline or next_line) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, wait))
            self._check_running()
            if producer.done() and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]  # a LogiwatchError from produce_events
            if producer.done() and not announced:
                announced = True
                print("demo: all events produced" + ("; Ctrl-C to stop" if deadline is None else ""), flush=True)
            if time.monotonic() >= next_line:
                next_line += options.progress_every
                await self._scrape()
                print(live.line(), flush=True)

    def _check_running(self) -> None:
        if not self.worker.alive():
            raise self.worker.failed("exited during the demo")
        if self.alerts_task is not None and self.alerts_task.done():
            raise LogiwatchError(f"the alert service stopped during the demo: {self.alerts_task.exception()}")

    async def _drain(self) -> None:
        """Stop producing; let the worker, the alert reader, the service and the deliveries catch up."""

        live, hurry = self.live, self.hurry
        self.produce_stop.set()
        assert self.producer is not None
        live.produce_stats = stats = await self.producer
        if not await self.front.drain(FRONT_DRAIN_S):
            print("demo: the front door did not post every push in time", flush=True)
        live.front_records = self.front.records()
        live.front_line = self.front.summary()
        total = stats.events + stats.ticks + stats.raw + live.front_records
        print(
            f"demo: stopped producing ({stats.events} events, {stats.ticks} ticks, {stats.raw} malformed); draining",
            flush=True,
        )

        async def drained() -> bool:
            await self._scrape()
            return hurry.is_set() or live.worker.consumed >= total

        async def alerts_read() -> bool:
            return hurry.is_set() or live.alerts_seen >= live.worker.alerts_total

        async def service_caught_up() -> bool:
            status, text = await _http_get(self.session, live.board_url + "healthz")
            return hurry.is_set() or (status == 200 and json.loads(text).get("consumed", 0) >= live.alerts_seen)

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
        await self._scrape()
        status, text = await _http_get(self.session, live.board_url + "metrics")
        if status == 200:
            live.queued = sum_samples(text, "logiwatch_alerts_queue_depth")
        print(live.line(), flush=True)
        live.hurried = hurry.is_set()

    async def _close(self) -> list[Any]:
        """Stop the producer, the alert service and the reader; the service's result comes first."""

        self.produce_stop.set()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer
        self.alert_stop.set()
        self.reader_done.set()
        assert self.alerts_task is not None
        results = await asyncio.gather(self.alerts_task, *([self.reader] if self.reader else []), return_exceptions=True)
        self.live.front = None
        if self.front is not None:
            with contextlib.suppress(Exception):
                await self.front.close()
        await self.session.close()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        return results


# --------------------------------------------------------------------------- the summary and the run


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
    events += live.front_records  # registrations and new slim scans from the front door
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
        f"  front door:    {live.front_line or 'did not run'} ({live.front_records} of the {events} events "
        f"above); the worker joined {live.join.get('joined', 0)} slim scans to their registrations, "
        f"{live.join.get('defaulted', 0)} went on without one",
    ]
    return lines, missing


def _demo_log(line: str) -> None:
    print(f"demo: {line}", flush=True)


def run_demo(options: DemoOptions, settings: Settings) -> int:
    """The whole demo; 0 when every produced record was accounted for, else ``LogiwatchError``."""

    plan = plan_run(options.duration, options.parcels, options.rate, options.speed)
    if plan.parcels < MIN_PARCELS:  # unreachable through argparse; guards programmatic callers
        raise ConfigError(f"--parcels must be at least {MIN_PARCELS}")
    from logiwatch.alerts.liability import load_rules

    # Fail on a bad rules file before anything starts (the alert service loads it again).
    load_rules(settings.alerts.liability_rules_file)
    stack.quiet_client_logs()
    # The service's own "up" line would repeat the board URL the demo prints.
    logging.getLogger("logiwatch.alerts.service").setLevel(logging.WARNING)
    # kafka-python warns when one of its I/O tasks runs >100 ms; on a busy
    # 2-core machine running the whole pipeline that is expected, not news.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    # The backstop of --duration (and of a broker or Redis that goes away): see logiwatch.watchdog.
    watchdog = Watchdog("demo", options.duration, grace_s=DEADLINE_GRACE_S, log=lambda line: print(line, flush=True))
    watchdog.start()
    services = stack.find_services(settings, _demo_log)
    watchdog.watch(f"the broker at {services.bootstrap}", lambda: stack.broker_reachable(services.bootstrap))
    watchdog.watch(f"the Redis at {redact(services.redis_url)}", lambda: stack.redis_reachable(services.redis_url))
    watchdog.start()
    live = Live()
    try:
        run_id = uuid.uuid4().hex[:8]
        rs = run_settings(
            settings, services, run_id, api_port=stack.free_port(), metrics_port=stack.free_port()
        )
        stack.create_topics(services.bootstrap, stack.stack_topics(rs))
        print(
            f"demo: run {run_id}: topics {rs.kafka.topics.events} (+alerts, liability, dlq, shipments), "
            f"Redis {rs.redis.url} prefix {rs.redis.key_prefix}",
            flush=True,
        )
        worker: Worker | None = None
        try:
            worker = Worker(rs, Path(rs.stack.state_dir) / "demo-worker.log", options.config)
            watchdog.on_exit(worker.popen.kill)
            asyncio.run(LiveRun(options, plan, rs, worker, live).run())
        finally:
            if worker is not None:
                code = worker.stop()
                print(f"demo: worker stopped (exit status {code})", flush=True)
            _cleanup(rs, print)
    finally:
        services.close(settings, _demo_log)
        watchdog.close()
    lines, missing = _summary(live)
    print("\n".join(lines), flush=True)
    if missing and not live.hurried:
        raise LogiwatchError(
            f"the worker did not account for {missing} produced records within {DRAIN_TIMEOUT_S:.0f} s "
            f"of stopping; see {worker.log_path if worker else 'its log'}"
        )
    return 0
