"""What detectors share: the per-parcel state struct, findings, the detector protocol and its environment.

The engine owns one :class:`ParcelState` per in-flight parcel and hands it to
every detector; detectors read it, keep their deadlines in ``state.due`` (through
``DetectorBase.set_due``) and their typed per-parcel values in ``state.note`` (through
``protocol.Slot``), and return :class:`Finding` objects that the
engine turns into alerts (one open alert per parcel and type). The state is a
compact msgspec struct (route as tuples, seen event ids as packed 32-bit hashes) so a
snapshot stays well under a kilobyte per parcel. :class:`Env` carries what is
shared across parcels: the learned models and the calendar (the protocol is ``detectors/protocol.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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
    #: the detectors' typed per-parcel values (``protocol.Slot``), by key; only slots touch it
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
    """Shared, per-engine context handed to every detector: the learned models and the calendar.

    The duration baselines and model tables are the detectors' own (each declares them, see
    ``detectors/protocol.py``); the engine builds them here from every registered detector's
    declaration, so they are exported, restored and pooled by name. The feed profiles are
    shared: any rule may ask which scan types a carrier's feed really sends.
    """

    def __init__(
        self,
        calendar: Calendar,
        min_count: int,
        lateness_ms: int,
        baselines: Mapping[str, Callable[[int], DurationBaseline]] | None = None,
        tables: Iterable[str] = (),
    ) -> None:
        self.calendar = calendar
        self.lateness_ms = lateness_ms
        self.min_count = min_count
        self._baselines = {name: make(min_count) for name, make in (baselines or {}).items()}
        #: model table name -> its contents (a detector's learned maps other than baselines)
        self.tables: dict[str, dict[str, Any]] = {name: {} for name in tables}
        #: carrier -> its feed profile ``[delivered, with OUT_FOR_DELIVERY, with hub scans, with
        #: DISPATCHED]``: which scan types its feed really sends (a rule that needs one applies only
        #: where the feed has shown it)
        self.feeds: dict[str, list[int]] = {}
        #: feed-profile counts since the pool last took them (``detectors/pool.py``, when pooled)
        self.feeds_delta: dict[str, list[int]] = {}
        #: count-table additions since the pool last took them (``add_counts``, when pooled):
        #: table name -> key -> counts
        self.counts_delta: dict[str, dict[str, list[int]]] = {}
        self.pooled = False

    def baselines(self) -> dict[str, DurationBaseline]:
        return self._baselines

    def baseline(self, name: str) -> DurationBaseline:
        """A declared baseline (``KeyError`` names one no registered detector declares)."""

        return self._baselines[name]

    def table(self, name: str) -> dict[str, Any]:
        """A declared model table; restored in place, so a detector may hold on to it."""

        return self.tables[name]

    def add_counts(self, name: str, key: str, adds: Sequence[int]) -> None:
        """Add ``adds`` to the counts under ``key`` of table ``name`` (and to the pooled delta).

        A table whose entries are lists of counts changed only through this is a sum of what
        every parcel taught it, so it is pooled across partitions as the baselines are (outcome
        tables, e.g. how often parcels warned early were late): its warm-up does not grow with
        the partition count.
        """

        add_counts(self.tables[name], key, adds)
        if self.pooled:
            add_counts(self.counts_delta.setdefault(name, {}), key, adds)

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


def add_counts(table: dict[str, list[int]], key: str, adds: Sequence[int], sign: int = 1) -> None:
    """Add ``sign`` times ``adds`` to the counts under ``key`` (a new or shorter entry grows with zeros)."""

    got = table.get(key)
    if got is None:
        got = table[key] = [0] * len(adds)
    elif len(got) < len(adds):
        got.extend([0] * (len(adds) - len(got)))
    for i, n in enumerate(adds):
        got[i] += sign * n


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
