"""bench/last_call_bound.py: one look at promise - L, groups fitted on one log, scored on another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from logiwatch.bench.last_call_bound import frontier, rows

H = 3_600_000


def _write(folder: Path, parcels: list[tuple[str, str, int, int | None]]) -> Path:
    """(waybill, carrier, hand-over hour, delivery hour or None); every promise is at hour 100."""

    folder.mkdir()
    with open(folder / "events.jsonl", "w") as f:
        for wb, carrier, pickup, delivered in parcels:
            base = {"waybill_id": wb, "carrier_id": carrier, "promised_delivery_by": 100 * H,
                    "origin_region": "a", "dest_region": "b"}  # fmt: skip
            f.write(json.dumps({**base, "event_type": "PICKED_UP", "event_time": pickup * H}) + "\n")
            if delivered is not None:
                f.write(json.dumps({**base, "event_type": "DELIVERED", "event_time": delivered * H}) + "\n")
    return folder


def test_only_parcels_undelivered_at_the_look_count_and_never_delivered_is_late(tmp_path: Path) -> None:
    d = _write(tmp_path / "a", [("early", "X", 0, 50), ("ontime", "X", 0, 90), ("late", "X", 0, 120), ("lost", "X", 0, None)])
    got = rows(d, lead_h=30, level=0)  # the look is at hour 70: "early" is delivered by then
    assert sorted(late for _, late in got) == [False, True, True]
    assert {g for g, _ in got} == {("X", "PICKED_UP", 6)}  # 70 h since the hand-over: log2(71) -> 6


def test_the_frontier_warns_the_likeliest_group_first(tmp_path: Path) -> None:
    # carrier L's undelivered parcels are all late, carrier K's all on time
    spec: list[tuple[str, str, int, int | None]] = [(f"l{i}", "L", 0, None) for i in range(4)]
    spec += [(f"k{i}", "K", 0, 90) for i in range(4)]
    a, b = _write(tmp_path / "a", spec), _write(tmp_path / "b", spec)
    pr = frontier(rows(a, 30, 0), rows(b, 30, 0))
    assert pr[3] == (1.0, 1.0)  # the four late ones first
    assert pr[-1] == (0.5, 1.0)  # everyone warned


def test_a_folder_without_events_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    got = subprocess.run(
        [sys.executable, "-m", "logiwatch.bench.last_call_bound", "--train", str(tmp_path), "--test", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert got.returncode == 2
    assert f"{tmp_path}: no events.jsonl there" in got.stderr.strip().splitlines()[-1]
