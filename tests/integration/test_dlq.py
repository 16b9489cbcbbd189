"""Malformed records go through the real worker into the dead-letter topic.

Hypothesis builds a mix of valid scan events and malformed ones, each
malformed one with the reason code it must get (bad JSON, missing field,
wrong type, unknown enum, absurd event time, oversize, not an object, key
mismatch). They are produced to Tansu, a ``logiwatch worker`` subprocess
consumes them, and every malformed record must appear on the DLQ exactly
once with its reason, its original bytes and its source offset, while every
valid one is processed: count in = processed + dead-lettered, nothing lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logiwatch.config import Settings
from logiwatch.detectors.model import EventType, NodeType
from logiwatch.streams.dlq import decode_dead_letter
from logiwatch.streams.state import partition_keys
from tests.helpers import wait_until
from tests.integration.test_worker_support import TopicReader, WorkerProcess, committed_offsets, produce_raw

NOW_MS = int(time.time() * 1000)
DAY_MS = 24 * 3600 * 1000
REQUIRED = [
    "event_id", "waybill_id", "order_id", "merchant_id", "carrier_id", "event_type", "node_id",
    "node_type", "region", "origin_region", "dest_region", "event_time", "promised_dispatch_by",
    "promised_delivery_by", "category", "order_amount",
]  # fmt: skip


def _event(i: int) -> dict[str, Any]:
    wb = f"WB-{i}"
    return {
        "event_id": f"ev-{i}",
        "waybill_id": wb,
        "order_id": f"O-{i}",
        "merchant_id": "M-1",
        "carrier_id": "C-1",
        "event_type": EventType.ORDER_PAID.value,
        "node_id": "MERCHANT-1",
        "node_type": NodeType.MERCHANT.value,
        "region": "R1",
        "origin_region": "R1",
        "dest_region": "R2",
        "event_time": NOW_MS - 3600_000 + i,
        "promised_dispatch_by": NOW_MS + DAY_MS,
        "promised_delivery_by": NOW_MS + 4 * DAY_MS,
        "category": "books",
        "order_amount": 42.0,
    }


def _enc(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


@st.composite
def malformed(draw: st.DrawFn, i: int) -> tuple[bytes, bytes, str]:
    """(key, value, expected reason) for one broken record."""

    ev = _event(i)
    key = ev["waybill_id"].encode()
    kind = draw(
        st.sampled_from(
            [
                "bad_json",
                "missing_field",
                "wrong_type",
                "bad_enum",
                "future",
                "past",
                "oversize",
                "not_object",
                "key",
            ]
        )
    )
    if kind == "bad_json":
        raw = _enc(ev)
        return key, raw[: draw(st.integers(1, len(raw) - 1))], "bad_json"
    if kind == "missing_field":
        del ev[draw(st.sampled_from(REQUIRED))]
        return key, _enc(ev), "missing_field"
    if kind == "wrong_type":
        field = draw(st.sampled_from(["order_id", "merchant_id", "event_time", "order_amount", "region"]))
        ev[field] = draw(st.sampled_from([[1, 2], {"x": 1}, True])) if field != "event_time" else "yesterday"
        return key, _enc(ev), "wrong_type"
    if kind == "bad_enum":
        field = draw(st.sampled_from(["event_type", "node_type"]))
        ev[field] = draw(st.text(alphabet="abcdefXYZ_", min_size=1, max_size=12))
        return key, _enc(ev), "bad_enum"
    if kind == "future":
        ev["event_time"] = NOW_MS + draw(st.integers(2, 10_000)) * DAY_MS
        return key, _enc(ev), "time_out_of_range"
    if kind == "past":
        ev["event_time"] = NOW_MS - draw(st.integers(401, 9_000)) * DAY_MS
        return key, _enc(ev), "time_out_of_range"
    if kind == "oversize":
        ev["padding"] = "x" * draw(st.integers(17 * 1024, 64 * 1024))
        return key, _enc(ev), "oversize"
    if kind == "not_object":
        return key, _enc(draw(st.sampled_from([[ev], 7, "event", None]))), "not_object"
    return b"other-" + key, _enc(ev), "key_mismatch"


@st.composite
def mixed_stream(draw: st.DrawFn) -> list[tuple[bytes, bytes, str | None]]:
    n = draw(st.integers(60, 120))
    out: list[tuple[bytes, bytes, str | None]] = []
    for i in range(n):
        if draw(st.booleans()):
            ev = _event(i)
            out.append((ev["waybill_id"].encode(), _enc(ev), None))
        else:
            out.append(draw(malformed(i)))
    return out


@settings(
    max_examples=1,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(records=mixed_stream())
def test_every_malformed_record_lands_in_the_dlq_with_reason_bytes_and_offset(
    records: list[tuple[bytes, bytes, str | None]],
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    settings_factory: Callable[..., Settings],
    redis_url: str,
    tmp_path: Path,
) -> None:
    events, alerts, dlq = topic_factory("ev"), topic_factory("al"), topic_factory("dlq", partitions=1)
    cfg = settings_factory(
        kafka={"topics": {"events": events, "alerts": alerts, "dlq": dlq}, "worker_group": f"g-{events}"}
    )
    placed = produce_raw(kafka_bootstrap, events, [(k, v, None, None) for k, v, _ in records])
    expected = {placed[i]: (v, reason) for i, (_, v, reason) in enumerate(records) if reason is not None}
    valid_waybills = {k.decode() for k, _, reason in records if reason is None}

    worker = WorkerProcess(cfg, tmp_path / "worker.log")
    reader = TopicReader(kafka_bootstrap, dlq)
    try:
        wait_until(lambda: len(reader.poll()) >= len(expected), timeout=60, what="dead letters")
        # All offsets committed: every record was handled, none skipped.
        per_partition: dict[int, int] = {}
        for partition, offset in placed:
            per_partition[partition] = max(per_partition.get(partition, -1), offset + 1)
        wait_until(
            lambda: all(
                committed_offsets(kafka_bootstrap, cfg.kafka.worker_group, events, 4).get(p) == end
                for p, end in per_partition.items()
            ),
            timeout=30,
            what="offsets committed",
        )
        reader.poll()
        letters = reader.records
    finally:
        reader.close()
        worker.stop()
        log = worker.log_text()

    got = {}
    for rec in letters:
        letter = decode_dead_letter(rec.value)
        assert (letter.partition, letter.offset) not in got, f"dead-lettered twice: {letter}"
        got[(letter.partition, letter.offset)] = letter
    assert set(got) == set(expected), log
    for where, (value, reason) in expected.items():
        letter = got[where]
        assert letter.reason == reason, (letter.detail, value[:200])
        assert letter.original_value() == value
        assert letter.topic == events
    # Nothing lost: every valid record was applied to the state in Redis.
    client = redis.Redis.from_url(redis_url)
    try:
        stored: set[str] = set()
        for p in range(4):
            stored |= {
                k.decode() if isinstance(k, bytes) else k
                for k in client.hkeys(partition_keys(cfg.redis.key_prefix, events, p)[0])
            }
    finally:
        client.close()
    assert valid_waybills <= stored
    assert len(records) == len(valid_waybills) + len(got)
