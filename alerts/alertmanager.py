"""Prometheus Alertmanager as a receiver: logiwatch's open alerts, posted to its API v2.

Operations teams that already route, silence and page through Alertmanager (its
email, PagerDuty and WeChat Work receivers) get logiwatch alerts there. Every
``resend_s`` the forwarder posts each open or acknowledged alert (parcel alerts and
hub incidents) to ``POST /api/v2/alerts`` with the labels and annotations of the v4
webhook payload plus ``alert_id``, ``startsAt`` (when the service first saw it),
``endsAt`` = now + ``ttl_s`` (so a crashed logiwatch lets them lapse instead of
firing forever) and ``generatorURL`` pointing at the console's parcel page. An alert
that left the open set since the last round is posted once more with ``endsAt`` =
the time it was resolved, which resolves it there. Silences, grouping and
inhibition are Alertmanager's own.

Two ways in. As a **receiver kind** in the routes file (``kind = "alertmanager"``), an
Alertmanager gets what its routes match, like any receiver: each notification (firing,
escalated, resolved) is one POST of the alert as it stands, through the delivery queue
(retries, dead letters, the parcel page's delivery list); the receiver remembers what it
holds firing (``alerts:am:<receiver>``) and :class:`Resender` re-posts those every
``resend_s`` (``endsAt`` = now + 4 x ``resend_s``), posting each resolved one once more
and forgetting it. An escalation also ends the alert under its lower severities, since
Alertmanager tells alerts apart by their labels. As a **forwarder**
(``alerts.alertmanager_url``), :class:`AlertmanagerForwarder` posts every open alert,
unrouted; failures are logged and retried next round (Alertmanager keeps what it has
until ``endsAt``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from logiwatch.alerts.model import AlertRecord, AlertState, Notification, NotificationEvent, Receiver
from logiwatch.alerts.store import AlertStore
from logiwatch.alerts.webhooks import DeliveryAction, Rendering, alertmanager_payload, make_session, post
from logiwatch.detectors.model import Severity

log = logging.getLogger(__name__)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def am_alert(rec: AlertRecord, public_url: str, now_ms: int, ttl_ms: int) -> dict[str, Any]:
    """One postable alert of the Alertmanager API v2 for ``rec`` at ``now_ms``."""

    a = rec.alert
    resolved = rec.state == AlertState.RESOLVED
    v4 = alertmanager_payload(
        rec,
        Rendering(
            webhook_id="",
            receiver="alertmanager",
            event=NotificationEvent.RESOLVED if resolved else NotificationEvent.FIRING,
            public_url=public_url,
        ),
    )
    labels = {**v4["alerts"][0]["labels"], "alert_id": a.alert_id, "source": "logiwatch"}
    annotations = {**v4["alerts"][0]["annotations"], "detected_at": _iso(a.detected_at), "state": rec.state.value}
    page = f"{public_url}/#/parcel/{quote(a.waybill_id, safe='')}" if a.waybill_id else f"{public_url}/#/incident/{quote(a.alert_id, safe='')}"
    starts = min(rec.first_seen_ms, now_ms)
    ends = max(rec.updated_ms, starts + 1) if resolved else now_ms + ttl_ms
    return {"labels": labels, "annotations": annotations, "startsAt": _iso(starts), "endsAt": _iso(ends), "generatorURL": page}


class AlertmanagerForwarder:
    """Keeps an Alertmanager's view of logiwatch's open alerts current (see the module doc)."""

    def __init__(self, store: AlertStore, url: str, public_url: str, resend_s: float = 60.0, ttl_s: float | None = None) -> None:
        self.store = store
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.public_url = public_url.rstrip("/")
        self.resend_s = resend_s
        self.ttl_ms = int((ttl_s if ttl_s is not None else 4 * resend_s) * 1000)
        self._firing: set[str] = set()

    async def sync_once(self, session: aiohttp.ClientSession, now_ms: int) -> tuple[int, int]:
        """Post every open alert and resolve those gone since last time; (firing, resolved) posted."""

        open_ids = (await self.store.ids_in("state", "open")) | (await self.store.ids_in("state", "acknowledged"))
        gone = self._firing - open_ids
        ids = sorted(open_ids | gone)
        sent_firing = sent_resolved = 0
        for i in range(0, len(ids), 500):
            recs = await self.store.get_many(ids[i : i + 500])
            body = [am_alert(r, self.public_url, now_ms, self.ttl_ms) for r in recs]
            if not body:
                continue
            async with session.post(self.url, json=body) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"Alertmanager answered {resp.status}: {(await resp.text())[:200]}")
            for r in recs:
                if r.state == AlertState.RESOLVED:
                    sent_resolved += 1
                else:
                    sent_firing += 1
        self._firing = open_ids
        return sent_firing, sent_resolved

    async def run(self, stop: asyncio.Event, now_ms: Any) -> None:
        timeout = aiohttp.ClientTimeout(total=30, connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                try:
                    await self.sync_once(session, now_ms())
                except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                    log.warning("posting to Alertmanager at %s failed (%s); retrying in %.0f s", self.url, exc, self.resend_s)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.resend_s)
                except TimeoutError:
                    pass


# ---------------------------------------------------------------- receiver kind


def _ttl_ms(receiver: Receiver) -> int:
    return int(4 * receiver.resend_s * 1000)


def notification_body(rec: AlertRecord, notif: Notification, receiver: Receiver, public_url: str, now_ms: int) -> bytes:
    """What a notification posts to an Alertmanager receiver: the alert as it stands now
    (resolved if it is resolved, whatever the notification said), and, for an escalation,
    the same alert under each lower severity ended now."""

    alert = am_alert(rec, public_url.rstrip("/"), now_ms, _ttl_ms(receiver))
    body = [alert]
    if notif.kind.event == NotificationEvent.ESCALATED:
        order = list(Severity)
        for lower in order[: order.index(rec.alert.severity)]:
            body.append({**alert, "labels": {**alert["labels"], "severity": lower.value}, "endsAt": _iso(now_ms)})
    return json.dumps(body).encode()


def held_key(store: AlertStore, receiver: Receiver) -> str:
    """The set of alert ids an Alertmanager receiver holds firing."""

    return store.key("am", receiver.name)


async def delivered(store: AlertStore, receiver: Receiver, rec: AlertRecord) -> None:
    """After a successful post: remember a firing alert for re-posting, forget a resolved one."""

    if rec.state == AlertState.RESOLVED:
        await store.r.srem(held_key(store, receiver), rec.alert.alert_id)
    else:
        await store.r.sadd(held_key(store, receiver), rec.alert.alert_id)


class Resender:
    """Re-posts what an Alertmanager receiver holds firing before its ``endsAt`` lapses."""

    def __init__(self, store: AlertStore, receiver: Receiver, public_url: str) -> None:
        self.store = store
        self.receiver = receiver
        self.public_url = public_url.rstrip("/")

    async def resend_once(self, session: aiohttp.ClientSession, now_ms: int) -> int:
        """One round; returns how many alerts were posted."""

        key = held_key(self.store, self.receiver)
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in await self.store.r.smembers(key))
        posted = 0
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            recs = await self.store.get_many(chunk)
            missing = set(chunk) - {r.alert.alert_id for r in recs}
            if recs:
                body = json.dumps([am_alert(r, self.public_url, now_ms, _ttl_ms(self.receiver)) for r in recs]).encode()
                outcome = await post(session, self.receiver, f"resend-{now_ms}-{i}", body)
                if outcome.action != DeliveryAction.OK:
                    log.warning("re-posting to Alertmanager receiver %s failed: %s", self.receiver.name, outcome.error or outcome.action)
                    return posted
                posted += len(recs)
            done = missing | {r.alert.alert_id for r in recs if r.state == AlertState.RESOLVED}
            if done:
                await self.store.r.srem(key, *sorted(done))
        return posted

    async def run(self) -> None:
        async with make_session(self.receiver.allow_private_networks) as session:
            while True:
                await asyncio.sleep(self.receiver.resend_s)
                try:
                    await self.resend_once(session, int(datetime.now(UTC).timestamp() * 1000))
                except asyncio.CancelledError:
                    raise
                except Exception:  # Redis or network trouble: the next round tries again
                    log.exception("Alertmanager receiver %s: re-post round failed", self.receiver.name)
