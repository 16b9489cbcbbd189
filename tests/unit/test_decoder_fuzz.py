"""Hostile input to the event decoder: it either trusts or rejects, never crashes.

``decode_event`` is the only door from raw Kafka bytes into the engine. These
property-based tests throw arbitrary bytes, arbitrary JSON and mutated valid
events at it and require one of two outcomes: a ``ScanEvent`` that satisfies
the contract's bounds, or a ``DecodeError`` whose reason is one of the stable
codes in ``REASONS`` (what the dead-letter path and its metric label rely
on). Any other exception would stop a worker's fetch loop or lose the record.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from logiwatch.detectors.codec import (
    MAX_EVENT_BYTES,
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    REASONS,
    decode_event,
    decode_tick,
    encode_event,
)
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import ScanEvent
from tests.helpers import SAMPLE_T0_MS, sample_event_dict

T0 = SAMPLE_T0_MS

FIELDS = (
    "event_id",
    "waybill_id",
    "order_id",
    "merchant_id",
    "carrier_id",
    "event_type",
    "node_id",
    "node_type",
    "region",
    "origin_region",
    "dest_region",
    "event_time",
    "promised_dispatch_by",
    "promised_delivery_by",
    "category",
    "order_amount",
    "schema_version",
    "lat",
    "lon",
    "detail",
)


def valid_event() -> dict[str, Any]:
    return sample_event_dict()


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def check(data: bytes, **kwargs: Any) -> ScanEvent | DecodeError:
    """Decode and assert the contract; return what came out for further checks."""

    try:
        event = decode_event(data, **kwargs)
    except DecodeError as exc:
        assert exc.reason in REASONS, f"unknown reason {exc.reason!r} for {data[:80]!r}"
        assert exc.detail, "a rejection must explain itself"
        return exc
    # Anything other than DecodeError propagates and fails the test.
    assert isinstance(event, ScanEvent)
    assert MIN_EVENT_TIME_MS <= event.promised_delivery_by <= MAX_EVENT_TIME_MS
    assert MIN_EVENT_TIME_MS <= event.promised_dispatch_by <= MAX_EVENT_TIME_MS
    assert 1 <= len(event.waybill_id) <= 128
    assert event.order_amount >= 0
    return event


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_rejected_with_a_known_reason(data: bytes) -> None:
    # Random bytes almost never form a valid event; either way the contract holds.
    check(data)


@settings(max_examples=150)
@given(json_values)
def test_arbitrary_json_documents_never_crash_the_decoder(value: Any) -> None:
    result = check(json.dumps(value).encode())
    assert isinstance(result, DecodeError), "a document without the event fields cannot be an event"


@settings(max_examples=200)
@given(
    field=st.sampled_from(FIELDS),
    value=json_values,
    drop=st.booleans(),
)
def test_a_valid_event_with_one_field_mutated_decodes_or_is_rejected_cleanly(
    field: str, value: Any, drop: bool
) -> None:
    doc = valid_event()
    if drop:
        doc.pop(field, None)
    else:
        doc[field] = value
    result = check(json.dumps(doc).encode())
    if drop and field in valid_event():
        assert isinstance(result, DecodeError) and result.reason == "missing_field"


@settings(max_examples=300)
@example(cut=400, flips=[(20, 0x80)])  # invalid UTF-8 inside a string: once escaped as UnicodeDecodeError
@given(
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=6),
)
def test_truncated_or_bit_flipped_events_never_crash_the_decoder(
    cut: int, flips: list[tuple[int, int]]
) -> None:
    raw = bytearray(json.dumps(valid_event()).encode())
    for pos, byte in flips:
        if pos < len(raw):
            raw[pos] = byte
    check(bytes(raw[: max(cut, 1)] if cut < len(raw) else raw))


@settings(max_examples=60)
@given(extra=st.dictionaries(st.text(min_size=1, max_size=20), json_values, max_size=5))
def test_unknown_fields_are_ignored_for_forward_compatibility(extra: dict[str, Any]) -> None:
    # every field the event knows, optional ones included (``registration`` is one)
    assume(not set(extra) & (set(FIELDS) | set(ScanEvent.__struct_fields__)))
    doc = {**valid_event(), **extra}
    result = check(json.dumps(doc).encode())
    assert isinstance(result, ScanEvent)
    assert result.waybill_id == "WB1"


@settings(max_examples=200)
@given(key=st.binary(max_size=40))
def test_a_kafka_key_other_than_the_waybill_is_a_key_mismatch(key: bytes) -> None:
    raw = json.dumps(valid_event()).encode()
    result = check(raw, key=key)
    if key == b"WB1":
        assert isinstance(result, ScanEvent)
    else:
        assert isinstance(result, DecodeError) and result.reason == "key_mismatch"


@settings(max_examples=100)
@given(pad=st.integers(min_value=1, max_value=4 * MAX_EVENT_BYTES))
def test_oversized_records_are_rejected_before_parsing(pad: int) -> None:
    doc = {**valid_event(), "detail": "x"}
    raw = json.dumps(doc).encode()
    data = raw + b" " * (MAX_EVENT_BYTES - len(raw) + pad)
    result = check(data)
    assert isinstance(result, DecodeError) and result.reason == "oversize"


@settings(max_examples=200)
@given(
    event_time=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    now_offset=st.integers(min_value=-(10**12), max_value=10**12),
)
def test_event_times_outside_the_window_are_time_out_of_range(event_time: int, now_offset: int) -> None:
    now_ms = T0 + now_offset
    doc = {**valid_event(), "event_time": event_time}
    result = check(json.dumps(doc).encode(), now_ms=now_ms)
    if isinstance(result, ScanEvent):
        assert now_ms - 400 * 24 * 3600 * 1000 <= result.event_time <= now_ms + 24 * 3600 * 1000
    elif event_time >= 0:
        assert result.reason == "time_out_of_range"


def test_every_valid_event_survives_an_encode_decode_round_trip() -> None:
    event = decode_event(json.dumps(valid_event()).encode())
    again = decode_event(encode_event(event))
    assert msgspec.structs.asdict(again) == msgspec.structs.asdict(event)


def test_invalid_utf8_inside_a_string_is_bad_json_not_a_crash() -> None:
    raw = json.dumps(valid_event()).encode().replace(b'"HUB-1"', b'"HUB-\x80"')
    result = check(raw)
    assert isinstance(result, DecodeError) and result.reason == "bad_json"


@settings(max_examples=100)
@given(st.binary(max_size=512) | json_values.map(lambda v: json.dumps(v).encode()))
def test_tick_decoder_rejects_garbage_with_decode_error(data: bytes) -> None:
    try:
        decode_tick(data)
    except DecodeError as exc:
        assert exc.reason == "bad_tick"
