"""``logiwatch ingest serve``: the HTTP receiver for tracking-feed pushes.

``POST /v1/feeds/<feed>`` for each configured feed (``aftership``, ``17track``,
``kuaidi100``; a feed without a secret in the settings is off and answers
404). For every push, in this order:

1. the body is read up to ``ingest.max_body_bytes`` (larger: 413);
2. the adapter checks the vendor's signature in constant time, and the
   signed timestamp against the replay window where the vendor signs one
   (failure: 401, nothing produced, nothing dead-lettered: it is not a
   vendor's record);
3. the adapter maps it to contract-v2 scans; an unusable push gets 400 and a
   dead letter with the reason on the DLQ topic (topic ``ingest/<feed>``);
4. each scan's event id is claimed atomically in Redis
   (:mod:`~logiwatch.streams.ingest.dedup`): scans already produced (a
   resent history) are dropped; scans another push of the same history is
   producing right now are waited for (at most ``produce_timeout_s``, then
   503); the rest are this push's. With Redis unreachable every scan is
   produced and the worker's engine drops the duplicates by event id
   (nothing is lost either way);
5. this push's scans are produced to the events topic keyed by waybill and
   every acknowledgement is awaited; only then are they marked done and the
   vendor gets its 2xx. A broker that is down or slow gives 503 (the claims
   are given back), so the vendor retries the push: nothing is lost.

``GET /healthz`` answers 200; ``GET /metrics`` serves the receiver's
Prometheus metrics (``logiwatch_ingest_*``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from logiwatch.detectors.codec import decode_record, encode_record
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import Scan
from logiwatch.streams.dlq import encode_dead_letter, make_dead_letter
from logiwatch.streams.ingest.dedup import CLAIMED, PENDING, ScanClaims
from logiwatch.streams.ingest.feeds import Adapter, FeedError
from logiwatch.streams.metrics import IngestMetrics

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The broker (or what the push needs) cannot take it now: answer 503."""


class Producer:
    """What the receiver needs of a Kafka producer: send and await the acknowledgement."""

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class KafkaProducer(Producer):
    """aiokafka, started on first use and rebuilt after a failure (broker down, restarted)."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def _get(self) -> Any:
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    enable_idempotence=False,  # aiokafka cannot on Tansu (kafka-on-tansu.md, trap 2)
                    linger_ms=2,
                    request_timeout_ms=int(self.timeout_s * 1000),
                    retry_backoff_ms=100,
                )
                try:
                    await asyncio.wait_for(producer.start(), self.timeout_s)
                except Exception as exc:
                    await _quiet_stop(producer)
                    raise Unavailable(f"Kafka at {self.bootstrap} unreachable: {exc!r}") from None
                self._producer = producer
            return self._producer

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        producer = await self._get()
        return await producer.send(topic, value=value, key=key)  # type: ignore[no-any-return]

    async def reset(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _quiet_stop(producer)

    async def close(self) -> None:
        await self.reset()


async def _quiet_stop(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5.0)
    except Exception:  # stopping a broken producer: nothing more to save
        pass


@dataclass
class Receiver:
    """The receiver's parts; :meth:`app` builds the aiohttp application."""

    adapters: Mapping[str, Adapter]
    producer: Producer
    claims: ScanClaims | None
    events_topic: str
    dlq_topic: str
    metrics: IngestMetrics
    max_body_bytes: int = 1024 * 1024
    produce_timeout_s: float = 10.0
    wall_s: Callable[[], float] = time.time
    #: counts for the demo summary (feed -> outcome -> n)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    def _count(self, feed: str, outcome: str, n: int = 1) -> None:
        per = self.totals.setdefault(feed, {})
        per[outcome] = per.get(outcome, 0) + n

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/v1/feeds/{feed}", self.handle)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "feeds": sorted(self.adapters)})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle(self, request: web.Request) -> web.Response:
        feed = request.match_info["feed"]
        adapter = self.adapters.get(feed)
        if adapter is None:
            return web.json_response({"ok": False, "message": f"no feed {feed!r} is configured"}, status=404)
        started = time.perf_counter()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.pushes.labels(feed=feed, outcome="oversize").inc()
            self._count(feed, "oversize")
            return self._answer(adapter, False, f"body larger than {self.max_body_bytes} bytes", 413)
        try:
            response = await self._push(feed, adapter, request.headers, body)
        finally:
            self.metrics.push_seconds.labels(feed=feed).observe(time.perf_counter() - started)
        return response

    def _answer(self, adapter: Adapter, ok: bool, message: str, status: int) -> web.Response:
        ctype, payload = adapter.reply(ok, message)
        return web.Response(body=payload, status=status, content_type=ctype)

    async def _push(self, feed: str, adapter: Adapter, headers: Mapping[str, str], body: bytes) -> web.Response:
        try:
            adapter.verify(headers, body, self.wall_s())
        except FeedError as exc:
            self.metrics.pushes.labels(feed=feed, outcome=exc.reason).inc()
            self._count(feed, exc.reason)
            log.warning("ingest %s: %s", feed, exc.reason)
            return self._answer(adapter, False, exc.reason, 401)
        try:
            parsed = adapter.parse(body, headers)
            for scan in parsed.scans:  # the same edge check as the worker's (Struct() does not validate)
                try:
                    decode_record(encode_record(scan))
                except DecodeError as err:
                    raise FeedError("bad_payload", f"a checkpoint maps to an invalid scan: {err}") from None
        except FeedError as exc:
            return await self._reject(feed, adapter, body, exc)
        scans = _unique(parsed.scans)
        try:
            produced = await self._produce_new(feed, scans)
        except Unavailable as exc:
            self.metrics.pushes.labels(feed=feed, outcome="unavailable").inc()
            self._count(feed, "unavailable")
            log.warning("ingest %s: answering 503: %s", feed, exc)
            return self._answer(adapter, False, "temporarily unavailable, retry", 503)
        self.metrics.pushes.labels(feed=feed, outcome="accepted").inc()
        self.metrics.scans.labels(feed=feed, outcome="produced").inc(produced)
        self.metrics.scans.labels(feed=feed, outcome="duplicate").inc(len(parsed.scans) - produced)
        self._count(feed, "accepted")
        self._count(feed, "scans_produced", produced)
        self._count(feed, "scans_duplicate", len(parsed.scans) - produced)
        return self._answer(adapter, True, f"{produced} new scans", 200)

    async def _produce_new(self, feed: str, scans: list[Scan]) -> int:
        """Produce the scans no other push has produced or is producing; how many this push produced."""

        if self.claims is None or not scans:
            await self._produce(scans)
            return len(scans)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.produce_timeout_s
        produced = 0
        remaining = scans
        while remaining:
            try:
                flags = await self.claims.claim(feed, remaining, token, int(self.wall_s() * 1000))
            except Exception as exc:
                log.warning("ingest %s: dedup store unreachable, producing every scan: %r", feed, exc)
                await self._produce(remaining)
                return produced + len(remaining)
            mine = [s for s, flag in flags if flag == CLAIMED]
            if mine:
                await self._produce_claimed(feed, mine, token)
                produced += len(mine)
            remaining = [s for s, flag in flags if flag == PENDING]
            if remaining:  # another push of this history is producing them: wait until it is done
                if time.monotonic() > deadline:
                    raise Unavailable(f"{len(remaining)} scans still being produced by another push")
                await asyncio.sleep(0.02)
        return produced

    async def _produce_claimed(self, feed: str, mine: list[Scan], token: str) -> None:
        assert self.claims is not None
        try:
            await self._produce(mine)
        except Unavailable:
            try:
                await self.claims.release(feed, mine, token)
            except Exception as exc:  # the claims expire on their own
                log.warning("ingest %s: could not release the claims: %r", feed, exc)
            raise
        try:
            await self.claims.done(feed, mine)
        except Exception as exc:  # the scans are in Kafka; a resend after the claims expire repeats them
            log.warning("ingest %s: could not record the produced ids: %r", feed, exc)

    async def _produce(self, scans: Sequence[Scan]) -> None:
        if not scans:
            return
        try:
            acks = [
                await self.producer.send(self.events_topic, s.waybill_id.encode(), encode_record(s)) for s in scans
            ]
            await asyncio.wait_for(asyncio.gather(*acks), self.produce_timeout_s)
        except Unavailable:
            raise
        except Exception as exc:
            if isinstance(self.producer, KafkaProducer):
                await self.producer.reset()
            raise Unavailable(repr(exc)) from None

    async def _reject(self, feed: str, adapter: Adapter, body: bytes, exc: FeedError) -> web.Response:
        letter = make_dead_letter(
            reason=exc.reason,
            detail=exc.detail,
            topic=f"ingest/{feed}",
            partition=-1,
            offset=-1,
            key=None,
            value=body,
            failed_at_ms=int(self.wall_s() * 1000),
        )
        try:
            ack = await self.producer.send(self.dlq_topic, None, encode_dead_letter(letter))
            await asyncio.wait_for(ack, self.produce_timeout_s)
        except Exception as err:
            if isinstance(self.producer, KafkaProducer):
                await self.producer.reset()
            self.metrics.pushes.labels(feed=feed, outcome="unavailable").inc()
            self._count(feed, "unavailable")
            log.warning("ingest %s: cannot dead-letter a rejected push: %r", feed, err)
            return self._answer(adapter, False, "temporarily unavailable, retry", 503)
        self.metrics.pushes.labels(feed=feed, outcome=exc.reason).inc()
        self._count(feed, exc.reason)
        log.warning("ingest %s: rejected (%s): %s", feed, exc.reason, exc.detail[:200])
        return self._answer(adapter, False, f"{exc.reason}: {exc.detail[:200]}", 400)


def _unique(scans: Sequence[Scan]) -> list[Scan]:
    """The scans of a push, each event id once, in time order (a push may repeat a checkpoint)."""

    seen: set[str] = set()
    out = []
    for s in sorted(scans, key=lambda s: (s.event_time, s.event_id)):
        if s.event_id not in seen:
            seen.add(s.event_id)
            out.append(s)
    return out
