"""Realistic, labelled logistics traffic: the ground truth for tests, demos and backtests.

:func:`generate` moves parcels through the network of
:mod:`logiwatch.sim.network` (:mod:`~logiwatch.sim.journeys`: merchant
dispatch habits, carrier pickup rounds, hub sorting and scheduled line-haul
trucks, last-mile delivery waves, weekend and night slowdowns), injects
labelled anomalies into a few percent of them and hub incidents into the
network (:mod:`~logiwatch.sim.anomalies`), completes the labels
(:mod:`~logiwatch.sim.labels`), and adds the noise real feeds have
(duplicates, disorder, late arrivals; here). The season's knobs are a
:class:`~logiwatch.sim.scenarios.Scenario`. It returns the scan events in
arrival order and one :class:`~logiwatch.detectors.model.Label` per
(parcel, anomaly). Everything is drawn from one seeded ``random.Random`` in
a fixed order, so the same arguments give byte-identical output. The label
rules are exact and documented in ``docs/simulator.md``;
``tests/unit/test_simulator.py`` recomputes them from the events.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from logiwatch.config import iso_ms
from logiwatch.detectors.codec import encode_event
from logiwatch.detectors.model import Label, ScanEvent
from logiwatch.errors import ConfigError
from logiwatch.sim.anomalies import plan_incidents
from logiwatch.sim.context import Incident, Parcel, SimContext
from logiwatch.sim.journeys import new_parcel
from logiwatch.sim.network import CARRIERS, MINUTE_MS, Network, build_network
from logiwatch.sim.scenarios import SCENARIOS, Scenario, scenario_named


def _start_ms(sc: Scenario, start: str | int | None) -> int:
    return start if isinstance(start, int) else iso_ms(start or sc.start, "--start")


def _arrivals(ctx: SimContext, p: Parcel) -> list[tuple[int, ScanEvent]]:
    """The parcel's scans as events with their arrival times, noise applied."""

    rng, sc = ctx.rng, ctx.sc
    out: list[tuple[int, ScanEvent]] = []
    m = p.merchant
    for k, s in enumerate(p.scans):
        node = s.node
        ev = ScanEvent(
            event_id=f"{p.waybill}-{k:02d}",
            waybill_id=p.waybill,
            order_id=p.order_id,
            merchant_id=m.merchant_id,
            carrier_id=p.carrier.carrier_id,
            event_type=s.etype,
            node_id=node.node_id,
            node_type=node.node_type,
            region=node.region,
            origin_region=m.node.region,
            dest_region=p.dest,
            event_time=s.time,
            promised_dispatch_by=p.promised_dispatch_by,
            promised_delivery_by=p.promised_delivery_by,
            category=p.category,
            order_amount=p.amount,
            lat=None if s.no_coords else node.lat,
            lon=None if s.no_coords else node.lon,
            detail=s.detail,
        )
        arrival = s.true_time
        u = rng.random()
        if u < sc.late_rate:
            arrival += int(rng.uniform(20, 60) * MINUTE_MS)
        elif u < sc.late_rate + sc.disorder_rate:
            arrival += int(rng.uniform(0.5, 5.0) * MINUTE_MS)
        out.append((arrival, ev))
        if rng.random() < sc.duplicate_rate:
            out.append((arrival + int(rng.uniform(0.1, 8.0) * MINUTE_MS), ev))
    return out


def generate(
    scenario: str | Scenario = "default",
    seed: int = 1,
    parcels: int = 20_000,
    start: str | int | None = None,
    *,
    network: Network | None = None,
) -> tuple[list[ScanEvent], list[Label]]:
    """Simulate ``parcels`` x the scenario's volume factor parcels.

    Returns the scan events in arrival order (event time plus the noise; ties
    in generation order) and the labels sorted by waybill, onset and type.
    ``start`` is an ISO 8601 time or epoch ms (default: the scenario's).
    """

    sc = scenario_named(scenario)
    if parcels < 1:
        raise ConfigError(f"--parcels must be at least 1, got {parcels}")
    ctx = SimContext(sc, seed, _start_ms(sc, start), network or build_network())
    plan_incidents(ctx)
    arrivals: list[tuple[int, int, ScanEvent]] = []
    labels: list[Label] = []
    n = max(1, round(parcels * sc.volume_factor))
    seq = 0
    for i in range(n):
        p = new_parcel(ctx, i)
        labels.extend(p.labels)
        for arrival, ev in _arrivals(ctx, p):
            arrivals.append((arrival, seq, ev))
            seq += 1
    arrivals.sort(key=lambda x: (x[0], x[1]))
    labels.sort(key=lambda lb: (lb.waybill_id or "", lb.onset_at, lb.anomaly_type.value))
    return [ev for _, _, ev in arrivals], labels


def incidents(scenario: str = "default", seed: int = 1, start: str | int | None = None) -> list[Incident]:
    """The hub incidents :func:`generate` injects for these arguments (same draws)."""

    sc = scenario_named(scenario)
    ctx = SimContext(sc, seed, _start_ms(sc, start), build_network())
    plan_incidents(ctx)
    return list(ctx.incidents)


def carrier_days_off() -> list[tuple[str, int]]:
    """``(carrier_id, weekday)`` pairs (Monday = 0) the simulated carriers do not work: a calendar input."""

    return [(c.carrier_id, d) for c in CARRIERS for d in c.days_off]


def malformed_lines(seed: int, count: int, sample: Sequence[ScanEvent]) -> list[bytes]:
    """``count`` raw messages that must each fail ``decode_event`` (for the dead-letter path).

    Cycles through bad JSON, non-objects, missing fields, wrong types,
    unknown enums, bad values, absurd times, unsupported versions and
    oversize payloads, built from real events so they look like feed errors.
    """

    rng = random.Random(f"logiwatch-malformed:{seed}")
    out: list[bytes] = []
    for k in range(count):
        base = msgspec.to_builtins(sample[rng.randrange(len(sample))]) if sample else {"event_id": f"x{k}"}
        assert isinstance(base, dict)
        kind = k % 9
        if kind == 0:
            raw = encode_event(sample[rng.randrange(len(sample))])[: rng.randint(5, 60)] if sample else b'{"event_id'
        elif kind == 1:
            raw = b"[1, 2, 3]"
        elif kind == 2:
            base.pop("waybill_id", None)
            raw = msgspec.json.encode(base)
        elif kind == 3:
            base["event_time"] = "yesterday"
            raw = msgspec.json.encode(base)
        elif kind == 4:
            base["event_type"] = "TELEPORTED"
            raw = msgspec.json.encode(base)
        elif kind == 5:
            base["order_amount"] = -5
            raw = msgspec.json.encode(base)
        elif kind == 6:
            base["event_time"] = 9_999_999_999_999
            raw = msgspec.json.encode(base)
        elif kind == 7:
            base["schema_version"] = 99
            raw = msgspec.json.encode(base)
        else:
            base["detail"] = "x" * 200
            base["blob"] = "y" * 20_000
            raw = msgspec.json.encode(base)
        out.append(raw)
    return out


__all__ = [
    "SCENARIOS",
    "Incident",
    "Scenario",
    "carrier_days_off",
    "generate",
    "incidents",
    "malformed_lines",
]
