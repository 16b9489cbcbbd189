"""Encoding and edge validation of the records in ``docs/events.md``.

``decode_event`` is the one place where raw bytes become a trusted
:class:`ScanEvent`; anything it rejects raises :class:`DecodeError` with a
stable reason code that the stream shell puts on the dead letter and in a
metric label. Pure: no I/O, the "now" used for the time sanity check is an
argument.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec

from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import (
    V2_SCHEMA_VERSION,
    Alert,
    Label,
    Scan,
    ScanEvent,
    ShipmentRegistration,
    Tick,
)

#: Stable reason codes for dead letters (also metric label values).
REASONS = (
    "oversize",
    "bad_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_enum",
    "bad_value",
    "unsupported_version",
    "time_out_of_range",
    "key_mismatch",
)

MAX_EVENT_BYTES = 16 * 1024
#: Events further than this ahead of "now" are rejected (clock skew bound).
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000
#: Events older than this before "now" are rejected (absurdly old).
MAX_PAST_MS = 400 * 24 * 3600 * 1000
#: Absolute sanity bounds used when no "now" is given (2000-01-01 .. 2100-01-01).
MIN_EVENT_TIME_MS = 946_684_800_000
MAX_EVENT_TIME_MS = 4_102_444_800_000

_event_decoder = msgspec.json.Decoder(ScanEvent)
_tick_decoder = msgspec.json.Decoder(Tick)
_alert_decoder = msgspec.json.Decoder(Alert)
_label_decoder = msgspec.json.Decoder(Label)
_encoder = msgspec.json.Encoder()

_T = TypeVar("_T")

_MISSING = re.compile(r"missing required field")
_ENUM = re.compile(r"Invalid enum value")
_TYPE = re.compile(r"^Expected `")


def _classify(message: str) -> str:
    if _MISSING.search(message):
        return "missing_field"
    if _ENUM.search(message):
        return "bad_enum"
    if "schema_version" in message:
        return "unsupported_version"
    if _TYPE.search(message) and ", got `" in message:
        return "wrong_type"
    return "bad_value"  # a constraint: range, length


def decode_event(
    data: bytes,
    *,
    now_ms: int | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    max_future_skew_ms: int = MAX_FUTURE_SKEW_MS,
    max_past_ms: int = MAX_PAST_MS,
    offset: int | None = None,
    key: bytes | None = None,
) -> ScanEvent:
    """Decode and validate one scan event, or raise ``DecodeError``.

    With ``now_ms`` the event time must lie within ``[now - max_past_ms,
    now + max_future_skew_ms]``; without it, within 2000..2100. With ``key``
    the Kafka key must equal the waybill id.

    >>> ev = decode_event(b'{"event_id":"e1"}')
    Traceback (most recent call last):
    ...
    logiwatch.detectors.errors.DecodeError: missing_field: Object missing required field `waybill_id`
    """

    if len(data) > max_bytes:
        raise DecodeError("oversize", f"{len(data)} bytes > limit {max_bytes}", offset)
    try:
        event = _event_decoder.decode(data)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        if msg.startswith("Expected `object`, got") and "$." not in msg:
            raise DecodeError("not_object", msg, offset) from None
        raise DecodeError(_classify(msg), msg, offset) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec raises UnicodeDecodeError (not its own DecodeError) for
        # invalid UTF-8 inside a JSON string: still just bad JSON.
        raise DecodeError("bad_json", str(exc), offset) from None
    t = event.event_time
    if now_ms is None:
        lo, hi = MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS
    else:
        lo, hi = now_ms - max_past_ms, now_ms + max_future_skew_ms
    if not lo <= t <= hi:
        raise DecodeError("time_out_of_range", f"event_time {t} outside [{lo}, {hi}]", offset)
    for name in ("promised_dispatch_by", "promised_delivery_by"):
        value = getattr(event, name)
        if not MIN_EVENT_TIME_MS <= value <= MAX_EVENT_TIME_MS:
            raise DecodeError("time_out_of_range", f"{name} {value} outside 2000..2100", offset)
    if key is not None and key != event.waybill_id.encode():
        raise DecodeError("key_mismatch", "Kafka key differs from waybill_id", offset)
    return event


class _Versioned(msgspec.Struct):
    schema_version: int = 1


_version_decoder = msgspec.json.Decoder(_Versioned)
_scan_decoder = msgspec.json.Decoder(Scan)
_registration_decoder = msgspec.json.Decoder(ShipmentRegistration)
#: v1 failures after which a payload may still be a valid v2 scan
_MAYBE_V2 = frozenset({"missing_field", "unsupported_version", "wrong_type", "bad_value", "bad_enum"})


def _peek_version(data: bytes) -> int | None:
    try:
        return _version_decoder.decode(data).schema_version
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _decode_v2(decoder: msgspec.json.Decoder[_T], data: bytes, offset: int | None) -> _T:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        if msg.startswith("Expected `object`, got") and "$." not in msg:
            raise DecodeError("not_object", msg, offset) from None
        raise DecodeError(_classify(msg), msg, offset) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError("bad_json", str(exc), offset) from None


def _check_time(name: str, t: int, now_ms: int | None, max_past_ms: int, max_future_skew_ms: int, offset: int | None) -> None:
    if now_ms is None:
        lo, hi = MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS
    else:
        lo, hi = now_ms - max_past_ms, now_ms + max_future_skew_ms
    if not lo <= t <= hi:
        raise DecodeError("time_out_of_range", f"{name} {t} outside [{lo}, {hi}]", offset)


def decode_record(
    data: bytes,
    *,
    now_ms: int | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    max_future_skew_ms: int = MAX_FUTURE_SKEW_MS,
    max_past_ms: int = MAX_PAST_MS,
    offset: int | None = None,
    key: bytes | None = None,
) -> ScanEvent | Scan:
    """A record of ``logistics.events``: a v1 :class:`ScanEvent` or a v2 :class:`Scan`.

    The v1 path is :func:`decode_event` unchanged (it is tried first: it is
    the common case and costs nothing extra); a payload it rejects whose
    ``schema_version`` is 2 is decoded as a slim scan instead, with the same
    reason codes and time and key checks.

    >>> decode_record(b'{"schema_version":2,"event_id":"e","waybill_id":"W","event_time":1790000000000,'
    ...               b'"event_type":"PICKED_UP","city":"Shenzhen","country":"CN"}').city
    'Shenzhen'
    >>> decode_record(b'{"schema_version":3}')
    Traceback (most recent call last):
    ...
    logiwatch.detectors.errors.DecodeError: unsupported_version: schema_version 3 (this build reads 1 and 2)
    """

    try:
        return decode_event(
            data,
            now_ms=now_ms,
            max_bytes=max_bytes,
            max_future_skew_ms=max_future_skew_ms,
            max_past_ms=max_past_ms,
            offset=offset,
            key=key,
        )
    except DecodeError as exc:
        if exc.reason not in _MAYBE_V2:
            raise
        version = _peek_version(data)
        if version == 1 or version is None:
            raise
        if version != V2_SCHEMA_VERSION:
            raise DecodeError(
                "unsupported_version", f"schema_version {version} (this build reads 1 and 2)", offset
            ) from None
    scan = _decode_v2(_scan_decoder, data, offset)
    _check_time("event_time", scan.event_time, now_ms, max_past_ms, max_future_skew_ms, offset)
    if key is not None and key != scan.waybill_id.encode():
        raise DecodeError("key_mismatch", "Kafka key differs from waybill_id", offset)
    return scan


def decode_registration(
    data: bytes,
    *,
    max_bytes: int = MAX_EVENT_BYTES,
    offset: int | None = None,
    key: bytes | None = None,
) -> ShipmentRegistration:
    """A record of ``logistics.shipments`` (contract v2), or ``DecodeError`` with a reason.

    >>> decode_registration(b'{"waybill_id":"W1","registered_at":1790000000000,"order_amount":-1}')
    Traceback (most recent call last):
    ...
    logiwatch.detectors.errors.DecodeError: bad_value: Expected `float` >= 0.0 - at `$.order_amount`
    """

    if len(data) > max_bytes:
        raise DecodeError("oversize", f"{len(data)} bytes > limit {max_bytes}", offset)
    reg = _decode_v2(_registration_decoder, data, offset)
    for name in ("registered_at", "updated_at", "promised_dispatch_by", "promised_delivery_by"):
        value = getattr(reg, name)
        if value is not None and not MIN_EVENT_TIME_MS <= value <= MAX_EVENT_TIME_MS:
            raise DecodeError("time_out_of_range", f"{name} {value} outside 2000..2100", offset)
    if key is not None and key != reg.waybill_id.encode():
        raise DecodeError("key_mismatch", "Kafka key differs from waybill_id", offset)
    return reg


def encode_record(record: msgspec.Struct) -> bytes:
    """JSON of any contract record (scan v1 or v2, registration, tick)."""

    return _encoder.encode(record)


def encode_event(event: ScanEvent) -> bytes:
    return _encoder.encode(event)


def decode_tick(data: bytes) -> Tick:
    try:
        return _tick_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # ValidationError is a subclass
        raise DecodeError("bad_tick", str(exc)) from None


def encode_tick(tick: Tick) -> bytes:
    return _encoder.encode(tick)


def encode_alert(alert: Alert) -> bytes:
    return _encoder.encode(alert)


def decode_alert(data: bytes) -> Alert:
    try:
        return _alert_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(_classify(str(exc)), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("bad_json", str(exc)) from None


def to_builtins(obj: object) -> object:
    """Plain dict/list form of a record (for JSON APIs and tests)."""

    return msgspec.to_builtins(obj)


def read_events(path: str | Path) -> Iterator[ScanEvent]:
    """Read a JSONL event log, raising ``DecodeError`` (with the line) on a bad line."""

    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield decode_event(line, offset=lineno)
            except DecodeError as exc:
                raise DecodeError(exc.reason, f"{path}:{lineno}: {exc.detail}", lineno) from None


def read_labels(path: str | Path) -> list[Label]:
    labels = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                try:
                    labels.append(_label_decoder.decode(line))
                except msgspec.DecodeError as exc:
                    raise DecodeError("bad_label", f"{path}:{lineno}: {exc}", lineno) from None
    return labels


def write_jsonl(path: str | Path, records: Iterable[msgspec.Struct]) -> int:
    n = 0
    with open(path, "wb") as fh:
        for rec in records:
            fh.write(_encoder.encode(rec))
            fh.write(b"\n")
            n += 1
    return n
