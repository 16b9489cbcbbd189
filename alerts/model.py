"""Records of the alert service: an alert's lifecycle state, the routing
configuration (receivers, routes, silences, inhibition rules) and a
notification waiting for delivery.

All are msgspec ``Struct``s so the routes file and the Redis copies are
validated once, at the edge, and trusted inside. Labels are the flat string
view of an :class:`~logiwatch.detectors.model.Alert` that matchers, silences
and routes look at, as in Alertmanager.
"""

from __future__ import annotations

import enum
import hashlib
import re

import msgspec

from logiwatch.detectors.model import Alert, AnomalyType, Severity


class AlertState(str, enum.Enum):
    """Where a person stands with an alert: OPEN -> ACKNOWLEDGED -> RESOLVED."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Suppression(enum.StrEnum):
    """Why an alert was recorded but not notified."""

    INHIBITED = "inhibited"  # an inhibition rule's source (a hub incident) explains it
    GROUPED = "grouped"  # it joined an incident, whose one notification speaks for it
    SILENCED = "silenced"  # a matching silence was active


class NotificationEvent(enum.StrEnum):
    """What a notification says about its alert (the payload's ``alert.<event>``)."""

    FIRING = "firing"
    RESOLVED = "resolved"
    ESCALATED = "escalated"


class NotificationKind(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """The event of one notification, with what tells two of the same event apart.

    ``revision`` marks a firing again after a resolution (a new episode, so a
    new webhook-id); ``severity`` is the level an escalation raised the alert
    to. :attr:`key` is the stable text the webhook-id is derived from.

    >>> NotificationKind(NotificationEvent.ESCALATED, severity=Severity.CRITICAL).key
    'escalated-critical'
    >>> NotificationKind(NotificationEvent.FIRING, revision=3).key
    'firing-r3'
    """

    event: NotificationEvent
    revision: int | None = None
    severity: Severity | None = None

    @property
    def key(self) -> str:
        if self.severity is not None:
            return f"{self.event.value}-{self.severity.value}"
        if self.revision is not None:
            return f"{self.event.value}-r{self.revision}"
        return self.event.value


FIRING = NotificationKind(NotificationEvent.FIRING)
RESOLVED = NotificationKind(NotificationEvent.RESOLVED)


class PayloadFormat(str, enum.Enum):
    GENERIC = "generic"
    ALERTMANAGER = "alertmanager"
    DINGTALK = "dingtalk"


#: Standard Webhooks' retry schedule (seconds after the previous attempt),
#: about three days in all; the first attempt is immediate.
DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)

#: Label names a matcher may use (the flat view of an alert, see ``alert_labels``).
LABEL_NAMES = frozenset(
    {
        "alert_type",
        "severity",
        "status",
        "merchant_id",
        "carrier_id",
        "region",
        "dest_region",
        "node_id",
        "category",
        "waybill_id",
        "incident_id",
    }
)

_MATCHER = re.compile(r"^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class Matcher(msgspec.Struct, frozen=True):
    """``name op value`` with op one of ``=``, ``!=``, ``=~`` (full regex match), ``!~``."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(f"matcher {text!r} is not of the form name=value, name!=value, name=~re or name!~re")
        name, op, value = m.groups()
        if name not in LABEL_NAMES:
            raise ValueError(f"matcher {text!r}: unknown label {name!r} (known: {', '.join(sorted(LABEL_NAMES))})")
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matcher {text!r}: bad regular expression: {exc}") from None
        return cls(name, op, value)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


class ReceiverKind(str, enum.Enum):
    """``webhook``: signed POSTs of ``format``; ``alertmanager``: a Prometheus Alertmanager's
    ``POST /api/v2/alerts`` (``url`` is its base URL), kept current (``alerts/alertmanager.py``)."""

    WEBHOOK = "webhook"
    ALERTMANAGER = "alertmanager"


class Receiver(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A webhook endpoint with its own secret, limits and payload format (or, of kind
    ``alertmanager``, an Alertmanager's API: no secret, re-posted every ``resend_s``).

    A ``[[receivers]]`` entry of the routes file decodes into it (unknown keys
    are refused as typos); ``routing.parse_routes`` then checks the values.
    """

    name: str
    url: str
    secret: str
    format: PayloadFormat = PayloadFormat.GENERIC
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    rate_per_s: float = 10.0
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    #: Loopback, private and link-local targets are refused unless allowed
    #: (tests and on-premise receivers), see ``webhooks.check_address``.
    allow_private_networks: bool = False
    max_payload_bytes: int = 20_000
    kind: ReceiverKind = ReceiverKind.WEBHOOK
    #: kind alertmanager: firing alerts are re-posted this often, with endsAt 4 x this ahead
    resend_s: float = 60.0


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sends matching alerts to ``receiver``; empty lists match anything.

    A ``[[routes]]`` entry of the routes file decodes straight into it (unknown
    keys are refused as typos); ``routing.parse_routes`` then checks the values.
    """

    receiver: str
    types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    merchants: tuple[str, ...] = ()
    carriers: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    matchers: tuple[str, ...] = ()


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    """Mutes alerts matching every matcher between ``starts_at`` and ``ends_at`` (ms, UTC)."""

    silence_id: str
    matchers: tuple[str, ...]
    starts_at: int
    ends_at: int
    comment: str = ""
    created_by: str = "config"


class InhibitRule(msgspec.Struct, frozen=True, kw_only=True):
    """A firing ``source_type`` alert mutes ``target_types`` alerts sharing the ``equal`` label."""

    source_type: AnomalyType = AnomalyType.HUB_INCIDENT
    target_types: tuple[AnomalyType, ...] = (AnomalyType.STALL,)
    equal: str = "incident_id"


class AlertRecord(msgspec.Struct, kw_only=True):
    """The service's copy of one alert: the latest detector record plus its lifecycle."""

    alert: Alert
    state: AlertState
    first_seen_ms: int
    updated_ms: int
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    escalations: int = 0
    false_alarm: bool = False
    suppressed: Suppression | None = None  # why it was not notified


class Notification(msgspec.Struct, kw_only=True):
    """One message for one receiver about one alert event; ``nid`` is the webhook-id."""

    nid: str
    receiver: str
    alert_id: str
    kind: NotificationKind
    created_ms: int
    attempts: int = 0
    last_error: str | None = None
    delivered_ms: int | None = None


def alert_labels(alert: Alert) -> dict[str, str]:
    """The flat label view matchers see (missing values are empty strings)."""

    return {
        "alert_type": alert.alert_type.value,
        "severity": alert.severity.value,
        "status": alert.status.value,
        "merchant_id": alert.merchant_id or "",
        "carrier_id": alert.carrier_id or "",
        "region": alert.region or "",
        "dest_region": alert.dest_region or "",
        "node_id": alert.node_id or "",
        "category": alert.category or "",
        "waybill_id": alert.waybill_id or "",
        "incident_id": alert.incident_id or "",
    }


def notification_id(receiver: str, alert_id: str, kind: NotificationKind) -> str:
    """Stable webhook-id: same receiver, alert and event give the same id in every process.

    >>> notification_id("cs", "a1", FIRING) == notification_id("cs", "a1", FIRING)
    True
    """

    raw = f"{receiver}|{alert_id}|{kind.key}".encode()
    return "msg_" + hashlib.blake2b(raw, digest_size=12).hexdigest()
