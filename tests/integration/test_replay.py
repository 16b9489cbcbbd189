"""``logiwatch replay`` and ``simulate`` to Kafka against the real Tansu broker.

Simulated traffic is produced through the CLI into a fresh topic and read back
with kafka-python: every line arrives once, keyed by its waybill, on the
partition Kafka's partitioner picks, in event-time order per parcel; clock
ticks reach every partition; malformed messages travel alongside. Reads stop
on a record count, never on ``end_offsets()`` (wrong on Tansu).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from logiwatch.cli import main
from logiwatch.detectors.codec import decode_event, decode_tick, read_events
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.producer import final_tick_for
from tests.helpers import wait_until

PARTITIONS = 4
Record = tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]


def consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Record]:
    """(partition, key, value, headers) of the first ``count`` records of ``topic``."""

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        got: list[Record] = []

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=200, max_records=5000).values():
                got.extend((m.partition, m.key, m.value, list(m.headers or [])) for m in batch)
            return len(got) >= count

        wait_until(enough, timeout, what=f"{count} records on {topic}")
        # anything beyond `count` would be a duplicate: give it one more poll to show up
        for batch in consumer.poll(timeout_ms=500).values():
            got.extend((m.partition, m.key, m.value, list(m.headers or [])) for m in batch)
        return got
    finally:
        consumer.close()


def is_tick(headers: list[tuple[str, bytes]]) -> bool:
    return (TICK_HEADER, TICK_HEADER_VALUE) in headers


def test_replay_delivers_every_event_once_keyed_in_event_time_order_with_ticks_on_every_partition(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    assert main(["simulate", "--seed", "3", "--parcels", "150", "--out", str(tmp_path)]) == 0
    log = tmp_path / "events.jsonl"
    lines = [line for line in log.read_bytes().splitlines() if line]
    topic = topic_factory("replay", PARTITIONS)

    before = int(time.time() * 1000)
    code = main(["replay", str(log), "--bootstrap", kafka_bootstrap, "--topic", topic, "--ticks-every-s", "3600"])
    assert code == 0
    after = int(time.time() * 1000)

    ordered = sorted(read_events(log), key=lambda e: e.event_time)
    expected_ticks = [r.tick_time for r in interleave_ticks(ordered, 3_600_000) if not hasattr(r, "event_id")]
    records = consume(kafka_bootstrap, topic, len(lines) + len(expected_ticks) * PARTITIONS)

    events = [r for r in records if not is_tick(r[3])]
    ticks = [r for r in records if is_tick(r[3])]
    assert Counter(value for _, _, value, _ in events) == Counter(lines)  # each line once, nothing else
    times_per_waybill: dict[str, list[int]] = defaultdict(list)
    for partition, key, value, _ in events:
        ev = decode_event(value)
        assert key == ev.waybill_id.encode()
        assert partition == partition_for(key, PARTITIONS)
        times_per_waybill[ev.waybill_id].append(ev.event_time)
    assert all(times == sorted(times) for times in times_per_waybill.values())
    # the final tick: the backtest's (FINAL_HORIZON_MS past the last event) unless that is beyond
    # what a live worker accepts (1 day ahead of its clock): then a minute inside that bound
    last = max(e.event_time for e in ordered)
    lo = final_tick_for(last, event_time_only=False, max_future_ms=86_400_000, now_ms=before)
    hi = final_tick_for(last, event_time_only=False, max_future_ms=86_400_000, now_ms=after)
    for part in range(PARTITIONS):
        on_part = [decode_tick(value).tick_time for p, key, value, _ in ticks if p == part and key is None]
        assert on_part[:-1] == expected_ticks[:-1], part
        assert lo <= on_part[-1] <= hi, part


def test_replay_refuses_a_bad_line_naming_it_and_produces_nothing(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--seed", "4", "--parcels", "5", "--out", str(tmp_path)]) == 0
    good = (tmp_path / "events.jsonl").read_bytes().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join([good[0], good[1], b'{"event_id": "x", "waybill_id": 5}', *good[2:]]) + b"\n")
    topic = topic_factory("replay-bad", PARTITIONS)

    code = main(["replay", str(bad), "--bootstrap", kafka_bootstrap, "--topic", topic])

    assert code == 1
    # other lines on stderr may be client logging from earlier tests (basicConfig is process-wide)
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("logiwatch replay:")]
    assert len(ours) == 1 and f"{bad}:3:" in ours[0]
    # nothing was produced: a marker sent now is the first record of its partition
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for part in range(PARTITIONS):
        producer.send(topic, value=b"marker", partition=part)
    producer.flush()
    producer.close()
    assert [r[2] for r in consume(kafka_bootstrap, topic, PARTITIONS)] == [b"marker"] * PARTITIONS


def test_simulate_to_kafka_sends_events_and_malformed_messages_and_writes_labels(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("simulate", PARTITIONS)
    labels = tmp_path / "labels.jsonl"
    args = ["--seed", "5", "--parcels", "40", "--malformed", "9"]
    code = main(["simulate", *args, "--bootstrap", kafka_bootstrap, "--topic", topic, "--labels", str(labels)])
    assert code == 0
    assert main(["simulate", *args, "--out", str(tmp_path / "files")]) == 0
    lines = [line for line in (tmp_path / "files" / "events.jsonl").read_bytes().splitlines() if line]
    malformed = (tmp_path / "files" / "malformed.jsonl").read_bytes().splitlines()
    assert labels.read_bytes() == (tmp_path / "files" / "labels.jsonl").read_bytes()

    records = consume(kafka_bootstrap, topic, len(lines) + len(malformed))

    values = Counter(value for _, _, value, _ in records)
    assert values == Counter(lines) + Counter(malformed)
    rejected = 0
    for _, key, value, _ in records:
        try:
            ev = decode_event(value)
        except DecodeError:
            rejected += 1
            continue
        assert key == ev.waybill_id.encode()
    assert rejected == len(malformed) == 9
