"""Phases ``raw_aiokafka`` and ``raw_kafka_python``: the client ceilings. Each
reads the workload with the bare client (aiokafka ``getmany``, kafka-python
``poll``), decoding every event as the worker does, and clocks the first to
the last record.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from logiwatch.bench.figures import BATCH, PROGRESS_TIMEOUT_S, rate
from logiwatch.detectors.codec import decode_event
from logiwatch.errors import LogiwatchError


def _raw_consumer_settings(client: str, session_ms: int) -> dict[str, Any]:
    """What both raw consumers share: a fresh group from the start, manual commits, large fetches."""

    return {
        "group_id": f"bench-raw-{client}-{uuid.uuid4().hex[:8]}",
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": session_ms,
        "heartbeat_interval_ms": min(2000, session_ms // 3),
        "max_partition_fetch_bytes": 8 << 20,
        "fetch_max_bytes": 64 << 20,
    }


class _RawClock:
    """The count and clock of one raw consumer loop, whichever client fetches.

    The loop asks :meth:`running`, hands each fetch to :meth:`decode` (every
    record is decoded, as the worker would), commits when it returns true and
    then calls :meth:`committed`; :meth:`result` checks the count. The clock
    runs from the first fetch with records to the last commit.
    """

    def __init__(self, client: str, expected: int, max_seconds: float | None) -> None:
        self.client, self.expected, self.max_seconds = client, expected, max_seconds
        self.seen = 0
        self.first = self.last = 0.0
        self.idle_since = time.monotonic()
        self.now_ms = int(time.time() * 1000)

    def running(self) -> bool:
        over_budget = bool(
            self.seen and self.max_seconds and time.perf_counter() - self.first >= self.max_seconds
        )
        return self.seen < self.expected and not over_budget

    def decode(self, batches: Mapping[Any, Sequence[Any]]) -> bool:
        """Decode a fetch's records; false for an empty fetch (which fails once progress stalls)."""

        if not batches:
            if time.monotonic() - self.idle_since > PROGRESS_TIMEOUT_S:
                raise LogiwatchError(
                    f"{self.client} consumer stalled at {self.seen:,}/{self.expected:,} events"
                )
            return False
        if not self.seen:
            self.first = time.perf_counter()
        for records in batches.values():
            for record in records:
                decode_event(record.value, now_ms=self.now_ms)
            self.seen += len(records)
        return True

    def committed(self) -> None:
        self.last = time.perf_counter()
        self.idle_since = time.monotonic()

    def result(self) -> tuple[float, int]:
        """``(events/s, events clocked)``; fails unless every event was seen or the budget ran out."""

        if self.seen > self.expected or (self.seen < self.expected and not self.max_seconds):
            raise LogiwatchError(
                f"{self.client} consumer saw {self.seen:,} events, expected {self.expected:,}"
            )
        return rate(self.seen, self.last - self.first), self.seen


async def _raw_aiokafka(
    bootstrap: str, topic: str, expected: int, session_ms: int, max_seconds: float | None
) -> tuple[float, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, **_raw_consumer_settings("aiokafka", session_ms)
    )
    await consumer.start()
    try:
        clock = _RawClock("aiokafka", expected, max_seconds)
        while clock.running():
            if clock.decode(await consumer.getmany(timeout_ms=1000, max_records=BATCH)):
                await consumer.commit()
                clock.committed()
        return clock.result()
    finally:
        await consumer.stop()


def raw_aiokafka_eps(
    bootstrap: str, topic: str, expected: int, session_ms: int, max_seconds: float | None = None
) -> tuple[float, int]:
    """Events/s of an aiokafka ``getmany`` loop that decodes every event, and how many it clocked."""

    return asyncio.run(_raw_aiokafka(bootstrap, topic, expected, session_ms, max_seconds))


def raw_kafka_python_eps(
    bootstrap: str, topic: str, expected: int, session_ms: int, max_seconds: float | None = None
) -> tuple[float, int]:
    """Events/s of a kafka-python ``poll`` loop that decodes every event, and how many it clocked."""

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        max_poll_records=BATCH,
        **_raw_consumer_settings("kafka-python", session_ms),
    )
    try:
        clock = _RawClock("kafka-python", expected, max_seconds)
        while clock.running():
            if clock.decode(consumer.poll(timeout_ms=1000, max_records=BATCH)):
                consumer.commit()
                clock.committed()
        return clock.result()
    finally:
        consumer.close()
