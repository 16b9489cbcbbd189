"""The domain model every part of logiwatch speaks: scan events, clock ticks,
alerts and ground-truth labels.

These are msgspec ``Struct``s so that decoding is fast and validated once, at
the edge (see :mod:`logiwatch.detectors.codec`); inside, code trusts the
types. Times are UTC epoch milliseconds and carry ``_ms``-free names only
where the public contract (``docs/events.md``) fixes them (``event_time``,
``promised_dispatch_by``, ``promised_delivery_by``). Schema changes bump
``SCHEMA_VERSION`` and stay backward compatible for decoding.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Annotated

import msgspec

SCHEMA_VERSION = 1
ALERT_SCHEMA_VERSION = 1

#: Kafka header that marks a clock-tick record on the events topic.
TICK_HEADER = "logiwatch-kind"
TICK_HEADER_VALUE = b"tick"


class EventType(str, enum.Enum):
    """What happened to the parcel at a node, in the usual order of a journey."""

    ORDER_PAID = "ORDER_PAID"
    DISPATCHED = "DISPATCHED"
    PICKED_UP = "PICKED_UP"
    HUB_ARRIVED = "HUB_ARRIVED"
    HUB_DEPARTED = "HUB_DEPARTED"
    OUT_FOR_DELIVERY = "OUT_FOR_DELIVERY"
    DELIVERED = "DELIVERED"
    DELIVERY_FAILED = "DELIVERY_FAILED"
    EXCEPTION = "EXCEPTION"
    RETURNED = "RETURNED"


#: Scans after which a parcel's journey is over; its state is forgotten
#: after the retention period.
FINAL_EVENT_TYPES = frozenset({EventType.DELIVERED, EventType.RETURNED})


class NodeType(str, enum.Enum):
    """Kind of place where a scan happens."""

    MERCHANT = "MERCHANT"  # the merchant's warehouse (payment, dispatch)
    OUTLET = "OUTLET"  # carrier pickup point / first-mile outlet
    HUB = "HUB"  # sorting hub
    STATION = "STATION"  # last-mile delivery station
    CUSTOMER = "CUSTOMER"  # the buyer's address


NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Region = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
EpochMs = Annotated[int, msgspec.Meta(ge=0)]
Amount = Annotated[float, msgspec.Meta(ge=0, le=1e9)]


class ScanEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One scan of one parcel at one node (schema version 1).

    ``waybill_id`` is the parcel and the Kafka key; ``event_id`` is unique per
    scan and makes processing idempotent.
    """

    event_id: NonEmpty
    waybill_id: NonEmpty
    order_id: NonEmpty
    merchant_id: NonEmpty
    carrier_id: NonEmpty
    event_type: EventType
    node_id: NonEmpty
    node_type: NodeType
    region: Region
    origin_region: Region
    dest_region: Region
    event_time: EpochMs
    promised_dispatch_by: EpochMs
    promised_delivery_by: EpochMs
    category: Annotated[str, msgspec.Meta(max_length=64)]
    order_amount: Amount
    schema_version: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    detail: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    #: ``"missing"`` when the worker joined this scan without a shipment
    #: registration (contract v2: it waited ``worker.join_wait_ms`` and went on
    #: with defaults); None for v1 scans and joined v2 scans.
    registration: Annotated[str, msgspec.Meta(max_length=16)] | None = None


#: Contract v2 (``docs/events.md``): shipment registrations on
#: ``logistics.shipments`` and slim carrier scans on ``logistics.events``.
V2_SCHEMA_VERSION = 2

#: ``merchant_id`` of a parcel whose scans went on without a registration;
#: the engine marks such parcels' alerts with ``evidence["registration"] = "missing"``.
UNREGISTERED_MERCHANT = "unregistered"

ShortText = Annotated[str, msgspec.Meta(max_length=256)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ShipmentRegistration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """What the order system knows about a parcel, once (contract v2, topic ``logistics.shipments``).

    Keyed by ``waybill_id``. A later registration of the same waybill (a new
    promise, a change of carrier) supersedes an earlier one when its
    ``updated_at`` (default: ``registered_at``) is not older. Every field but
    the waybill and ``registered_at`` is optional: real order systems lack some.
    """

    waybill_id: NonEmpty
    registered_at: EpochMs
    schema_version: Annotated[int, msgspec.Meta(ge=V2_SCHEMA_VERSION, le=V2_SCHEMA_VERSION)] = V2_SCHEMA_VERSION
    updated_at: EpochMs | None = None
    order_id: NonEmpty | None = None
    merchant_id: NonEmpty | None = None
    carrier_id: NonEmpty | None = None
    promised_dispatch_by: EpochMs | None = None
    promised_delivery_by: EpochMs | None = None
    order_amount: Amount | None = None
    category: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    origin_region: Region | None = None
    dest_region: Region | None = None

    @property
    def version_ms(self) -> int:
        """Which of two registrations of a waybill wins: the larger (ties: the later one read)."""

        return self.registered_at if self.updated_at is None else self.updated_at


class Scan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """A slim carrier scan (contract v2, topic ``logistics.events``, keyed by waybill).

    ``schema_version`` is required and 2: it is what tells a slim scan from a
    v1 :class:`ScanEvent` on the same topic. Either a ``node_id`` or raw
    location fields (``location`` text, ``city``, ``postcode``, ``admin_area``
    code, ``country``); the worker derives a stable node id from the
    normalised location when the node id is absent. ``time_basis`` records
    how the feed's local time became UTC: ``offset`` (the feed gave one),
    ``zone`` (inferred from the area), ``assumed`` (taken as UTC).
    """

    event_id: NonEmpty
    waybill_id: NonEmpty
    event_time: EpochMs
    event_type: EventType
    schema_version: Annotated[int, msgspec.Meta(ge=V2_SCHEMA_VERSION, le=V2_SCHEMA_VERSION)]
    source: Code = "direct"
    carrier_id: NonEmpty | None = None
    node_id: NonEmpty | None = None
    node_type: NodeType | None = None
    region: Region | None = None
    location: ShortText | None = None
    city: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    postcode: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    admin_area: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    country: Annotated[str, msgspec.Meta(max_length=8)] | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    detail: ShortText | None = None
    time_basis: Annotated[str, msgspec.Meta(max_length=16)] | None = None


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """A clock-tick record: advances a partition's watermark without a scan.

    Written by the ticker into every partition of the events topic (marked by
    the ``logiwatch-kind: tick`` header), so that silent parcels are caught
    live and a replay of the topic replays the same clock.
    """

    tick_time: EpochMs
    source: str = "ticker"


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(str, enum.Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AnomalyType(str, enum.Enum):
    """Anomaly kinds: the alert types detectors emit and the simulator labels."""

    LATE_DISPATCH = "late_dispatch"
    PICKUP_TIMEOUT = "pickup_timeout"
    STALL = "stall"
    ABNORMAL_SEGMENT = "abnormal_segment"
    MISROUTE = "misroute"  # moves away from the destination, loops
    CONTRADICTION = "contradiction"  # teleports, impossible sequences
    LIKELY_LOST = "likely_lost"
    SUSPICIOUS_DELIVERY = "suspicious_delivery"
    PREDICTED_LATE = "predicted_late"
    HUB_INCIDENT = "hub_incident"


Evidence = dict[str, float | int | str | bool | None]


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """What a detector tells the world (schema version 1).

    ``alert_id`` is stable: the same input gives the same id, so a replay or a
    re-emission after a crash is recognised downstream. A parcel has at most
    one open alert per type; ``status=resolved`` with the same id closes it.
    A hub incident has no waybill: it names the hub (``node_id``), the window
    and the affected parcels; parcel alerts it explains carry its
    ``incident_id``. ``revision`` grows when an open alert is updated (an
    incident gaining parcels, a severity escalation).
    """

    alert_id: str
    alert_type: AnomalyType
    status: AlertStatus
    severity: Severity
    detected_at: int  # event time of detection (of resolution when resolved), ms
    summary: str
    onset_at: int | None = None
    waybill_id: str | None = None
    order_id: str | None = None
    merchant_id: str | None = None
    carrier_id: str | None = None
    node_id: str | None = None
    region: str | None = None
    dest_region: str | None = None
    category: str | None = None
    order_amount: float | None = None
    promised_delivery_by: int | None = None
    predicted_lateness_s: float | None = None
    incident_id: str | None = None
    affected_waybills: tuple[str, ...] = ()
    window_start: int | None = None
    window_end: int | None = None
    revision: int = 0
    evidence: Evidence = msgspec.field(default_factory=dict)
    schema_version: int = ALERT_SCHEMA_VERSION


class Label(msgspec.Struct, frozen=True, kw_only=True):
    """Ground truth written by the simulator: one row per (parcel, anomaly).

    ``onset_at`` is when the anomaly began; ``promise_broken_at`` is when the
    parcel's delivery promise is (or would be) broken, if it is. For a hub
    incident ``waybill_id`` is an affected parcel and ``node_id`` the hub;
    ``incident_id`` ties the rows of one incident together.
    """

    anomaly_type: AnomalyType
    onset_at: int
    waybill_id: str | None = None
    promise_broken_at: int | None = None
    node_id: str | None = None
    incident_id: str | None = None
    detail: str = ""


def make_alert_id(alert_type: AnomalyType | str, subject: str, episode: str | int = "") -> str:
    """Stable alert id from what the alert is about.

    ``subject`` is the waybill (or the hub for an incident) and ``episode``
    separates distinct occurrences for the same subject (e.g. the node and
    scan at which a stall began). Same arguments, same id, in every process.

    >>> make_alert_id("stall", "WB1", "HUB-3:4") == make_alert_id("stall", "WB1", "HUB-3:4")
    True
    >>> len(make_alert_id("stall", "WB1"))
    24
    """

    kind = alert_type.value if isinstance(alert_type, AnomalyType) else alert_type
    raw = f"{kind}|{subject}|{episode}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()
