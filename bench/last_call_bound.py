"""What one look shortly before the promise can tell: late warnings decided once, at promise - L.

At ``t = promise - --lead-h`` every parcel not delivered yet is put in a group by what the feed
has shown by then: (carrier, latest scan type, log2 hours since that scan), at ``--level 1`` also
its lane. The share of late parcels per group is fitted on one log (``--train``, Laplace-smoothed
toward the log's share) and applied to another (``--test``, same scenario, other seed); warning
the test parcels whose group's share is highest first traces the precision / recall frontier of
this one look. Late = delivered after the promise, or never delivered (``logiwatch backtest``'s
truth). A bound for a forecaster that waits until then, not a live system (it fits on a whole
other log); ``warn-all`` (every parcel not delivered at t) needs no fitting at all.

Run: ``.venv/bin/python bench/last_call_bound.py --train DIR_A --test DIR_B --lead-h 30``
(DIR: a ``logiwatch simulate --out`` folder).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

H_MS = 3_600_000

Row = tuple[tuple[object, ...], bool]


def rows(folder: Path, lead_h: float, level: int) -> list[Row]:
    """(group, late) of every parcel not delivered ``lead_h`` before its promise."""

    parcels: dict[str, list[dict[str, object]]] = defaultdict(list)
    with open(folder / "events.jsonl") as f:
        for line in f:
            e = json.loads(line)
            if e.get("waybill_id"):
                parcels[str(e["waybill_id"])].append(e)
    out: list[Row] = []
    for evs in parcels.values():
        evs.sort(key=lambda e: int(e["event_time"]))  # type: ignore[call-overload]
        promise = next((int(e["promised_delivery_by"]) for e in evs if e.get("promised_delivery_by")), None)  # type: ignore[call-overload]
        if promise is None:
            continue
        delivered = next((int(e["event_time"]) for e in evs if e["event_type"] == "DELIVERED"), None)  # type: ignore[call-overload]
        t = promise - int(lead_h * H_MS)
        seen = [e for e in evs if int(e["event_time"]) <= t]  # type: ignore[call-overload]
        if (delivered is not None and delivered <= t) or not seen:
            continue
        last = seen[-1]
        since_h = (t - int(last["event_time"])) / H_MS  # type: ignore[call-overload]
        group: tuple[object, ...] = (evs[0]["carrier_id"], last["event_type"], int(math.log2(1 + since_h)))
        if level:
            group += (seen[0].get("origin_region"), seen[0].get("dest_region"))
        out.append((group, delivered is None or delivered > promise))
    return out


def frontier(train: list[Row], test: list[Row]) -> list[tuple[float, float]]:
    """(precision, recall) after warning the test parcels in order of their group's fitted share."""

    base = sum(late for _, late in train) / max(1, len(train))
    fit: dict[tuple[object, ...], list[int]] = defaultdict(lambda: [0, 0])
    for g, late in train:
        fit[g][0] += 1
        fit[g][1] += late
    scored = sorted(((fit[g][1] + 2 * base) / (fit[g][0] + 2) if g in fit else base, late) for g, late in test)
    scored.reverse()
    total = sum(late for _, late in test)
    out, hit = [], 0
    for i, (_, late) in enumerate(scored, 1):
        hit += late
        out.append((hit / i, hit / max(1, total)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--lead-h", type=float, default=30.0)
    ap.add_argument("--level", type=int, choices=(0, 1), default=0, help="1: the lane too")
    args = ap.parse_args()
    for folder in (args.train, args.test):
        if not (folder / "events.jsonl").is_file():
            ap.error(f"{folder}: no events.jsonl there (a `logiwatch simulate --out` folder is expected)")
    if args.lead_h < 0:
        ap.error("--lead-h must be >= 0")
    train, test = rows(args.train, args.lead_h, args.level), rows(args.test, args.lead_h, args.level)
    late = sum(x for _, x in test)
    print(f"{args.test.name}: {len(test)} parcels not delivered {args.lead_h:g} h before the promise, {late} late")
    print(f"  warn-all: P {late / max(1, len(test)):.3f} R 1.000")
    pr = frontier(train, test)
    best = max(pr, key=lambda x: 2 * x[0] * x[1] / (x[0] + x[1] + 1e-9), default=(0.0, 0.0))
    r80 = max((r for p, r in pr if p >= 0.8), default=0.0)
    print(f"  fitted on {args.train.name} (level {args.level}): best F1 at P {best[0]:.3f} R {best[1]:.3f}; R at P >= 0.8: {r80:.3f}")


if __name__ == "__main__":
    main()
