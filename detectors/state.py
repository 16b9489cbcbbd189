"""What detectors share: the per-parcel state struct, findings, the detector protocol and its environment.

The engine owns one :class:`ParcelState` per in-flight parcel and hands it to
every detector; detectors read it, keep their deadlines in ``state.due`` and
small numbers in ``state.note``, and return :class:`Finding` objects that the
engine turns into alerts (one open alert per parcel and type). The state is a
compact msgspec struct (route as tuples, seen event ids as packed 32-bit hashes) so a
snapshot stays well under a kilobyte per parcel. :class:`Env` carries what is
shared across parcels: the learned baselines, the calendar, and two facts about the event being processed (the previous latest scan and
whether this event is the newest of its parcel).
"""

from __future__ import annotations

import math
from typing import Protocol

import msgspec

from logiwatch.detectors.baselines import DurationBaseline
from logiwatch.detectors.calendar import Calendar
from logiwatch.detectors.model import AlertStatus, AnomalyType, EventType, ScanEvent, Severity

#: Stage code of each event type (route tuples store the code, not the string).
CODES: dict[EventType, int] = {t: i for i, t in enumerate(EventType)}
TYPES: tuple[EventType, ...] = tuple(EventType)
PAID, DISPATCHED, PICKED_UP, HUB_ARRIVED, HUB_DEPARTED, OUT_FOR_DELIVERY, DELIVERED, DELIVERY_FAILED, EXCEPTION, RETURNED = range(10)
FINAL_CODES = frozenset({DELIVERED, RETURNED})
#: type codes as strings, for baseline keys (formatting an int costs more than joining strings)
CODE_STR: tuple[str, ...] = tuple(str(code) for code in range(len(TYPES)))

#: (event_time_ms, type code, node_id, region)
RouteEntry = tuple[int, int, str, str]


class ParcelState(msgspec.Struct, array_like=True):
    """One in-flight parcel, as small as possible (serialised with msgpack)."""

    waybill: str
    order: str
    merchant: str
    carrier: str
    category: str
    amount: float
    origin: str
    dest: str
    dispatch_by: int
    deliver_by: int
    route: list[RouteEntry] = msgspec.field(default_factory=list)
    #: 32-bit hashes of the event ids seen (little-endian, oldest first): one bytes object, not a list of ints
    seen: bytes = b""
    #: detector name -> deadline (event time, ms)
    due: dict[str, int] = msgspec.field(default_factory=dict)
    #: alert type -> (alert_id, onset_ms, node_id, fired_at_ms)
    open: dict[str, tuple[str, int, str, int]] = msgspec.field(default_factory=dict)
    #: one-shot findings already emitted ("type" or "type:episode")
    fired: list[str] = msgspec.field(default_factory=list)
    #: small numbers detectors keep for their decisions and evidence
    note: dict[str, float] = msgspec.field(default_factory=dict)
    final_at: int = 0
    #: last scan with coordinates: (time, lat, lon)
    geo: tuple[int, float, float] | None = None
    #: set once an anomaly alert fired: its durations are not learned as normal
    tainted: bool = False

    @property
    def last(self) -> RouteEntry | None:
        return self.route[-1] if self.route else None

    def first_time(self, code: int) -> int | None:
        for entry in self.route:
            if entry[1] == code:
                return entry[0]
        return None

    def has(self, code: int) -> bool:
        for entry in self.route:
            if entry[1] == code:
                return True
        return False


def new_state(event: ScanEvent) -> ParcelState:
    return ParcelState(
        waybill=event.waybill_id,
        order=event.order_id,
        merchant=event.merchant_id,
        carrier=event.carrier_id,
        category=event.category,
        amount=event.order_amount,
        origin=event.origin_region,
        dest=event.dest_region,
        dispatch_by=event.promised_dispatch_by,
        deliver_by=event.promised_delivery_by,
    )


class Finding(msgspec.Struct, kw_only=True):
    """A detector's conclusion about one parcel (or hub), before it becomes an alert."""

    alert_type: AnomalyType
    at_ms: int
    onset_ms: int
    summary: str
    status: AlertStatus = AlertStatus.FIRING
    severity: Severity = Severity.WARNING
    episode: str = ""
    node: str | None = None
    region: str | None = None
    evidence: dict[str, float | int | str | bool | None] = msgspec.field(default_factory=dict)
    predicted_lateness_s: float | None = None
    incident_id: str | None = None
    # hub-level findings (incidents) carry their own id and are not tied to the parcel
    alert_id: str | None = None
    affected: tuple[str, ...] = ()
    window_start: int | None = None
    window_end: int | None = None
    revision: int = 0


def dwell_baseline(min_count: int) -> DurationBaseline:
    """The dwell baseline (the parcel engines' and the hub stage's): clipped hard at 1.5 x p99."""

    return DurationBaseline(
        (900, 1800, 3 * 3600, 12 * 3600, 18 * 3600, 30 * 3600), min_count=min_count, clip_factor=1.5
    )


class Env:
    """Shared, per-engine context handed to every detector."""

    def __init__(self, calendar: Calendar, min_count: int, lateness_ms: int) -> None:
        self.calendar = calendar
        self.lateness_ms = lateness_ms
        # priors are generous guesses (seconds) used only while keys are cold
        # dwell learning clips hard (1.5 x p99): a hub outage must not become the hub's normal
        self.dwell = dwell_baseline(min_count)
        # legs are scheduled trucks: a third of min_count pins one down (and a partition sees
        # only its share of a lane, so a full min_count left most lanes cold at 4 partitions)
        self.segment = DurationBaseline(
            (1800, 3600, 6 * 3600, 18 * 3600, 24 * 3600, 36 * 3600), min_count=max(1, min_count // 3)
        )
        # predicted-late's remaining time to delivery after a scan and after the scan that
        # followed it, both in units of the time the promise left at the scan (never a prior)
        self.remaining = DurationBaseline(
            (12 * 3600, 24 * 3600, 48 * 3600, 96 * 3600, 120 * 3600, 168 * 3600), min_count=min_count
        )
        self.remaining_next = DurationBaseline(
            (12 * 3600, 24 * 3600, 48 * 3600, 96 * 3600, 120 * 3600, 168 * 3600), min_count=min_count
        )
        #: ... and the time from a scan to the next one, in the same unit
        self.remaining_stage = DurationBaseline(
            (12 * 3600, 24 * 3600, 48 * 3600, 96 * 3600, 120 * 3600, 168 * 3600), min_count=min_count
        )
        #: the remaining time to delivery in seconds, per node and lane only (a node's trucks do
        #: not run faster for a parcel that is behind its promise; the promise's unit is for
        #: pooling lanes under their carrier)
        self.remaining_abs = DurationBaseline(
            (12 * 3600, 24 * 3600, 48 * 3600, 96 * 3600, 120 * 3600, 168 * 3600), min_count=min_count
        )
        self.dispatch = DurationBaseline((900, 1800, 4 * 3600, 16 * 3600, 20 * 3600, 30 * 3600), min_count=min_count)
        self.pickup = DurationBaseline((900, 1800, 4 * 3600, 16 * 3600, 20 * 3600, 30 * 3600), min_count=min_count)
        #: region -> [n, sum_lat, sum_lon]: learned centroids for "moves away from destination"
        self.centroids: dict[str, list[float]] = {}
        #: "origin>dest" lane -> {region: hub arrivals seen}: which regions a lane normally visits
        self.lane_regions: dict[str, dict[str, int]] = {}
        #: carrier -> its feed profile ``[delivered, with OUT_FOR_DELIVERY, with hub scans, with
        #: DISPATCHED]``: which scan types its feed really sends (a rule that needs one applies only
        #: where the feed has shown it)
        self.feeds: dict[str, list[int]] = {}
        #: feed-profile counts since the pool last took them (``detectors/pool.py``, when pooled)
        self.feeds_delta: dict[str, list[int]] = {}
        self.pooled = False
        # per-event context set by the engine before calling detectors
        self.prev: RouteEntry | None = None
        self.latest = True
        #: type code of the event being processed (``CODES[event.event_type]``, looked up once)
        self.code = 0

    def baselines(self) -> dict[str, DurationBaseline]:
        return {
            "dwell": self.dwell,
            "segment": self.segment,
            "remaining": self.remaining,
            "remaining_next": self.remaining_next,
            "remaining_stage": self.remaining_stage,
            "remaining_abs": self.remaining_abs,
            "dispatch": self.dispatch,
            "pickup": self.pickup,
        }

    def count_feed(self, carrier: str, ofd: bool, hub: bool, dispatched: bool) -> None:
        """One delivered parcel of ``carrier`` joins its feed profile (and the pooled delta)."""

        profiles = [self.feeds.setdefault(carrier, [0, 0, 0, 0])]
        if self.pooled:
            profiles.append(self.feeds_delta.setdefault(carrier, [0, 0, 0, 0]))
        for profile in profiles:
            profile[FEED_DELIVERED] += 1
            profile[FEED_OFD] += ofd
            profile[FEED_HUB] += hub
            profile[FEED_DISPATCHED] += dispatched

    def feed_share(self, carrier: str, which: int) -> tuple[float, int]:
        """(share of the carrier's delivered parcels whose feed showed scan kind ``which``, parcels)."""

        f = self.feeds.get(carrier)
        if not f or not f[0]:
            return 0.0, 0
        return f[which] / f[0], f[0]

    def centroid(self, region: str) -> tuple[float, float] | None:
        c = self.centroids.get(region)
        if c is None or c[0] < 3:
            return None
        return c[1] / c[0], c[2] / c[0]


#: indexes into a feed profile (``Env.feeds``)
FEED_DELIVERED, FEED_OFD, FEED_HUB, FEED_DISPATCHED = range(4)


def hour_bucket(t_ms: int) -> int:
    """Six-hour bucket of the UTC day (0..3): keys dwell by time of day."""

    return (t_ms // 21_600_000) % 4


def km_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km (haversine)."""

    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12_742.0 * math.asin(min(1.0, math.sqrt(a)))


class Detector(Protocol):
    """The one protocol every detector follows (see docs/detection.md)."""

    name: str

    def on_event(self, state: ParcelState, event: ScanEvent) -> list[Finding]: ...

    def next_deadline_ms(self, state: ParcelState) -> int | None: ...

    def on_deadline(self, state: ParcelState, now_ms: int) -> list[Finding]: ...


class DeadlineMixin:
    """Deadlines kept in ``state.due`` under the detector's name.

    ``handles`` (optional for any detector, not part of the protocol so older detectors
    keep working) lists the scan type codes ``on_event`` can act on; the engine does not
    call it for other types. None means every type.
    """

    name: str
    handles: frozenset[int] | None = None

    def next_deadline_ms(self, state: ParcelState) -> int | None:
        return state.due.get(self.name)

    def set_due(self, state: ParcelState, at_ms: int | None) -> None:
        if at_ms is None:
            state.due.pop(self.name, None)
        else:
            state.due[self.name] = int(at_ms)
