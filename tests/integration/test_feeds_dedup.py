"""Concurrent pushes of the same history race the dedup: each scan must still be produced once.

The claims live in the real Redis. The first test is end to end (real HTTP,
real Tansu): a dozen pushes of overlapping histories of one parcel posted at
once. The others put a slow or failing producer behind the receiver, so
every push is inside the produce window of the others: a check-then-mark
dedup produces the scans once per push there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from logiwatch.config import Settings
from logiwatch.detectors.codec import decode_record
from logiwatch.detectors.model import Scan
from logiwatch.streams.ingest.aftership import AfterShipAdapter
from logiwatch.streams.ingest.dedup import ScanClaims
from logiwatch.streams.ingest.receiver import Producer, Receiver, Unavailable
from logiwatch.streams.metrics import IngestMetrics
from tests import feeds as F
from tests.helpers import wait_until
from tests.integration.test_feeds_receiver import SECRETS, ReceiverThread
from tests.integration.test_worker_support import TopicReader


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[Settings], ReceiverThread]]:
    made: list[ReceiverThread] = []

    def make(settings: Settings) -> ReceiverThread:
        made.append(ReceiverThread(settings))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_concurrent_pushes_of_the_same_history_produce_each_scan_once_through_http_and_kafka(
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    receiver_factory: Callable[[Settings], ReceiverThread],
) -> None:
    events = topic_factory("ev")
    settings = settings_factory(kafka={"topics": {"events": events}}, ingest={"port": 0, **SECRETS})
    rx = receiver_factory(settings)
    wb = f"AS-{uuid4().hex[:8]}"
    histories = [F.AS_FIRST, F.AS_FIRST + F.AS_MORE, F.AS_FIRST + F.AS_MORE + F.AS_DELIVERED]
    pushes = [F.aftership(wb, histories[i % 3]) for i in range(12)]
    start = threading.Barrier(len(pushes))

    def post(push: tuple[bytes, dict[str, str]]) -> int:
        start.wait(10)
        return rx.post("aftership", *push)[0]

    with ThreadPoolExecutor(len(pushes)) as pool:
        statuses = list(pool.map(post, pushes))
    assert statuses == [200] * len(pushes)
    expected = len(F.AS_FIRST + F.AS_MORE + F.AS_DELIVERED)
    reader = TopicReader(settings.kafka.bootstrap, events)
    try:
        wait_until(lambda: len(reader.poll()) >= expected, timeout=30, what=f"{expected} scans")
        time.sleep(1.0)  # a duplicate would be produced in the same rounds: give it the time to land
        ids = [decode_record(r.value, key=r.key).event_id for r in reader.poll()]  # type: ignore[union-attr]
    finally:
        reader.close()
    assert len(ids) == expected and len(set(ids)) == expected, ids


class SlowProducer(Producer):
    """Acknowledges after ``delay_s``; refuses the first ``fail_first`` sends (a broker hiccup)."""

    def __init__(self, delay_s: float, fail_first: int = 0) -> None:
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.sent: list[Scan] = []

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        if self.fail_first > 0:
            self.fail_first -= 1
            await asyncio.sleep(self.delay_s)
            raise Unavailable("broker down (test)")
        item = decode_record(value, key=key)
        assert isinstance(item, Scan)

        async def ack() -> None:
            await asyncio.sleep(self.delay_s)
            self.sent.append(item)

        return asyncio.ensure_future(ack())


async def _race(redis_url: str, prefix: str, producer: SlowProducer, n: int) -> list[int]:
    client = aioredis.Redis.from_url(redis_url)
    receiver = Receiver(
        adapters={"aftership": AfterShipAdapter(F.AFTERSHIP_SECRET, 3600)},
        producer=producer,
        claims=ScanClaims(client, prefix, 3600, pending_ms=30_000),
        events_topic="events",
        dlq_topic="dlq",
        metrics=IngestMetrics(CollectorRegistry()),
        produce_timeout_s=10.0,
    )
    body, headers = F.aftership("AS-RACE", F.AS_FIRST + F.AS_MORE)
    try:
        async with TestClient(TestServer(receiver.app())) as http:

            async def one() -> int:
                resp = await http.post("/v1/feeds/aftership", data=body, headers=headers)
                await resp.read()
                return resp.status

            return list(await asyncio.gather(*(one() for _ in range(n))))
    finally:
        await client.aclose()


def test_pushes_inside_each_others_produce_window_emit_each_scan_once(redis_url: str, redis_prefix: str) -> None:
    producer = SlowProducer(delay_s=0.3)
    statuses = asyncio.run(_race(redis_url, redis_prefix, producer, 8))
    assert statuses == [200] * 8
    ids = [s.event_id for s in producer.sent]
    assert len(ids) == len(F.AS_FIRST + F.AS_MORE) and len(set(ids)) == len(ids), ids


def test_when_the_claimant_cannot_produce_a_waiting_push_takes_its_scans_over(
    redis_url: str, redis_prefix: str
) -> None:
    # the first push's four sends fail (503); the pushes waiting on its claims produce them, once
    producer = SlowProducer(delay_s=0.2, fail_first=1)
    statuses = asyncio.run(_race(redis_url, redis_prefix, producer, 4))
    assert statuses.count(503) == 1 and statuses.count(200) == 3, statuses
    ids = [s.event_id for s in producer.sent]
    assert len(ids) == len(F.AS_FIRST + F.AS_MORE) and len(set(ids)) == len(ids), ids
