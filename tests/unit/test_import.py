"""``logiwatch ingest import``: orders + scans exports give the events (and alerts) of the parcels themselves."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from logiwatch.backtest import run_engine
from logiwatch.cli import main
from logiwatch.detectors.codec import read_events
from logiwatch.detectors.engine import EngineConfig
from logiwatch.sim.traffic import generate

MAPPING = """
[orders]
waybill_id = "Waybill No"
order_id = "Order"
merchant_id = "Shop"
carrier_id = "Carrier"
promised_dispatch_by = "Ship By"
promised_delivery_by = "Deliver By"
order_amount = "Paid"
category = "Category"
origin_region = "From"
dest_region = "To"
registered_at = "Created"

[scans]
waybill_id = "Waybill No"
event_time = "Scanned At"
event_type = "Status"

[scans.event_types]
"paid" = "ORDER_PAID"
"dispatched" = "DISPATCHED"
"picked up" = "PICKED_UP"
"hub in" = "HUB_ARRIVED"
"hub out" = "HUB_DEPARTED"
"out for delivery" = "OUT_FOR_DELIVERY"
"delivered" = "DELIVERED"
"delivery failed" = "DELIVERY_FAILED"
"exception" = "EXCEPTION"
"returned" = "RETURNED"
"""
STATUS = {v.strip('"'): k.strip('"') for k, v in (line.split(" = ") for line in MAPPING.split("[scans.event_types]")[1].split("\n") if " = " in line)}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def test_an_orders_and_scans_csv_pair_backtests_like_the_simulated_parcels(tmp_path: Path) -> None:
    events, _ = generate("default", seed=5, parcels=250)
    events.sort(key=lambda e: e.event_time)  # what replay and import both produce: event-time order
    orders, scans = tmp_path / "orders.csv", tmp_path / "scans.csv"
    first = {}
    for ev in events:
        first.setdefault(ev.waybill_id, ev)
    with open(orders, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Waybill No", "Order", "Shop", "Carrier", "Ship By", "Deliver By", "Paid", "Category", "From", "To", "Created"])
        for ev in first.values():
            w.writerow([ev.waybill_id, ev.order_id, ev.merchant_id, ev.carrier_id, iso(ev.promised_dispatch_by),
                        ev.promised_delivery_by, repr(ev.order_amount), ev.category, ev.origin_region, ev.dest_region,
                        ev.event_time])  # fmt: skip
        w.writerow(["", "O-bad", "M", "C", "", "", "1", "", "", "", "1790000000000"])  # no waybill: a reject
    with open(scans, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["event_id", "Waybill No", "Scanned At", "Status", "node_id", "node_type", "region", "lat", "lon", "detail"])
        for ev in events:
            w.writerow([ev.event_id, ev.waybill_id, iso(ev.event_time), STATUS[ev.event_type.value], ev.node_id,
                        ev.node_type.value, ev.region, "" if ev.lat is None else repr(ev.lat),
                        "" if ev.lon is None else repr(ev.lon), ev.detail or ""])  # fmt: skip
        w.writerow(["bad-1", "WB-X", "yesterday", "hub in", "N", "HUB", "R", "", "", ""])  # unreadable time
        w.writerow(["bad-2", "WB-X", iso(events[0].event_time), "teleported", "N", "HUB", "R", "", "", ""])  # unknown status
    (tmp_path / "map.toml").write_text(MAPPING)
    out, rejects = tmp_path / "imported.jsonl", tmp_path / "rejects.jsonl"
    code = main(["ingest", "import", str(scans), "--orders", str(orders), "--mapping", str(tmp_path / "map.toml"),
                 "--out", str(out), "--rejects", str(rejects)])  # fmt: skip
    assert code == 0
    imported = list(read_events(out))
    assert imported == events
    config = EngineConfig()
    assert run_engine(imported, config, partitions=4) == run_engine(events, config, partitions=4)
    bad = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(Path(b["file"]).name, b["line"]) for b in bad] == [
        ("orders.csv", len(first) + 2), ("scans.csv", len(events) + 2), ("scans.csv", len(events) + 3),
    ]  # fmt: skip
    assert all(b["reason"] for b in bad)


def test_import_counts_add_up_and_a_bad_mapping_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scans = tmp_path / "scans.jsonl"
    scans.write_text(
        '{"event_id":"e1","waybill_id":"W1","event_time":"2026-09-01 10:00:00","event_type":"PICKED_UP","country":"CN","city":"Hangzhou"}\n'
        "not json\n"
        '{"event_id":"e2","waybill_id":"W1","event_time":1788300000000,"event_type":"HUB_ARRIVED","node_id":"HUB-1"}\n'
    )
    assert main(["ingest", "import", str(scans), "--out", str(tmp_path / "o.jsonl")]) == 0
    assert "3 rows in = 2 records out (0 registrations, 2 scans) + 1 rejects" in capsys.readouterr().out
    got = list(read_events(tmp_path / "o.jsonl"))
    assert [e.registration for e in got] == ["missing", "missing"]
    assert got[0].event_time == 1_788_228_000_000  # 10:00 in China is 02:00 UTC
    (tmp_path / "m.toml").write_text('[scans]\nwaybill = "x"\n')
    assert main(["ingest", "import", str(scans), "--out", str(tmp_path / "o.jsonl"), "--mapping", str(tmp_path / "m.toml")]) == 1
    err = capsys.readouterr().err
    assert "maps unknown field 'waybill'" in err and len(err.strip().splitlines()) == 1
