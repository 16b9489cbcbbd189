"""The event contract's edge validation: every rejection has a stable reason."""

from __future__ import annotations

import json

import pytest

from logiwatch.detectors.codec import decode_event, encode_event
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import EventType, ScanEvent

T0 = 1_790_000_000_000


def good(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e-1",
        "waybill_id": "WB1",
        "order_id": "O1",
        "merchant_id": "M1",
        "carrier_id": "C1",
        "event_type": "HUB_ARRIVED",
        "node_id": "HUB-1",
        "node_type": "HUB",
        "region": "east",
        "origin_region": "east",
        "dest_region": "north",
        "event_time": T0,
        "promised_dispatch_by": T0 + 3_600_000,
        "promised_delivery_by": T0 + 86_400_000,
        "category": "home_textile",
        "order_amount": 129.0,
    }
    base.update(over)
    return base


def test_valid_event_round_trips() -> None:
    ev = decode_event(json.dumps(good()).encode())
    assert isinstance(ev, ScanEvent) and ev.event_type is EventType.HUB_ARRIVED
    assert decode_event(encode_event(ev)) == ev


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"[1,2]", "not_object"),
        (json.dumps({k: v for k, v in good().items() if k != "waybill_id"}).encode(), "missing_field"),
        (json.dumps(good(event_time="yesterday")).encode(), "wrong_type"),
        (json.dumps(good(event_type="TELEPORTED")).encode(), "bad_enum"),
        (json.dumps(good(order_amount=-1)).encode(), "bad_value"),
        (json.dumps(good(schema_version=99)).encode(), "unsupported_version"),
        (json.dumps(good(event_time=5)).encode(), "time_out_of_range"),
        (json.dumps(good(category="x" * 20_000)).encode(), "oversize"),
    ],
)
def test_each_bad_input_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(raw, offset=42)
    assert info.value.reason == reason
    assert info.value.offset == 42


def test_event_far_in_the_future_relative_to_now_is_rejected() -> None:
    raw = json.dumps(good(event_time=T0 + 3 * 86_400_000)).encode()
    with pytest.raises(DecodeError) as info:
        decode_event(raw, now_ms=T0)
    assert info.value.reason == "time_out_of_range"
    assert decode_event(json.dumps(good()).encode(), now_ms=T0).event_time == T0


def test_kafka_key_must_match_the_waybill() -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(json.dumps(good()).encode(), key=b"WB2")
    assert info.value.reason == "key_mismatch"
