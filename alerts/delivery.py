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
twice), so a restart re-sends it at once.

With several service instances on one prefix, a receiver's queue is worked
by the instance holding the lease ``deliver:<receiver>`` (see
:mod:`logiwatch.alerts.lease`): :meth:`Deliverer.own` runs the worker while
the lease lasts; every booking is fenced by it, and no POST starts once the
lease's local deadline has passed, so after a takeover the old holder books
nothing and sends at most the attempts already on the wire (same
webhook-ids, which receivers deduplicate on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import aiohttp

from logiwatch.alerts import alertmanager
from logiwatch.alerts.lease import FENCED, Lease
from logiwatch.alerts.metrics import AlertMetrics
from logiwatch.alerts.model import Notification, Receiver, ReceiverKind
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
        self._wake: dict[str, asyncio.Event] = {r: asyncio.Event() for r in routing.receivers}

    @staticmethod
    def lease_name(receiver: str) -> str:
        return f"deliver:{receiver}"

    def wake(self, receiver: str) -> None:
        ev = self._wake.get(receiver)
        if ev is not None:
            ev.set()

    async def own(self, receiver: Receiver, lease: Lease) -> None:
        """Work ``receiver``'s queue while ``lease`` holds; returns once it is lost."""

        log.info("delivering to %s (lease token %d)", receiver.name, lease.token)
        if receiver.kind != ReceiverKind.ALERTMANAGER:
            await self._worker(receiver, lease)
            return
        # an Alertmanager receiver's firing alerts are re-posted by the instance that delivers to it
        resender = asyncio.create_task(
            alertmanager.Resender(self.store, receiver, self.public_url).run(), name=f"resend-{receiver.name}"
        )
        try:
            await self._worker(receiver, lease)
        finally:
            resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resender

    async def _worker(self, receiver: Receiver, lease: Lease) -> None:
        bucket = TokenBucket(receiver.rate_per_s)
        sem = asyncio.Semaphore(self.in_flight)
        busy: set[str] = set()
        pending: set[asyncio.Task[None]] = set()
        wake = self._wake[receiver.name]
        async with make_session(receiver.allow_private_networks) as session:
            while not lease.lost:
                try:
                    if not lease.valid():  # not renewed in time: start nothing until it is, or is lost
                        await asyncio.sleep(POLL_S)
                        continue
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
                        if not lease.valid():  # lost or late while waiting for a slot: take no more ids
                            sem.release()
                            break
                        busy.add(nid)
                        task = asyncio.create_task(self._fenced_attempt(session, receiver, nid, lease))
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
            for t in pending:
                t.cancel()

    async def _fenced_attempt(self, session: aiohttp.ClientSession, receiver: Receiver, nid: str, lease: Lease) -> None:
        try:
            await self._attempt(session, receiver, nid, lease)
        except FENCED as exc:
            # another instance holds the queue now: it re-sends this id if it was not booked
            lease.lost = True
            self.metrics.fenced_writes.labels(self.lease_name(receiver.name)).inc()
            log.warning("delivery to %s: booking of %s refused (%s); queue handed over", receiver.name, nid, exc)

    async def _attempt(self, session: aiohttp.ClientSession, receiver: Receiver, nid: str, lease: Lease) -> None:
        notif = await self.store.notification(nid, receiver.name)
        if notif is None or notif.delivered_ms is not None:
            await self.store.unqueue(receiver.name, nid, lease)
            return
        rec = await self.store.get(notif.alert_id)
        if rec is None and now_ms() - notif.created_ms < RECORD_GRACE_MS:
            # On Redis Cluster the notification is queued just before its alert's
            # record is written (AlertStore.commit_many): look again shortly.
            await self.store.reschedule(notif, now_ms() + 500, lease)
            return
        if rec is None:
            notif.last_error = "alert record missing"
            await self.store.dead_letter(notif, lease)
            self.metrics.dead_letters.labels(receiver.name).inc()
            return
        count: int = 0
        sample: list[str] = []
        if rec.alert.alert_type == AnomalyType.HUB_INCIDENT:
            count, sample = await self.store.incident_parcel_count(rec.alert.alert_id)
        rendering = Rendering(nid, receiver.name, notif.kind.event, self.public_url, count, tuple(sample))
        is_am = receiver.kind == ReceiverKind.ALERTMANAGER
        body = alertmanager.notification_body(rec, notif, receiver, self.public_url, now_ms()) if is_am else render(receiver.format, rec, rendering)
        if not lease.valid():
            return  # the lease may have moved while this instance was stopped: leave the id to its holder
        t0 = time.perf_counter()
        outcome = await post(session, receiver, nid, body)
        if is_am and outcome.action == DeliveryAction.OK:
            await alertmanager.delivered(self.store, receiver, rec)
        self.metrics.delivery_seconds.labels(receiver.name).observe(time.perf_counter() - t0)
        self.metrics.notifications.labels(receiver.name, outcome.action).inc()
        await self._book(receiver, notif, outcome, lease)

    async def _book(self, receiver: Receiver, notif: Notification, outcome: Outcome, lease: Lease) -> None:
        notif.attempts += 1
        now = now_ms()
        if outcome.action == DeliveryAction.OK:
            notif.delivered_ms = now
            notif.last_error = None
            await self.store.delivered(notif, lease)
            return
        notif.last_error = outcome.error
        if outcome.action == DeliveryAction.RETRY:
            delay = next_delay_s(notif.attempts, receiver.retry_schedule_s, outcome.retry_after_s, self.rng)
            if delay is not None:
                self.metrics.retries.labels(receiver.name).inc()
                await self.store.reschedule(notif, now + int(delay * 1000), lease)
                return
            notif.last_error = f"gave up after {notif.attempts} attempts: {outcome.error}"
        if outcome.action == DeliveryAction.DISABLE:
            await self.store.disable(receiver.name, outcome.error or "HTTP 410", lease)
            log.warning("receiver %s answered 410 Gone: disabled until redriven", receiver.name)
        log.warning("notification %s to %s dead-lettered: %s", notif.nid, receiver.name, notif.last_error)
        await self.store.dead_letter(notif, lease)
        self.metrics.dead_letters.labels(receiver.name).inc()
