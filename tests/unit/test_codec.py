"""The event contract's edge validation: every rejection has a stable reason."""

from __future__ import annotations

import json

import pytest

from logiwatch.detectors.codec import decode_event, encode_event
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import EventType, ScanEvent
from tests.helpers import SAMPLE_T0_MS, sample_event_dict

T0 = SAMPLE_T0_MS


def good(**over: object) -> dict[str, object]:
    return sample_event_dict(**over)


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
