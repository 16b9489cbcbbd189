"""What one simulation run draws from, and the records of a parcel it builds.

:class:`SimContext` holds the scenario, the network and the run's one
seeded ``random.Random`` (every module of the simulator draws from it, in a
fixed order, so the same arguments give the same output), the hub incidents
it planned, and the calendar and lane helpers the journeys and the promises
share. :class:`Parcel` collects a parcel's scans, labels and hub visits as
:mod:`~logiwatch.sim.journeys` and :mod:`~logiwatch.sim.anomalies` make
them; :mod:`~logiwatch.sim.labels` completes the labels at the end.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from logiwatch.config import iso_ms
from logiwatch.detectors.model import AnomalyType, EventType, Label
from logiwatch.errors import ConfigError
from logiwatch.sim.network import (
    DAY_MS,
    MINUTE_MS,
    ROAD_FACTOR,
    TRUCK_KMH,
    Carrier,
    Hub,
    Merchant,
    Network,
    Node,
    next_slot,
    node_km,
)
from logiwatch.sim.scenarios import FEEDS, PAID_HOUR_WEIGHTS, Scenario


@dataclass(frozen=True)
class Incident:
    incident_id: str
    hub_id: str
    start_ms: int
    end_ms: int


@dataclass
class Scan:
    etype: EventType
    node: Node
    time: int  # event_time as stamped
    true_time: int  # when it really happened: the base of its arrival time
    detail: str | None = None
    no_coords: bool = False


@dataclass
class Parcel:
    waybill: str
    order_id: str
    merchant: Merchant
    carrier: Carrier
    dest: str
    category: str
    amount: float
    paid: int
    promised_dispatch_by: int
    promised_delivery_by: int
    scans: list[Scan] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    #: (hub, arrived, departed or None) of every real hub visit, for incident labels
    visits: list[tuple[str, int, int | None]] = field(default_factory=list)
    #: what the carrier's feed shows (a ``FEEDS`` key) and the line-haul time factor of this parcel
    feed: str = "full"
    haul: float = 1.0

    def scan(self, etype: EventType, node: Node, t: int, detail: str | None = None) -> Scan:
        s = Scan(etype, node, t, t, detail)
        self.scans.append(s)
        return s

    def label(self, kind: AnomalyType, onset: int, node: str | None, detail: str, incident: str | None = None) -> None:
        self.labels.append(
            Label(anomaly_type=kind, onset_at=onset, waybill_id=self.waybill, node_id=node, incident_id=incident, detail=detail)
        )


class SimContext:
    """One run: scenario, seed, network, the seeded generator and the planned incidents."""

    def __init__(self, scenario: Scenario, seed: int, start_ms: int, network: Network) -> None:
        self.sc = scenario
        self.seed = seed
        self.start_ms = start_ms
        self.net = network
        self.rng = random.Random(f"logiwatch-sim:{scenario.name}:{seed}")
        self.holiday_days = frozenset(iso_ms(d + "T00:00:00Z", f"scenario {scenario.name!r} holidays") // DAY_MS for d in scenario.holidays)
        self.incidents_at: dict[str, Incident] = {}
        self.incidents: list[Incident] = []
        self.dest_names = [r.name for r in network.regions.values()]
        # cumulative weights once: choices() would rebuild them for every parcel
        self.dest_cum = list(itertools.accumulate(r.dest_weight for r in network.regions.values()))
        self.merchant_cum = list(itertools.accumulate(1.0 / (1 + (i % 17)) for i in range(len(network.merchants))))
        self.hour_cum = list(itertools.accumulate(PAID_HOUR_WEIGHTS))
        self.day_cum = list(itertools.accumulate(scenario.day_weights))
        self.merchant_idx = range(len(network.merchants))
        self.feed_of = dict(scenario.feeds)
        unknown = sorted(set(self.feed_of.values()) - set(FEEDS))
        if unknown:
            raise ConfigError(f"scenario {scenario.name!r} names unknown feed kinds {unknown}; known: {sorted(FEEDS)}")
        self._lane_factor: dict[tuple[str, str], float] = {}

    def lane_factor(self, origin: str, dest: str) -> float:
        """The lane's speed factor: its own seeded draw, so adding lanes changes no other draw."""

        if self.sc.lane_sigma <= 0:
            return 1.0
        f = self._lane_factor.get((origin, dest))
        if f is None:
            rng = random.Random(f"logiwatch-lane:{self.sc.name}:{self.seed}:{origin}>{dest}")
            f = self._lane_factor[(origin, dest)] = rng.lognormvariate(0.0, self.sc.lane_sigma)
        return f

    # -- calendar ----------------------------------------------------------------
    def carrier_off(self, carrier: Carrier) -> Callable[[int], bool]:
        def off(day: int) -> bool:
            return (day + 3) % 7 in carrier.days_off or (bool(carrier.days_off) and day in self.holiday_days)

        return off

    @staticmethod
    def merchant_works(merchant: Merchant, day: int) -> bool:
        return merchant.works_sunday or (day + 3) % 7 != 6

    # -- lanes and trucks ------------------------------------------------------------
    def lane_sla_days(self, route: Sequence[str], merchant: Merchant, carrier: Carrier, lane: float = 1.0) -> int:
        """The platform's promise in days: its estimate of every step of the route, plus slack."""

        hubs = [self.net.hubs[h] for h in route]
        # dispatch (the platform knows slow merchants), pickup, first mile, last mile
        est_h = (40.0 if merchant.slow else 24.0) + 14.0 + 2.0 + 16.0
        for hub in hubs:
            est_h += hub.processing_median_h + (2.0 if hub.gateway else 4.0)
        for a, b in zip(hubs, hubs[1:], strict=False):
            est_h += self.leg_hours_nominal(a, b, carrier) * (self.sc.transit_factor * lane)
        if self.sc.promise_slack:
            est_h *= 1.0 + self.sc.promise_slack
        return math.ceil(est_h / 24.0 + 0.5) + self.sc.promise_extra_days

    @staticmethod
    def leg_hours_nominal(a: Hub, b: Hub, carrier: Carrier) -> float:
        return node_km(a.node, b.node) * ROAD_FACTOR / (TRUCK_KMH * carrier.speed) + 0.5

    def departure(self, hub: Hub, ready: int) -> int:
        return next_slot(ready, hub.departures_h) + int(self.rng.uniform(0, 15) * MINUTE_MS)
