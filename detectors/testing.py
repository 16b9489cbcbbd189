"""Test harness for detectors: a fluent scenario builder and a settable clock.

Write a parcel's timeline as scans at offsets from the scenario start, run it
through the engine (with clock ticks, optionally split into partitions as
Kafka would), and look at the alerts. The same scenario's ``events()`` can be
produced to Kafka, so the in-process run and the worker can be compared.
``Scenario.normal`` adds many ordinary parcels with variable (log-normal,
seeded) durations so baselines have something to learn.

>>> sc = Scenario()
>>> p = sc.parcel("WB1").paid(0).dispatched(2 * H).picked_up(5 * H).arrived("HUB-A", 8 * H)
>>> [e.event_type.value for e in sc.events()]
['ORDER_PAID', 'DISPATCHED', 'PICKED_UP', 'HUB_ARRIVED']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import Alert, AlertStatus, EventType, NodeType, ScanEvent
from logiwatch.detectors.runner import interleave_ticks, run_partitioned

M = 60_000
H = 3_600_000
DAY = 86_400_000
#: 2026-11-02T00:00:00Z, a Monday
DEFAULT_START_MS = 1_793_577_600_000

#: node -> (region, lat, lon, node type)
NODES: dict[str, tuple[str, float, float, NodeType]] = {
    "M-1": ("east", 31.10, 121.30, NodeType.MERCHANT),
    "OUT-E": ("east", 31.15, 121.40, NodeType.OUTLET),
    "HUB-A": ("east", 31.23, 121.47, NodeType.HUB),
    "HUB-B": ("central", 30.59, 114.31, NodeType.HUB),
    "HUB-C": ("north", 39.90, 116.40, NodeType.HUB),
    "HUB-D": ("south", 23.13, 113.26, NodeType.HUB),
    "HUB-W": ("west", 30.66, 104.07, NodeType.HUB),
    "ST-N": ("north", 39.95, 116.30, NodeType.STATION),
    "ST-S": ("south", 23.10, 113.30, NodeType.STATION),
    "CUST-N": ("north", 39.96, 116.32, NodeType.CUSTOMER),
    "CUST-S": ("south", 23.11, 113.31, NodeType.CUSTOMER),
}


@dataclass
class ParcelBuilder:
    """Scans of one parcel; every method takes the offset from the scenario start (ms)."""

    scenario: Scenario
    waybill: str
    merchant: str = "MER-1"
    carrier: str = "C1"
    origin: str = "east"
    dest: str = "north"
    dispatch_within: int = 24 * H
    deliver_within: int = 72 * H
    amount: float = 99.0
    scans: list[tuple[int, EventType, str, str | None, str]] = field(default_factory=list)
    paid_at: int | None = None

    def scan(
        self, event_type: str | EventType, at: int, *, node: str | None = None, region: str | None = None
    ) -> ParcelBuilder:
        et = EventType(event_type)
        node = node or self._default_node(et)
        eid = f"{self.waybill}-{len(self.scans)}-{et.value}"
        self.scans.append((at, et, node, region, eid))
        if et is EventType.ORDER_PAID and self.paid_at is None:
            self.paid_at = at
        return self

    def _default_node(self, et: EventType) -> str:
        if et in (EventType.ORDER_PAID, EventType.DISPATCHED):
            return "M-1"
        if et is EventType.PICKED_UP:
            return "OUT-E"
        if et is EventType.HUB_DEPARTED:
            for _, t, node, _, _ in reversed(self.scans):
                if t is EventType.HUB_ARRIVED:
                    return node
            return "HUB-A"
        if et in (EventType.OUT_FOR_DELIVERY, EventType.DELIVERY_FAILED):
            return "ST-N" if self.dest == "north" else "ST-S"
        if et is EventType.DELIVERED:
            return "CUST-N" if self.dest == "north" else "CUST-S"
        return "HUB-A"

    def paid(self, at: int) -> ParcelBuilder:
        return self.scan(EventType.ORDER_PAID, at)

    def dispatched(self, at: int) -> ParcelBuilder:
        return self.scan(EventType.DISPATCHED, at)

    def picked_up(self, at: int) -> ParcelBuilder:
        return self.scan(EventType.PICKED_UP, at)

    def arrived(self, hub: str, at: int) -> ParcelBuilder:
        return self.scan(EventType.HUB_ARRIVED, at, node=hub)

    def departed(self, at: int) -> ParcelBuilder:
        return self.scan(EventType.HUB_DEPARTED, at)

    def out_for_delivery(self, at: int) -> ParcelBuilder:
        return self.scan(EventType.OUT_FOR_DELIVERY, at)

    def delivered(self, at: int, *, region: str | None = None, node: str | None = None) -> ParcelBuilder:
        return self.scan(EventType.DELIVERED, at, region=region, node=node)

    def duplicate_last(self) -> ParcelBuilder:
        """Re-send the last scan with the same event id (a duplicate delivery)."""

        self.scans.append(self.scans[-1])
        return self

    def events(self) -> list[ScanEvent]:
        start = self.scenario.start_ms
        paid = start + (self.paid_at if self.paid_at is not None else (self.scans[0][0] if self.scans else 0))
        out = []
        for at, et, node, region, eid in self.scans:
            reg, lat, lon, ntype = NODES.get(node, (region or self.origin, None, None, NodeType.HUB))  # type: ignore[assignment]
            out.append(
                ScanEvent(
                    event_id=eid,
                    waybill_id=self.waybill,
                    order_id=f"O-{self.waybill}",
                    merchant_id=self.merchant,
                    carrier_id=self.carrier,
                    event_type=et,
                    node_id=node,
                    node_type=ntype,
                    region=region or reg,
                    origin_region=self.origin,
                    dest_region=self.dest,
                    event_time=start + at,
                    promised_dispatch_by=paid + self.dispatch_within,
                    promised_delivery_by=paid + self.deliver_within,
                    category="books",
                    order_amount=self.amount,
                    lat=lat,
                    lon=lon,
                )
            )
        return out


class Scenario:
    """A set of parcel timelines plus a way to run them through the engine."""

    def __init__(self, start_ms: int = DEFAULT_START_MS) -> None:
        self.start_ms = start_ms
        self.parcels: list[ParcelBuilder] = []

    def parcel(self, waybill: str, **fields: object) -> ParcelBuilder:
        p = ParcelBuilder(self, waybill, **fields)  # type: ignore[arg-type]
        self.parcels.append(p)
        return p

    def normal(self, n: int, *, seed: int = 0, start_every: int = 20 * M, first_at: int = 0) -> list[ParcelBuilder]:
        """``n`` ordinary parcels east -> central -> north, delivered on time, durations log-normal."""

        rng = random.Random(seed)
        out = []
        for i in range(n):
            t = first_at + i * start_every

            def step(median_h: float, spread: float = 0.35) -> int:
                return int(rng.lognormvariate(0.0, spread) * median_h * H)

            p = self.parcel(f"N{seed}-{i}", deliver_within=96 * H)
            t1 = t + step(2)
            t2 = t1 + step(3)
            t3 = t2 + step(2)
            t4 = t3 + step(4)
            t5 = t4 + step(10)
            t6 = t5 + step(3)
            t7 = t6 + step(12)
            t8 = t7 + step(3)
            t9 = t8 + step(4)
            t10 = t9 + step(3)
            p.paid(t).dispatched(t1).picked_up(t2).arrived("HUB-A", t3).departed(t4).arrived("HUB-B", t5)
            p.departed(t6).arrived("HUB-C", t7).departed(t8).out_for_delivery(t9).delivered(t10)
            out.append(p)
        return out

    def events(self) -> list[ScanEvent]:
        """All scans sorted by event time (stable: same-time scans keep their order)."""

        evs = [e for p in self.parcels for e in p.events()]
        return sorted(evs, key=lambda e: e.event_time)

    def run(
        self,
        *,
        config: EngineConfig | None = None,
        detectors: Sequence[str] | None = None,
        until: int | None = None,
        tick_every_ms: int = H,
        partitions: int = 1,
        all_alerts: bool = False,
        events: Sequence[ScanEvent] | None = None,
    ) -> list[Alert]:
        """Alerts (FIRING only unless ``all_alerts``) of running the scenario; ``until`` is an offset."""

        cfg = config or EngineConfig()
        if detectors is not None:
            cfg = EngineConfig(**{**cfg.__dict__, "detectors": tuple(detectors)})
        final = None if until is None else self.start_ms + until
        records = interleave_ticks(events if events is not None else self.events(), tick_every_ms, final_tick_ms=final)
        alerts = run_partitioned(records, partitions, cfg)
        return alerts if all_alerts else [a for a in alerts if a.status is AlertStatus.FIRING]
