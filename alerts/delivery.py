"""Delivery workers: one asyncio task per receiver, fed by its Redis queue.

A receiver's queue is a sorted set of webhook-ids by due time; a worker
takes due ids, renders and signs the payload, posts it, and then either
marks it delivered, reschedules it (backoff with jitter, honouring
``Retry-After``) or moves it to the receiver's dead-letter list. Each worker
has its own session, rate limit (token bucket) and a few attempts in
flight, so a slow or dead receiver only ever delays its own queue, and the
consumer never waits for any of them. A crash between a receiver's answer
and the bookkeeping re-sends with the same webhook-id, which receivers
deduplicate on (at-least-once, as every webhook sender). An id in flight
stays in the queue (the worker's ``busy`` set keeps it from being taken
twice), so a restart re-sends it at once; that is also why one service
instance delivers per Redis key prefix.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import aiohttp

from logiwatch.alerts.metrics import AlertMetrics
from logiwatch.alerts.model import Notification, Receiver
from logiwatch.alerts.routing import RoutingConfig
from logiwatch.alerts.store import AlertStore, now_ms
from logiwatch.alerts.webhooks import (
    DeliveryAction,
    Outcome,
    Rendering,
    make_session,
    next_delay_s,
    post,
    render,
)
from logiwatch.detectors.model import AnomalyType

log = logging.getLogger(__name__)

#: Seconds a worker sleeps at most between looks at its queue.
POLL_S = 0.2
#: how long a queued notification may wait for its alert record before it is a dead letter
RECORD_GRACE_MS = 30_000


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Deliverer:
    """Owns the per-receiver workers."""

    def __init__(
        self,
        store: AlertStore,
        routing: RoutingConfig,
        metrics: AlertMetrics,
        public_url: str,
        *,
        in_flight: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.routing = routing
        self.metrics = metrics
        self.public_url = public_url.rstrip("/")
        self.in_flight = in_flight
        self.rng = rng or random.Random()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: dict[str, asyncio.Event] = {}

    def start(self) -> None:
        for receiver in self.routing.receivers.values():
            self._wake[receiver.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._worker(receiver), name=f"deliver-{receiver.name}"))

    def wake(self, receiver: str) -> None:
        ev = self._wake.get(receiver)
        if ev is not None:
            ev.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _worker(self, receiver: Receiver) -> None:
        bucket = TokenBucket(receiver.rate_per_s)
        sem = asyncio.Semaphore(self.in_flight)
        busy: set[str] = set()
        pending: set[asyncio.Task[None]] = set()
        wake = self._wake[receiver.name]
        async with make_session(receiver.allow_private_networks) as session:
            while True:
                try:
                    if receiver.name in await self.store.disabled():
                        await asyncio.sleep(1.0)
                        continue
                    now = now_ms()
                    nids = [n for n in await self.store.due(receiver.name, now, limit=self.in_flight * 4) if n not in busy]
                    if not nids:
                        wake.clear()
                        nxt = await self.store.next_due_ms(receiver.name)
                        wait = POLL_S if nxt is None else min(POLL_S, max(0.0, (nxt - now) / 1000))
                        try:
                            await asyncio.wait_for(wake.wait(), timeout=wait)
                        except TimeoutError:
                            pass
                        continue
                    for nid in nids:
                        await bucket.take()
                        await sem.acquire()
                        busy.add(nid)
                        task = asyncio.create_task(self._attempt(session, receiver, nid))
                        pending.add(task)

                        def _done(t: asyncio.Task[None], nid: str = nid) -> None:
                            busy.discard(nid)
                            pending.discard(t)
                            sem.release()

                        task.add_done_callback(_done)
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    for t in pending:
                        t.cancel()
                    raise
                except Exception:  # Redis hiccup: keep the worker alive, try again shortly
                    log.exception("delivery worker %s failed; retrying", receiver.name)
                    await asyncio.sleep(1.0)

    async def _attempt(self, session: aiohttp.ClientSession, receiver: Receiver, nid: str) -> None:
        notif = await self.store.notification(nid, receiver.name)
        if notif is None or notif.delivered_ms is not None:
            await self.store.unqueue(receiver.name, nid)
            return
        rec = await self.store.get(notif.alert_id)
        if rec is None and now_ms() - notif.created_ms < RECORD_GRACE_MS:
            # On Redis Cluster the notification is queued just before its alert's
            # record is written (AlertStore.commit_many): look again shortly.
            await self.store.reschedule(notif, now_ms() + 500)
            return
        if rec is None:
            notif.last_error = "alert record missing"
            await self.store.dead_letter(notif)
            self.metrics.dead_letters.labels(receiver.name).inc()
            return
        count: int = 0
        sample: list[str] = []
        if rec.alert.alert_type == AnomalyType.HUB_INCIDENT:
            count, sample = await self.store.incident_parcel_count(rec.alert.alert_id)
        rendering = Rendering(nid, receiver.name, notif.kind.event, self.public_url, count, tuple(sample))
        body = render(receiver.format, rec, rendering)
        t0 = time.perf_counter()
        outcome = await post(session, receiver, nid, body)
        self.metrics.delivery_seconds.labels(receiver.name).observe(time.perf_counter() - t0)
        self.metrics.notifications.labels(receiver.name, outcome.action).inc()
        await self._book(receiver, notif, outcome)

    async def _book(self, receiver: Receiver, notif: Notification, outcome: Outcome) -> None:
        notif.attempts += 1
        now = now_ms()
        if outcome.action == DeliveryAction.OK:
            notif.delivered_ms = now
            notif.last_error = None
            await self.store.delivered(notif)
            return
        notif.last_error = outcome.error
        if outcome.action == DeliveryAction.RETRY:
            delay = next_delay_s(notif.attempts, receiver.retry_schedule_s, outcome.retry_after_s, self.rng)
            if delay is not None:
                self.metrics.retries.labels(receiver.name).inc()
                await self.store.reschedule(notif, now + int(delay * 1000))
                return
            notif.last_error = f"gave up after {notif.attempts} attempts: {outcome.error}"
        if outcome.action == DeliveryAction.DISABLE:
            await self.store.disable(receiver.name, outcome.error or "HTTP 410")
            log.warning("receiver %s answered 410 Gone: disabled until redriven", receiver.name)
        log.warning("notification %s to %s dead-lettered: %s", notif.nid, receiver.name, notif.last_error)
        await self.store.dead_letter(notif)
        self.metrics.dead_letters.labels(receiver.name).inc()
