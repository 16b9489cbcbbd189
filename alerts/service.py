"""``logiwatch alerts serve``: the consumer, the pipeline, the delivery
workers, the ledger publisher and the HTTP API on one asyncio loop.

The kafka-python consumer (group ``kafka.alerts_group``) runs its blocking
calls on a single-thread executor; each polled partition batch is decoded,
run through the pipeline and the ledger (each reads once and writes once, in
a MULTI/EXEC, so a batch costs about four Redis round trips; both are
idempotent by key) and only then are the offsets committed. A crash at any
point re-delivers at most the uncommitted batch, which dedup recognises by
alert id and revision, so nothing is lost and nothing is re-notified.
Undecodable records are kept in the hash ``<prefix>alerts:bad`` (source
position -> reason and bytes) and
counted, never dropped silently.

High availability: any number of instances may run on one prefix and one
consumer group. The group splits the alert partitions (each instance records
what it consumes); the shared work is held through leases
(:mod:`logiwatch.alerts.lease`, kept by :class:`~logiwatch.alerts.ha.LeaseKeeper`):
``deliver:<receiver>`` (that receiver's queue and retries), ``escalate`` (the
escalation timers), ``liability`` (the outbox publisher) and, when configured,
``alertmanager`` (the forwarder). See the HA section of ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import time
import uuid
from functools import partial
from typing import Any

import redis
from aiohttp import web
from kafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry

from logiwatch.alerts.alertmanager import AlertmanagerForwarder
from logiwatch.alerts.api import ApiContext, ApiRunner, build_app
from logiwatch.alerts.console_scans import ScanReader
from logiwatch.alerts.delivery import Deliverer
from logiwatch.alerts.ha import LeaseKeeper, Work
from logiwatch.alerts.lease import FENCED, Lease, Leases
from logiwatch.alerts.ledger import Ledger
from logiwatch.alerts.liability import RuleSet, load_rules
from logiwatch.alerts.metrics import AlertMetrics, RedisCollector
from logiwatch.alerts.pipeline import DecisionOutcome, Pipeline
from logiwatch.alerts.routing import EMPTY, RoutingConfig, load_routes
from logiwatch.alerts.store import AlertStore, now_ms
from logiwatch.config import Settings
from logiwatch.detectors.codec import decode_alert
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.hub_stage import LINKED_TYPES, link_incident
from logiwatch.detectors.model import Alert, AnomalyType
from logiwatch.errors import ConfigError, LogiwatchError
from logiwatch.redisconn import connect, connect_sync, redact

log = logging.getLogger(__name__)


def load_config(settings: Settings) -> tuple[RoutingConfig, RuleSet]:
    """Routes and rules, validated before anything connects (one-line ``ConfigError``)."""

    routes_file = settings.alerts.routes_file
    routing = load_routes(routes_file) if routes_file else EMPTY
    if routes_file is None:
        log.warning("alerts.routes_file is not set: alerts are recorded but no webhook is sent")
    return routing, load_rules(settings.alerts.liability_rules_file)


class AlertService:
    """Wires the parts; :meth:`handle` is the per-alert path, :meth:`run` the process."""

    def __init__(self, settings: Settings, routing: RoutingConfig, rules: RuleSet, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = AlertMetrics(self.registry)
        self.redis = connect(settings.redis.url)
        self.sync_redis = connect_sync(settings.redis.url)
        self.registry.register(RedisCollector(self.sync_redis, settings.redis.key_prefix))
        self.store = AlertStore(self.redis, settings.redis.key_prefix)
        self.pipeline = Pipeline(self.store, routing)
        self.ledger = Ledger(self.redis, settings.redis.key_prefix, rules)
        self.deliverer = Deliverer(self.store, routing, self.metrics, settings.alerts.public_url)
        am = settings.alerts.alertmanager_url
        self.alertmanager = (
            AlertmanagerForwarder(self.store, am, settings.alerts.public_url, settings.alerts.alertmanager_resend_s) if am else None
        )
        self.status: dict[str, Any] = {"consumer": "starting", "consumed": 0}
        self.instance = settings.alerts.instance_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.leases = Leases(self.redis, settings.redis.key_prefix, self.instance, settings.alerts.lease_ttl_s)
        work: dict[str, Work] = {Deliverer.lease_name(r.name): partial(self.deliverer.own, r) for r in routing.receivers.values()}
        work["escalate"] = self._escalate
        work["liability"] = self._publish_liability
        if self.alertmanager is not None:
            work["alertmanager"] = self._forward_to_alertmanager
        self.keeper = LeaseKeeper(self.leases, work, self.metrics, self.status)
        self.api_url = ""
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka")

    async def handle(self, alert: Alert) -> None:
        """Record one alert durably: pipeline (dedup, notifications) then ledger."""

        await self.handle_batch([alert])

    async def handle_batch(self, alerts: list[Alert]) -> None:
        """Record a batch durably: one pipeline transaction, then the ledger, alert by alert."""

        alerts = await self._link_incidents(alerts)
        results = await self.pipeline.process_batch(alerts, now_ms())
        woken: set[str] = set()
        for alert, (decision, notifs) in zip(alerts, results, strict=True):
            self.metrics.received.labels(alert.alert_type.value, alert.status.value).inc()
            self.metrics.decisions.labels(decision.outcome).inc()
            if decision.suppressed and decision.outcome == DecisionOutcome.NEW:
                self.metrics.decisions.labels(decision.suppressed).inc()
            woken.update(n.receiver for n in notifs)
            if alert.alert_type is AnomalyType.HUB_INCIDENT and decision.record is not None:
                # stalls it names that arrived before it join it now (Pipeline.link_earlier)
                linked = await self.pipeline.link_earlier(alert, now_ms())
                if linked:
                    self.metrics.decisions.labels("linked_later").inc(len(linked))
        for e in await self.ledger.apply_batch(alerts):
            self.metrics.ledger_entries.labels(e.kind, e.party).inc()
        for receiver in woken:
            self.deliverer.wake(receiver)

    async def _link_incidents(self, alerts: list[Alert]) -> list[Alert]:
        """Stalls at a hub with an open incident join it (``hub_stage.link_incident``): the stage scores
        incidents over all partitions, so the parcel partitions cannot set the link themselves."""

        if not any(a.alert_type in LINKED_TYPES and not a.incident_id for a in alerts):
            return alerts
        known = {r.alert.alert_id: r.alert for r in await self.store.open_incidents()}
        known.update((a.alert_id, a) for a in alerts if a.alert_type is AnomalyType.HUB_INCIDENT)
        return [link_incident(a, known.values()) for a in alerts]

    async def handle_records(self, records: list[tuple[bytes | None, str]]) -> None:
        """Decode (undecodable records are kept in ``alerts:bad`` and counted) and handle a batch."""

        alerts: list[Alert] = []
        for value, where in records:
            try:
                alerts.append(decode_alert(value or b""))
            except DecodeError as exc:
                self.metrics.bad_records.labels(exc.reason).inc()
                # keyed by topic/partition@offset, so a retried batch stores it once
                await self.redis.hset(self.store.key("bad"), where, f"{exc.reason}: {str(exc)[:200]} | {(value or b'')[:2000]!r}")
                log.warning("undecodable alert record at %s: %s", where, exc.reason)
        if alerts:
            await self.handle_batch(alerts)

    # ------------------------------------------------------------------ process

    async def start_api(self) -> web.AppRunner:
        ctx = ApiContext(
            store=self.store,
            pipeline=self.pipeline,
            ledger=self.ledger,
            metrics=self.metrics,
            registry=self.registry,
            token=self.settings.alerts.api_token.get_secret_value(),
            status=self.status,
            scans=ScanReader.from_settings(self.redis, self.settings),
        )
        runner = ApiRunner(build_app(ctx), access_log=None)
        await runner.setup()
        host, port = self.settings.alerts.api_host, self.settings.alerts.api_port
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise LogiwatchError(
                f"cannot serve the API on {host}:{port}: {exc.strerror or exc} (set alerts.api_port to a free port)"
            ) from None
        server: Any = site._server  # aiohttp exposes the bound port only here (needed for port 0)
        port = server.sockets[0].getsockname()[1] if server is not None and server.sockets else self.settings.alerts.api_port
        self.api_url = f"http://{self.settings.alerts.api_host}:{port}"
        return runner

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer

        k = self.settings.kafka
        return KafkaConsumer(
            k.topics.alerts,
            bootstrap_servers=k.bootstrap,
            group_id=k.alerts_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_records=500,
            client_id=f"logiwatch-alerts-{self.instance}",
        )

    async def _consume(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        consumer = await loop.run_in_executor(self._executor, self._consumer)
        try:
            while not stop.is_set():
                batches = await loop.run_in_executor(self._executor, lambda: consumer.poll(timeout_ms=300))
                self.status["consumer"] = "assigned" if consumer.assignment() else "waiting"
                if not batches:
                    continue
                for tp, records in batches.items():
                    raw = [(rec.value, f"{tp.topic}/{tp.partition}@{rec.offset}") for rec in records]
                    # a partially applied batch is harmless to retry: dedup and ledger keys make it idempotent
                    await self._retrying(lambda raw=raw: self.handle_records(raw), stop)
                    self.status["consumed"] += len(records)
                # Everything in the batch is in Redis now: only then move the offsets.
                try:
                    await loop.run_in_executor(self._executor, consumer.commit)
                except CommitFailedError as exc:
                    # Kicked out of the group (a broker restart, a long pause): the next poll
                    # rejoins; the batch may come again, and handling it is idempotent.
                    log.warning("offset commit failed, rejoining the group: %s", exc)
        finally:
            await loop.run_in_executor(self._executor, consumer.close)

    async def _retrying(self, fn: Any, stop: asyncio.Event) -> None:
        delay = 0.5
        while True:
            try:
                await fn()
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if stop.is_set():
                    raise
                log.warning("Redis unavailable (%s); retrying in %.1f s, offsets not committed", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _publish_liability(self, lease: Lease) -> None:
        """Publish the ledger outbox while ``lease`` holds (one publisher per prefix)."""

        from kafka import KafkaProducer

        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="liability")
        topic = self.settings.kafka.topics.liability
        # The producer is rebuilt after a failed send: after a broker restart an idempotent
        # producer can keep failing InitProducerId for good, while a new one starts clean.
        # Entries wait in the outbox (the ledger stream) meanwhile, and consumers dedup a
        # re-sent entry by its idempotency key.
        holder: list[Any] = []

        def send(records: list[tuple[bytes, bytes]]) -> None:
            if not holder:
                holder.append(KafkaProducer(bootstrap_servers=self.settings.kafka.bootstrap, acks="all"))
            producer = holder[0]
            futures = [producer.send(topic, key=k, value=v) for k, v in records]
            producer.flush()
            for f in futures:
                f.get(timeout=30)  # raise if the broker did not take it: the cursor stays put

        def discard() -> None:
            while holder:
                holder.pop().close(timeout=5)

        delay = 0.5
        try:
            while not lease.lost:
                try:
                    n = await _publish_via(loop, pool, self.ledger, send, lease)
                    delay = 0.5
                except FENCED:
                    raise  # another instance publishes now
                except Exception as exc:  # keep publishing later; the stream is the outbox
                    log.warning("publishing liability entries failed (%s); new producer in %.1f s", exc, delay)
                    await loop.run_in_executor(pool, discard)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if not n:
                    await asyncio.sleep(0.5)
        finally:
            await loop.run_in_executor(pool, discard)
            pool.shutdown(wait=False)

    async def _forward_to_alertmanager(self, lease: Lease) -> None:
        """One instance posts to Alertmanager; the keeper cancels this when the lease is lost.

        A new holder has not seen what the old one posted: alerts resolved in between
        lapse at their ``endsAt`` (four resend intervals) instead of being resolved at once.
        """

        assert self.alertmanager is not None
        await self.alertmanager.run(asyncio.Event(), now_ms)

    async def _escalate(self, lease: Lease) -> None:
        """Fire due escalations while ``lease`` holds; each one's write is fenced by it."""

        while not lease.lost:
            try:
                if lease.valid():
                    for n in await self.pipeline.escalate_due(now_ms(), lease):
                        self.deliverer.wake(n.receiver)
            except FENCED:
                raise
            except redis.exceptions.RedisError as exc:
                log.warning("escalation check failed: %s", exc)
            await asyncio.sleep(1.0)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        await self.redis.ping()
        indexed = await self.store.ensure_queue_index()  # stores written before the CS queue existed
        if indexed:
            log.info("queue index built for %d open alerts", indexed)
        runner = await self.start_api()
        log.info("alert service %s up: board at %s/", self.instance, self.api_url)
        print(f"logiwatch alerts: CS board at {self.api_url}/ (metrics at {self.api_url}/metrics)", flush=True)
        if ready is not None:
            ready.set()
        tasks = [
            asyncio.create_task(self._consume(stop), name="consume"),
            asyncio.create_task(self.keeper.run(stop), name="leases"),
        ]
        try:
            done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t in tasks and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            await self.redis.aclose()
            self.sync_redis.close()
            self._executor.shutdown(wait=False)


async def _publish_via(
    loop: asyncio.AbstractEventLoop, pool: concurrent.futures.Executor, ledger: Ledger, send: Any, lease: Lease
) -> int:
    """One outbox step: read pending entries, produce them off the loop, then advance the cursor (fenced)."""

    if not lease.valid():
        return 0
    records, last = await ledger.pending()
    if not records:
        return 0
    await loop.run_in_executor(pool, send, records)
    await ledger.advance(last, lease)
    return len(records)


def _check_broker(bootstrap: str, timeout_s: float = 3.0) -> None:
    """``LogiwatchError`` (one line) unless one bootstrap address accepts a connection.

    Without it an unreachable broker surfaces only as kafka-python's timeout,
    half a minute later, as a traceback from the consumer thread.
    """

    import socket

    errors = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
            return
        except (OSError, ValueError) as exc:
            errors.append(f"{address.strip()}: {getattr(exc, 'strerror', None) or exc}")
    raise LogiwatchError(f"cannot reach Kafka at {bootstrap} ({'; '.join(errors)}); start it with 'logiwatch stack up'")


def serve(settings: Settings) -> int:
    """Blocking entry point of ``logiwatch alerts serve``."""

    import signal

    routing, rules = load_config(settings)
    try:
        connect_sync(settings.redis.url, socket_connect_timeout=3).ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        raise ConfigError(f"cannot reach Redis at {redact(settings.redis.url)}: {exc} (start it with 'logiwatch stack up')") from None
    _check_broker(settings.kafka.bootstrap)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await AlertService(settings, routing, rules).run(stop)

    started = time.monotonic()
    asyncio.run(main())
    log.info("alert service stopped after %.0f s", time.monotonic() - started)
    return 0
