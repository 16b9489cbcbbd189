"""Kafka records as the worker sees them, and their decoding into scans, ticks and registrations.

``decode_records`` splits one partition batch into decoded records and dead letters (pure
apart from its arguments, in partition order); the limits say what a record may be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from logiwatch.detectors.codec import decode_record, decode_registration, decode_tick
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import (
    TICK_HEADER,
    TICK_HEADER_VALUE,
    Scan,
    ScanEvent,
    ShipmentRegistration,
    Tick,
)
from logiwatch.streams.dlq import DeadLetter, make_dead_letter

Record = ScanEvent | Scan | ShipmentRegistration | Tick


class KafkaRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` the handler reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass
class DecodeLimits:
    max_event_bytes: int
    max_past_ms: int
    max_future_ms: int
    #: replays: no wall-clock window (event times only checked to lie in 2000..2100)
    event_time_only: bool = False
    #: contract v2: records of this topic are shipment registrations (see streams/join.py)
    shipments_topic: str | None = None


def is_tick(headers: Sequence[tuple[str, bytes]] | None) -> bool:
    if not headers:
        return False
    return any(k == TICK_HEADER and v == TICK_HEADER_VALUE for k, v in headers)


def decode_records(
    records: Sequence[KafkaRecord], limits: DecodeLimits, now_ms: int
) -> tuple[list[tuple[int, Record]], list[DeadLetter]]:
    """Split a partition batch into decoded (offset, record) pairs and dead letters.

    Pure apart from its arguments; keeps partition order.
    """

    good: list[tuple[int, Record]] = []
    dead: list[DeadLetter] = []
    for rec in records:
        value = rec.value if rec.value is not None else b""
        try:
            if is_tick(rec.headers):
                tick = decode_tick(value)
                if not limits.event_time_only and tick.tick_time > now_ms + limits.max_future_ms:
                    # a tick from the future would fire every pending deadline at once
                    raise DecodeError("time_out_of_range", f"tick_time {tick.tick_time} is in the future")
                item: Record = tick
            elif rec.topic == limits.shipments_topic:
                item = decode_registration(
                    value, max_bytes=limits.max_event_bytes, offset=rec.offset, key=rec.key
                )
            else:
                item = decode_record(
                    value,
                    now_ms=None if limits.event_time_only else now_ms,
                    max_bytes=limits.max_event_bytes,
                    max_past_ms=limits.max_past_ms,
                    max_future_skew_ms=limits.max_future_ms,
                    offset=rec.offset,
                    key=rec.key,
                )
        except DecodeError as exc:
            dead.append(
                make_dead_letter(
                    reason=exc.reason,
                    detail=exc.detail,
                    topic=rec.topic,
                    partition=rec.partition,
                    offset=rec.offset,
                    key=rec.key,
                    value=rec.value,
                    failed_at_ms=now_ms,
                )
            )
            continue
        good.append((rec.offset, item))
    return good, dead
