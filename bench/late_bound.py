"""How predictable is lateness on a feed? Bounds for late warnings >= 24 h ahead, from the events alone.

A reference forecaster, simpler than predicted-late and free of its engineering: per carrier (and
per lane once it has ``--min-lane`` parcels), the survival of the transit from the hand-over
(PICKED_UP) to the delivery, in units of the time the promise left at the hand-over
(``--unit promise``) or in hours (``--unit hours``). A parcel is warned at the first hourly look,
at least 24 h before its promise and while it is undelivered, where P(late | not delivered after
e) = S(promise) / S(e) reaches ``theta``. Scored like ``logiwatch backtest``'s ``lead_24h``:
late = delivered after the promise, or never delivered and the log passed the promise.

- ``--mode in-sample``: the survival of every parcel of the log, the parcel itself included (it
  knows the future: an optimistic bound, not something a live system can do);
- ``--mode online``: every 6 h of event time, a Kaplan-Meier estimate from the parcels handed
  over before then (delivered ones observed, the others censored at their elapsed time): what a
  plain survival model learning as it goes would do, cold start included.

Run: ``.venv/bin/python bench/late_bound.py --events EVENTS.jsonl --mode online --theta 0.7 0.8``.
"""

from __future__ import annotations

import argparse
import bisect
from collections import defaultdict
from dataclasses import dataclass

from logiwatch.backtest import read_events
from logiwatch.detectors.model import EventType

H_MS = 3_600_000.0
SNAPSHOT_H = 6.0
#: observations a key needs before its estimate is used (the engine's default min_count)
MIN_OBS = 30


@dataclass(frozen=True)
class Parcel:
    carrier: str
    lane: str
    handed_h: float
    delivered_h: float | None
    promise_h: float

    @property
    def late(self) -> bool:
        return self.delivered_h is None or self.delivered_h > self.promise_h

    def value(self, elapsed_h: float, unit: str) -> float:
        """An elapsed time after the hand-over in the forecaster's unit."""

        span = self.promise_h - self.handed_h
        return elapsed_h / span if unit == "promise" else elapsed_h


Survival = tuple[list[float], list[float]]


def kaplan_meier(obs: list[tuple[float, bool]]) -> Survival:
    """(sorted times, S just after each time) from (time, observed) pairs; censored ones only leave the risk set."""

    obs.sort(key=lambda o: o[0])
    times: list[float] = []
    surv: list[float] = []
    s = 1.0
    at_risk = len(obs)
    for t, observed in obs:
        if observed:
            s *= 1.0 - 1.0 / at_risk
        times.append(t)
        surv.append(s)
        at_risk -= 1
    return times, surv


def survival(est: Survival, x: float) -> float:
    times, surv = est
    i = bisect.bisect_right(times, x)
    return 1.0 if i == 0 else surv[i - 1]


def read_parcels(path: str) -> tuple[list[Parcel], float]:
    by: dict[str, list[tuple[int, EventType, str, str, str, int]]] = defaultdict(list)
    end = 0
    for ev in read_events(path):
        by[ev.waybill_id].append(
            (ev.event_time, ev.event_type, ev.carrier_id, ev.origin_region, ev.dest_region, ev.promised_delivery_by)
        )
        end = max(end, ev.event_time)
    parcels = []
    for scans in by.values():
        scans.sort(key=lambda s: s[0])
        handed = next((s[0] for s in scans if s[1] is EventType.PICKED_UP), None)
        if handed is None:
            continue
        delivered = next((s[0] for s in scans if s[1] is EventType.DELIVERED), None)
        _, _, carrier, origin, dest, promise = scans[-1]
        if delivered is None and promise > end or promise <= handed:
            continue  # neither late nor on time yet, or no time left at the hand-over
        parcels.append(
            Parcel(
                carrier,
                f"{carrier}|{origin}>{dest}",
                handed / H_MS,
                None if delivered is None else delivered / H_MS,
                promise / H_MS,
            )
        )
    return parcels, end / H_MS


def estimates(parcels: list[Parcel], at_h: float | None, unit: str) -> dict[str, tuple[Survival, int]]:
    """Per carrier and lane: the survival (Kaplan-Meier) and its observed count, from what was known at ``at_h``."""

    obs: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for p in parcels:
        if at_h is not None and p.handed_h >= at_h:
            continue
        done = p.delivered_h is not None and (at_h is None or p.delivered_h <= at_h)
        if done:
            assert p.delivered_h is not None
            o = (p.value(p.delivered_h - p.handed_h, unit), True)
        elif at_h is None:
            o = (float("inf"), False)  # never delivered
        else:
            o = (p.value(at_h - p.handed_h, unit), False)
        obs[p.carrier].append(o)
        obs[p.lane].append(o)
    return {k: (kaplan_meier(v), sum(1 for o in v if o[1])) for k, v in obs.items()}


def score(parcels: list[Parcel], end_h: float, mode: str, unit: str, min_lane: int, theta: float) -> tuple[int, int, int]:
    """(warnings >= 24 h ahead, true ones, late parcels)."""

    if mode == "in-sample":
        whole = estimates(parcels, None, unit)
        snaps, keys = {0.0: whole}, [0.0]
    else:
        start = min(p.handed_h for p in parcels)
        keys = [start + i * SNAPSHOT_H for i in range(int((end_h - start) / SNAPSHOT_H) + 2)]
        snaps = {k: estimates(parcels, k, unit) for k in keys}
    warned = true = 0
    for p in parcels:
        span = p.promise_h - p.handed_h
        e = 0.0
        while e <= span - 24 and (p.delivered_h is None or p.delivered_h - p.handed_h > e):
            snap = snaps[keys[max(0, bisect.bisect_right(keys, p.handed_h + e) - 1)]]
            got = snap.get(p.lane)
            if got is None or got[1] < min_lane:
                got = snap.get(p.carrier)
            if got is not None and got[1] >= MIN_OBS:
                s_e = survival(got[0], p.value(e, unit))
                if s_e > 0 and survival(got[0], p.value(span, unit)) / s_e >= theta:
                    warned += 1
                    true += p.late
                    break
            e += 1.0
    return warned, true, sum(p.late for p in parcels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", required=True, help="JSONL event log (v1 scan events)")
    parser.add_argument("--mode", choices=("in-sample", "online"), default="online")
    parser.add_argument("--unit", choices=("promise", "hours"), default="promise")
    parser.add_argument("--min-lane", type=int, default=30, help="lane observations before the lane decides")
    parser.add_argument("--theta", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9])
    args = parser.parse_args()
    if any(not 0 < t < 1 for t in args.theta) or args.min_lane < 1:
        parser.error("--theta values must lie in (0, 1) and --min-lane be >= 1")
    parcels, end_h = read_parcels(args.events)
    if not parcels:
        parser.error(f"{args.events}: no parcel with a hand-over (PICKED_UP) and a decided outcome")
    for theta in args.theta:
        warned, true, late = score(parcels, end_h, args.mode, args.unit, args.min_lane, theta)
        p = f"{true / warned:.3f}" if warned else "-"
        print(
            f"{args.mode} {args.unit} lane>={args.min_lane} theta {theta}: "
            f"{warned} warnings >= 24 h ahead, P24 {p}, R24 {true / late:.3f} ({late} late of {len(parcels)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
