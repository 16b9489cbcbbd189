"""The worker's edge: every record is either decoded or dead-lettered, in order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from logiwatch.detectors.codec import encode_event, encode_tick
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE, EventType, NodeType, ScanEvent, Tick
from logiwatch.streams.dlq import decode_dead_letter, encode_dead_letter, make_dead_letter
from logiwatch.streams.records import DecodeLimits, decode_records, is_tick

NOW_MS = 1_795_000_000_000
DAY_MS = 86_400_000
LIMITS = DecodeLimits(max_event_bytes=16 * 1024, max_past_ms=400 * DAY_MS, max_future_ms=DAY_MS)


@dataclass
class Rec:
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "events"
    partition: int = 3
    timestamp: int = NOW_MS


def event(i: int, event_time: int = NOW_MS - 3600_000) -> ScanEvent:
    return ScanEvent(
        event_id=f"e{i}",
        waybill_id=f"WB{i}",
        order_id="O1",
        merchant_id="M1",
        carrier_id="C1",
        event_type=EventType.HUB_ARRIVED,
        node_id="HUB-1",
        node_type=NodeType.HUB,
        region="R1",
        origin_region="R1",
        dest_region="R2",
        event_time=event_time,
        promised_dispatch_by=NOW_MS,
        promised_delivery_by=NOW_MS + DAY_MS,
        category="books",
        order_amount=10.0,
    )


TICK = [(TICK_HEADER, TICK_HEADER_VALUE)]


@st.composite
def records(draw: st.DrawFn) -> list[Rec]:
    out = []
    for offset in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["event", "tick", "junk", "none", "bad_tick"]))
        if kind == "event":
            ev = event(offset)
            out.append(Rec(offset, encode_event(ev), key=ev.waybill_id.encode()))
        elif kind == "tick":
            out.append(Rec(offset, encode_tick(Tick(tick_time=NOW_MS + offset)), headers=TICK))
        elif kind == "bad_tick":
            out.append(Rec(offset, draw(st.binary(max_size=30)), headers=TICK))
        elif kind == "none":
            out.append(Rec(offset, None))
        else:
            out.append(Rec(offset, draw(st.binary(max_size=200))))
    return out


@given(records())
def test_every_record_is_decoded_or_dead_lettered_exactly_once_in_order(batch: list[Rec]) -> None:
    good, dead = decode_records(batch, LIMITS, NOW_MS)
    offsets = [o for o, _ in good] + [d.offset for d in dead]
    assert sorted(offsets) == [r.offset for r in batch]
    assert [o for o, _ in good] == sorted(o for o, _ in good)
    by_offset = {r.offset: r for r in batch}
    for letter in dead:
        src = by_offset[letter.offset]
        assert letter.original_value() == src.value
        assert (letter.topic, letter.partition) == (src.topic, src.partition)
        assert letter.reason
    for offset, item in good:
        assert isinstance(item, Tick) == is_tick(by_offset[offset].headers)


def test_tick_records_are_recognised_by_header_not_by_shape() -> None:
    raw = encode_tick(Tick(tick_time=NOW_MS))
    good, dead = decode_records([Rec(0, raw, headers=TICK), Rec(1, raw)], LIMITS, NOW_MS)
    assert [type(item) for _, item in good] == [Tick]
    assert [d.reason for d in dead] == ["missing_field"]  # a tick without the header is a broken event


def test_broken_tick_is_dead_lettered_with_its_own_reason() -> None:
    _, dead = decode_records([Rec(0, b"{nope", headers=TICK)], LIMITS, NOW_MS)
    assert [d.reason for d in dead] == ["bad_tick"]


def test_tick_from_the_future_is_dead_lettered_instead_of_firing_every_deadline() -> None:
    ahead = encode_tick(Tick(tick_time=NOW_MS + 2 * DAY_MS))
    near = encode_tick(Tick(tick_time=NOW_MS + DAY_MS // 2))
    good, dead = decode_records([Rec(0, ahead, headers=TICK), Rec(1, near, headers=TICK)], LIMITS, NOW_MS)
    assert [d.reason for d in dead] == ["time_out_of_range"]
    assert [off for off, _ in good] == [1]


def test_event_age_bound_comes_from_the_limits_so_old_exports_can_be_replayed() -> None:
    old = event(1, event_time=NOW_MS - 500 * DAY_MS)
    rec = Rec(0, encode_event(old), key=b"WB1")
    _, dead = decode_records([rec], LIMITS, NOW_MS)
    assert [d.reason for d in dead] == ["time_out_of_range"]
    wide = DecodeLimits(max_event_bytes=16 * 1024, max_past_ms=3 * 365 * DAY_MS, max_future_ms=DAY_MS)
    good, dead = decode_records([rec], wide, NOW_MS)
    assert not dead and good[0][1] == old


def test_key_must_match_the_waybill() -> None:
    _, dead = decode_records([Rec(0, encode_event(event(1)), key=b"WB2")], LIMITS, NOW_MS)
    assert [d.reason for d in dead] == ["key_mismatch"]


@given(key=st.none() | st.binary(max_size=64), value=st.none() | st.binary(max_size=512))
def test_dead_letter_json_round_trips_any_original_bytes(key: bytes | None, value: bytes | None) -> None:
    letter = make_dead_letter(
        reason="bad_json",
        detail="x",
        topic="t",
        partition=1,
        offset=7,
        key=key,
        value=value,
        failed_at_ms=NOW_MS,
    )
    raw = encode_dead_letter(letter)
    doc = json.loads(raw)
    assert set(doc) == {"reason", "detail", "topic", "partition", "offset", "key", "value", "failed_at"}
    back = decode_dead_letter(raw)
    assert (back.original_key(), back.original_value(), back.offset) == (key, value, 7)


def test_dead_letter_detail_is_bounded() -> None:
    letter = make_dead_letter(
        reason="oversize",
        detail="y" * 10_000,
        topic="t",
        partition=0,
        offset=0,
        key=None,
        value=b"",
        failed_at_ms=0,
    )
    assert len(letter.detail) <= 500
