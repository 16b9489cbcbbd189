"""The demo's front door: a share of the simulated parcels arrives as signed feed pushes.

``logiwatch demo`` hands every scan of a front-door parcel (one waybill in
:data:`SHARE`, by CRC-32) to :class:`FrontDoor` instead of producing it. The
parcel's first scan produces its shipment registration to the run's
shipments topic (as an order system would); every carrier scan then becomes
a signed push, AfterShip-style or Kuaidi100-style by waybill, that resends
the parcel's whole history so far (:mod:`logiwatch.streams.ingest.pushes`),
posted to the real ``logiwatch ingest serve`` receiver running in the
demo's process on a free port. The receiver checks the signature, maps the
checkpoints, drops the resent ones (its Redis claims) and produces the new
slim scans; the worker joins them to the registrations. Pushes are posted
by a few concurrent pushers, so a parcel's pushes may overtake each other,
as a vendor's retries do; a push answered 503 is retried. The counts in the
summary come from the receiver itself (and its Prometheus metrics at
``<url>/metrics``), the join's from the worker's metrics.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

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
#: Attempts per push or registration before the front door gives it up (counted in the summary).
RETRIES = 20
#: Counts of the receiver's totals that are not push outcomes.
_SCAN_COUNTS = ("scans_produced", "scans_duplicate")


def through_front_door(waybill: str) -> bool:
    """Does this parcel arrive as feed pushes?

    >>> sum(through_front_door(f"WB{i}") for i in range(1000)) in range(70, 130)
    True
    """

    return zlib.crc32(waybill.encode()) % SHARE == 0


def feed_of(waybill: str) -> str:
    """Which feed pushes a front-door parcel: half AfterShip, half Kuaidi100."""

    return "aftership" if (zlib.crc32(waybill.encode()) // SHARE) % 2 == 0 else "kuaidi100"


def join_outcomes(metrics_text: str) -> Counter[str]:
    """The worker's contract-v2 join counts by outcome (joined, waited, defaulted)."""

    from prometheus_client.parser import text_string_to_metric_families

    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "logiwatch_worker_join_scans_total":
                out[s.labels.get("outcome", "?")] += int(s.value)
    return out


@dataclass
class FrontDoor:
    """The receiver, its pushers and what they did (for one demo run)."""

    settings: Settings
    #: where sample push lines go (the first few answered pushes, then a few)
    report: Callable[[str], None] | None = None
    sample: Callable[[int], bool] = lambda n: n <= 10
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    registrations: int = 0
    failed: int = 0
    answered: int = 0
    _queue: asyncio.Queue[ScanEvent] = field(default_factory=asyncio.Queue)
    _histories: dict[str, list[ScanEvent]] = field(default_factory=dict)
    #: waybill -> its registration's produce (set once acknowledged or given up)
    _registered: dict[str, asyncio.Event] = field(default_factory=dict)
    _running: RunningReceiver | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _session: Any = None

    def __post_init__(self) -> None:
        # fresh secrets per run; 17TRACK is not simulated
        ingest = self.settings.ingest.model_copy(
            update={
                "host": "127.0.0.1",
                "port": 0,
                "aftership_secret": SecretStr(secrets.token_hex(16)),
                "seventeentrack_key": None,
                "kuaidi100_salt": SecretStr(secrets.token_hex(16)),
            }
        )
        self.settings = self.settings.model_copy(update={"ingest": ingest})
        self._producer = KafkaProducer(self.settings.kafka.bootstrap, 10.0)

    @property
    def url(self) -> str:
        assert self._running is not None
        return f"http://127.0.0.1:{self._running.port}"

    async def start(self, session: Any) -> None:
        """Start the receiver and the pushers (``session``: an aiohttp client session)."""

        self._loop = asyncio.get_running_loop()
        self._running = await start_receiver(self.settings, self.registry)
        self._session = session
        self._tasks = [asyncio.create_task(self._pusher()) for _ in range(PUSHERS)]

    def offer(self, ev: ScanEvent) -> None:
        """Hand over one scan of a front-door parcel (from the producer's thread)."""

        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, ev)

    async def drain(self, timeout: float) -> bool:
        """Wait until every offered scan is pushed; False after ``timeout``."""

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
        """The receiver's counts: feed -> outcome (accepted, a refusal reason, scans_*) -> n."""

        return self._running.receiver.totals if self._running is not None else {}

    def produced_scans(self) -> int:
        return sum(t.get("scans_produced", 0) for t in self.totals.values())

    def records(self) -> int:
        """Records the front door put on Kafka: registrations and new slim scans."""

        return self.registrations + self.produced_scans()

    def summary(self) -> str:
        t = self.totals
        feeds = ", ".join(
            f"{feed} {n.get('accepted', 0)} accepted / "
            f"{sum(v for k, v in n.items() if k not in ('accepted', *_SCAN_COUNTS))} refused"
            for feed, n in sorted(t.items())
        )
        dup = sum(n.get("scans_duplicate", 0) for n in t.values())
        return (
            f"{self.registrations} registrations, pushes: {feeds or 'none'}; "
            f"{self.produced_scans()} new scans produced, {dup} resent ones dropped, {self.failed} gave up"
        )

    # ------------------------------------------------------------------ pushing

    async def _pusher(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                await self._handle(ev)
            finally:
                self._queue.task_done()

    async def _handle(self, ev: ScanEvent) -> None:
        wb = ev.waybill_id
        history = self._histories.get(wb)
        registered = self._registered.get(wb)
        if history is None:
            history = self._histories[wb] = []
            registered = self._registered[wb] = asyncio.Event()
            try:
                await self._retry(lambda: self._register(ev))
            finally:
                registered.set()
        history.append(ev)
        if ev.event_type in FINAL_EVENT_TYPES:
            self._histories.pop(wb, None)
            self._registered.pop(wb, None)
        if registered is not None:
            # the order system registers the parcel before the carrier scans it: another pusher
            # may still be producing this parcel's registration
            await registered.wait()
        if AFTERSHIP_TAG[ev.event_type] is None:
            return  # the merchant's own scans: the registration stands for them
        feed = feed_of(wb)
        snapshot = list(history)
        conf = self.settings.ingest
        if feed == "aftership":
            assert conf.aftership_secret is not None
            secret = conf.aftership_secret.get_secret_value()

            def build() -> tuple[bytes, dict[str, str]]:
                return aftership_push(snapshot, secret, time.time())  # signed at each attempt
        else:
            assert conf.kuaidi100_salt is not None
            salt = conf.kuaidi100_salt.get_secret_value()

            def build() -> tuple[bytes, dict[str, str]]:
                return kuaidi100_push(snapshot, salt)

        async def post() -> bool:
            body, headers = build()
            async with self._session.post(f"{self.url}/v1/feeds/{feed}", data=body, headers=headers) as resp:
                reply = await resp.read()
            if resp.status == 503:  # the broker is busy or down: post again
                return False
            self.answered += 1
            if self.report is not None and self.sample(self.answered):
                self.report(
                    f"  push   #{self.answered:<5} {feed:<10} {wb:<14} {len(snapshot)} scans so far -> "
                    f"{resp.status} {_reply_text(reply)}"
                )
            return True

        await self._retry(post)

    async def _register(self, first: ScanEvent) -> bool:
        reg = registration_of(first)
        topic = self.settings.kafka.topics.shipments
        ack = await self._producer.send(topic, reg.waybill_id.encode(), encode_record(reg))
        await asyncio.wait_for(ack, 10.0)
        self.registrations += 1
        return True

    async def _retry(self, attempt: Callable[[], Awaitable[bool]]) -> None:
        delay = 0.1
        for _ in range(RETRIES):
            try:
                if await attempt():
                    return
            except Exception:  # the broker or the receiver hiccuped: try again, as a feed would
                await self._producer.reset()
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
        self.failed += 1


def _reply_text(reply: bytes) -> str:
    """The receiver's message to the vendor (both feeds answer JSON with ``message``)."""

    import json

    try:
        body = json.loads(reply)
    except ValueError:
        return reply[:80].decode(errors="replace")
    return str(body.get("message") if isinstance(body, dict) else body)[:80]
