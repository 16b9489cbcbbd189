"""The demo's front door: a share of the simulated parcels arrives as signed feed pushes.

``logiwatch demo`` hands every scan of a front-door parcel (one waybill in
:data:`SHARE`, by CRC-32) to :class:`FrontDoor` instead of producing it. The
parcel's first scan produces its shipment registration to the shipments
topic (as an order system would); every carrier scan then becomes a signed
push, AfterShip-style or Kuaidi100-style by waybill, that resends the
parcel's whole history so far, posted to the real ``logiwatch ingest
serve`` receiver running in the demo's process. The receiver checks the
signature, maps, drops the resent checkpoints and produces the new slim
scans; the worker joins them to the registrations. A push answered 503 is
retried, as the vendors do. Counts come from the receiver itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from logiwatch.config import Settings
from logiwatch.detectors.codec import encode_record
from logiwatch.detectors.model import FINAL_EVENT_TYPES, ScanEvent
from logiwatch.streams.ingest.pushes import AFTERSHIP_TAG, aftership_push, kuaidi100_push, registration_of
from logiwatch.streams.ingest.receiver import KafkaProducer
from logiwatch.streams.ingest.serve import RunningReceiver, start_receiver

#: One parcel in this many arrives through the front door.
SHARE = 10
#: Concurrent pushers (a parcel's pushes may overtake each other: each carries the whole history).
PUSHERS = 4
RETRIES = 20


def through_front_door(waybill: str) -> bool:
    return zlib.crc32(waybill.encode()) % SHARE == 0


def feed_of(waybill: str) -> str:
    return "aftership" if (zlib.crc32(waybill.encode()) // SHARE) % 2 == 0 else "kuaidi100"


@dataclass
class FrontDoor:
    settings: Settings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    registrations: int = 0
    pushes: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    _queue: asyncio.Queue[ScanEvent | None] = field(default_factory=asyncio.Queue)
    _histories: dict[str, list[ScanEvent]] = field(default_factory=dict)
    _running: RunningReceiver | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        ingest = self.settings.ingest.model_copy(
            update={
                "host": "127.0.0.1",
                "port": 0,
                "aftership_secret": _secret(),
                "seventeentrack_key": None,
                "kuaidi100_salt": _secret(),
            }
        )
        self.settings = self.settings.model_copy(update={"ingest": ingest})
        self._producer = KafkaProducer(self.settings.kafka.bootstrap, 10.0)

    @property
    def url(self) -> str:
        assert self._running is not None
        return f"http://127.0.0.1:{self._running.port}"

    async def start(self, session: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = await start_receiver(self.settings, self.registry)
        self._session = session
        self._tasks = [asyncio.create_task(self._pusher()) for _ in range(PUSHERS)]

    def offer(self, ev: ScanEvent) -> None:
        """Hand over one scan (from the producer's thread)."""

        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, ev)

    async def drain(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._running is not None:
            await self._running.close()
        await self._producer.close()

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        return self._running.receiver.totals if self._running is not None else {}

    def produced_scans(self) -> int:
        return sum(t.get("scans_produced", 0) for t in self.totals.values())

    async def _pusher(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                if ev is not None:
                    await self._handle(ev)
            finally:
                self._queue.task_done()

    async def _handle(self, ev: ScanEvent) -> None:
        wb = ev.waybill_id
        history = self._histories.get(wb)
        if history is None:
            history = self._histories[wb] = []
            reg = registration_of(ev)
            topic = self.settings.kafka.topics.shipments
            await self._retry(lambda: self._register(topic, reg))
        history.append(ev)
        if ev.event_type in FINAL_EVENT_TYPES:
            self._histories.pop(wb, None)
        if AFTERSHIP_TAG[ev.event_type] is None:
            return  # the merchant's own scans: the registration stands for them
        feed = feed_of(wb)
        snapshot = list(history)
        conf = self.settings.ingest
        if feed == "aftership":
            assert conf.aftership_secret is not None
            secret = conf.aftership_secret.get_secret_value()

            def build() -> tuple[bytes, dict[str, str]]:
                return aftership_push(snapshot, secret, time.time())
        else:
            assert conf.kuaidi100_salt is not None
            salt = conf.kuaidi100_salt.get_secret_value()

            def build() -> tuple[bytes, dict[str, str]]:
                return kuaidi100_push(snapshot, salt)

        async def post() -> bool:
            body, headers = build()
            async with self._session.post(f"{self.url}/v1/feeds/{feed}", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 503:
                    return False
                self.pushes[f"{feed}:{resp.status}"] = self.pushes.get(f"{feed}:{resp.status}", 0) + 1
                return True

        await self._retry(post)

    async def _register(self, topic: str, reg: Any) -> bool:
        ack = await self._producer.send(topic, reg.waybill_id.encode(), encode_record(reg))
        await asyncio.wait_for(ack, 10.0)
        self.registrations += 1
        return True

    async def _retry(self, fn: Any) -> None:
        delay = 0.1
        for _ in range(RETRIES):
            try:
                if await fn():
                    return
            except Exception:  # the broker or the receiver hiccuped: retry as a feed would
                await self._producer.reset()
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
        self.failed += 1

    def summary(self) -> str:
        t = self.totals
        feeds = ", ".join(
            f"{feed} {n.get('accepted', 0)} accepted / {sum(v for k, v in n.items() if k not in ('accepted', 'scans_produced', 'scans_duplicate'))} refused"
            for feed, n in sorted(t.items())
        )
        dup = sum(n.get("scans_duplicate", 0) for n in t.values())
        return (
            f"{self.registrations} registrations, pushes: {feeds or 'none'}; "
            f"{self.produced_scans()} new scans produced, {dup} resent ones dropped, {self.failed} gave up"
        )


def _secret() -> Any:
    from pydantic import SecretStr

    return SecretStr(secrets.token_hex(16))
