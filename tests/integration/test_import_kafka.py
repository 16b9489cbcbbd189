"""``logiwatch ingest import --kafka``: registrations and slim scans land on their topics, scans in event-time order."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from logiwatch.cli import main
from logiwatch.detectors.codec import decode_record, decode_registration
from logiwatch.detectors.model import Scan
from tests.helpers import wait_until
from tests.integration.test_worker_support import TopicReader


def test_import_to_kafka_produces_registrations_then_scans_keyed_by_waybill(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, shipments = topic_factory("ev"), topic_factory("sh")
    orders, scans = tmp_path / "orders.jsonl", tmp_path / "scans.csv"
    orders.write_text(
        '{"waybill_id":"W1","registered_at":1788220000000,"merchant_id":"M1","promised_delivery_by":"2026-09-05T00:00:00Z"}\n'
        '{"waybill_id":"W2","registered_at":1788220000000,"order_amount":-3}\n'  # a reject
    )
    scans.write_text(
        "event_id,waybill_id,event_time,event_type,city,country\n"
        "e2,W1,2026-09-01T12:00:00+08:00,HUB_ARRIVED,Hangzhou,CN\n"
        "e1,W1,2026-09-01 09:00:00,PICKED_UP,Hangzhou,CN\n"
        "e3,W2,1788300000000,PICKED_UP,,\n"
    )
    for key in [k for k in os.environ if k.startswith("LOGIWATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LOGIWATCH_KAFKA__BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("LOGIWATCH_KAFKA__TOPICS__EVENTS", events)
    monkeypatch.setenv("LOGIWATCH_KAFKA__TOPICS__SHIPMENTS", shipments)
    assert main(["ingest", "import", str(scans), "--orders", str(orders), "--kafka", "--rejects", str(tmp_path / "r.jsonl")]) == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1
    regs_reader, scans_reader = TopicReader(kafka_bootstrap, shipments), TopicReader(kafka_bootstrap, events)
    try:
        regs = wait_until(lambda: regs_reader.poll() if len(regs_reader.poll()) >= 1 else None, timeout=30)
        got = wait_until(lambda: scans_reader.poll() if len(scans_reader.poll()) >= 3 else None, timeout=30)
    finally:
        regs_reader.close()
        scans_reader.close()
    [reg] = [decode_registration(r.value, key=r.key) for r in regs]
    assert reg.waybill_id == "W1" and reg.promised_delivery_by == 1_788_566_400_000
    decoded = [decode_record(r.value, key=r.key) for r in got]
    assert all(isinstance(s, Scan) for s in decoded)
    w1 = [s.event_id for s in decoded if s.waybill_id == "W1"]
    assert w1 == ["e1", "e2"]  # event-time order within the parcel's partition, whatever the file order
