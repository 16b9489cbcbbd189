"""Feed adapters: vendors' signatures, code mappings, local times, stable ids across resends."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logiwatch.detectors.codec import decode_record, encode_record
from logiwatch.detectors.model import EventType, Scan
from logiwatch.streams.ingest.aftership import AfterShipAdapter
from logiwatch.streams.ingest.feeds import FEED_REASONS, FeedError
from logiwatch.streams.ingest.kuaidi100 import Kuaidi100Adapter
from logiwatch.streams.ingest.seventeentrack import SeventeenTrackAdapter
from tests import feeds as F

NOW = time.time()


def as_adapter() -> AfterShipAdapter:
    return AfterShipAdapter(F.AFTERSHIP_SECRET, replay_window_s=900)


def ids(scans: list[Scan]) -> list[str]:
    return [s.event_id for s in scans]


def test_aftership_signature_is_the_base64_hmac_sha256_of_the_raw_body() -> None:
    body, headers = F.aftership("AS1", F.AS_FIRST, ts=NOW)
    as_adapter().verify(headers, body, NOW)
    with pytest.raises(FeedError) as exc:
        as_adapter().verify(headers, body + b" ", NOW)  # one byte more: another HMAC
    assert exc.value.reason == "bad_signature"
    _, wrong = F.aftership("AS1", F.AS_FIRST, ts=NOW, secret="other")
    with pytest.raises(FeedError):
        as_adapter().verify(wrong, body, NOW)
    old, old_headers = F.aftership("AS1", F.AS_FIRST, ts=NOW - 3600)
    with pytest.raises(FeedError) as exc:
        as_adapter().verify(old_headers, old, NOW)
    assert exc.value.reason == "replayed"


def test_aftership_maps_tags_and_reads_local_times_with_and_without_offset() -> None:
    body, headers = F.aftership("AS1", F.AS_FIRST + F.AS_MORE + F.AS_EXCEPTION + F.AS_DELIVERED)
    scans = as_adapter().parse(body, headers).scans
    types = [s.event_type for s in scans]
    assert types == [
        EventType.DISPATCHED, EventType.PICKED_UP, EventType.HUB_ARRIVED, EventType.HUB_DEPARTED,
        EventType.EXCEPTION, EventType.DELIVERED,
    ]  # fmt: skip
    # 09:00 +08:00 is 01:00 UTC; the offset-less 02:10 in China is read in Asia/Shanghai
    assert scans[0].event_time == 1_788_224_400_000 and scans[0].time_basis == "offset"
    assert scans[2].event_time == 1_788_286_200_000 and scans[2].time_basis == "zone"
    assert scans[4].detail is not None and scans[4].detail.startswith("aftership:Exception_013")
    # the same hub gives the same node, whatever the scan
    assert scans[2].node_id == scans[3].node_id and scans[2].node_id.startswith("LOC-CN-")
    for s in scans:
        assert isinstance(decode_record(encode_record(s), key=b"AS1"), Scan)


def test_aftership_2026_01_field_names_give_the_same_scans() -> None:
    old = as_adapter().parse(*F.aftership("AS1", F.AS_FIRST + F.AS_MORE, version="2025-07")).scans
    new = as_adapter().parse(*F.aftership("AS1", F.AS_FIRST + F.AS_MORE, version="2026-01")).scans
    assert old == new and old[0].postcode == "518000" and old[0].country == "CHN"


def test_a_resent_history_with_more_checkpoints_keeps_the_first_ids() -> None:
    first = as_adapter().parse(*F.aftership("AS1", F.AS_FIRST)).scans
    resent = as_adapter().parse(*F.aftership("AS1", F.AS_FIRST + F.AS_MORE)).scans
    shuffled = as_adapter().parse(*F.aftership("AS1", F.AS_MORE[::-1] + F.AS_FIRST[::-1])).scans
    assert ids(resent)[:2] == ids(first) and len(set(ids(resent))) == 4
    assert sorted(ids(shuffled)) == sorted(ids(resent))  # out-of-order checkpoints: same ids


def test_seventeentrack_sign_is_hex_sha256_of_body_slash_key() -> None:
    adapter = SeventeenTrackAdapter(F.SEVENTEEN_KEY)
    body, headers = F.seventeentrack("ST1", F.ST_FIRST)
    adapter.verify(headers, body, NOW)
    with pytest.raises(FeedError) as exc:
        adapter.verify({"sign": headers["sign"][:-1] + "0"}, body, NOW)
    assert exc.value.reason == "bad_signature"
    with pytest.raises(FeedError):
        adapter.verify({}, body, NOW)


def test_seventeentrack_maps_sub_statuses_prefers_time_utc_and_handles_stopped() -> None:
    adapter = SeventeenTrackAdapter(F.SEVENTEEN_KEY)
    scans = adapter.parse(*F.seventeentrack("ST1", F.ST_FIRST + F.ST_MORE + F.ST_EXCEPTION + F.ST_DELIVERED)).scans
    by_type = {s.event_type: s for s in scans}
    assert [s.event_type for s in sorted(scans, key=lambda s: s.event_time)] == [
        EventType.DISPATCHED, EventType.PICKED_UP, EventType.HUB_ARRIVED, EventType.HUB_DEPARTED,
        EventType.EXCEPTION, EventType.DELIVERED,
    ]  # fmt: skip
    assert by_type[EventType.DISPATCHED].event_time == 1_788_228_000_000  # time_utc
    assert by_type[EventType.HUB_ARRIVED].time_basis == "zone"  # offset-less, CN
    assert by_type[EventType.EXCEPTION].detail == "17track:Exception_Delayed Delayed by weather"
    assert adapter.parse(*F.seventeentrack("ST1", F.ST_FIRST, stopped=True)).scans == []
    more = adapter.parse(*F.seventeentrack("ST1", F.ST_FIRST + F.ST_MORE)).scans
    first = adapter.parse(*F.seventeentrack("ST1", F.ST_FIRST)).scans
    assert set(ids(first)) <= set(ids(more))


def test_kuaidi100_sign_is_upper_md5_of_param_and_salt_and_the_reply_is_its_format() -> None:
    adapter = Kuaidi100Adapter(F.KUAIDI_SALT)
    body, headers = F.kuaidi100("KD1", F.KD_FIRST)
    adapter.verify(headers, body, NOW)
    form = parse_qs(body.decode())
    tampered = urlencode({"param": form["param"][0].replace("KD1", "KD2"), "sign": form["sign"][0]}).encode()
    with pytest.raises(FeedError) as exc:
        adapter.verify(headers, tampered, NOW)
    assert exc.value.reason == "bad_signature"
    assert json.loads(adapter.reply(True, "ok")[1]) == {"result": True, "returnCode": "200", "message": "ok"}


def test_kuaidi100_maps_states_facilities_and_china_local_time() -> None:
    adapter = Kuaidi100Adapter(F.KUAIDI_SALT)
    scans = adapter.parse(*F.kuaidi100("KD1", F.KD_FIRST + F.KD_MORE + F.KD_EXCEPTION + F.KD_DELIVERED, state="301")).scans
    ordered = sorted(scans, key=lambda s: s.event_time)
    assert [s.event_type for s in ordered] == [
        EventType.PICKED_UP, EventType.HUB_DEPARTED, EventType.HUB_ARRIVED, EventType.HUB_DEPARTED,
        EventType.EXCEPTION, EventType.DELIVERED,
    ]  # fmt: skip
    assert ordered[0].event_time == 1_788_226_200_000 and ordered[0].time_basis == "zone"  # 09:30 CST = 01:30 UTC
    assert ordered[0].location == "杭州西湖营业部" and ordered[0].region == "CN-330000"
    assert ordered[4].detail is not None and ordered[4].detail.startswith("kuaidi100:201")
    resent = adapter.parse(*F.kuaidi100("KD1", F.KD_FIRST + F.KD_MORE)).scans
    first = adapter.parse(*F.kuaidi100("KD1", F.KD_FIRST)).scans
    assert set(ids(first)) <= set(ids(resent))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)


def _mutate(doc: object, data: st.DataObject) -> object:
    """Replace one random node of the document with a random JSON value."""

    if isinstance(doc, dict) and doc and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(doc)))
        return {**doc, key: _mutate(doc[key], data)}
    if isinstance(doc, list) and doc and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(doc) - 1))
        return doc[:i] + [_mutate(doc[i], data)] + doc[i + 1 :]
    return data.draw(json_values)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data(), feed=st.sampled_from(["aftership", "17track", "kuaidi100"]))
def test_a_mangled_push_never_crashes_a_mapper_and_every_output_decodes(data: st.DataObject, feed: str) -> None:
    if feed == "aftership":
        body, headers = F.aftership("AS1", F.AS_FIRST + F.AS_MORE + F.AS_EXCEPTION)
        adapter: object = as_adapter()
        doc = _mutate(json.loads(body), data)
        raw = json.dumps(doc).encode()
    elif feed == "17track":
        body, headers = F.seventeentrack("ST1", F.ST_FIRST + F.ST_MORE)
        adapter = SeventeenTrackAdapter(F.SEVENTEEN_KEY)
        raw = json.dumps(_mutate(json.loads(body), data)).encode()
    else:
        body, headers = F.kuaidi100("KD1", F.KD_FIRST + F.KD_MORE)
        adapter = Kuaidi100Adapter(F.KUAIDI_SALT)
        param = json.loads(parse_qs(body.decode())["param"][0])
        raw = urlencode({"param": json.dumps(_mutate(param, data)), "sign": "x"}).encode()
    try:
        parsed = adapter.parse(raw, headers)  # type: ignore[attr-defined]
    except FeedError as exc:
        assert exc.reason in FEED_REASONS and exc.detail
        return
    for scan in parsed.scans:
        assert isinstance(decode_record(encode_record(scan)), Scan)
