"""What every feed adapter shares: the adapter protocol, the parse result, the error.

An adapter is pure: ``verify`` checks the vendor's signature over the raw
body (in constant time, and the signed timestamp against a replay window
where the vendor signs one), ``parse`` maps the push to contract-v2
:class:`~logiwatch.detectors.model.Scan` records or raises :class:`FeedError`
with a reason code (the receiver answers 4xx and dead-letters the body with
that reason), and ``reply`` is what the vendor expects back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from logiwatch.detectors.model import EventType, Scan
from logiwatch.streams.ingest.locations import TimeError, event_id, location_key, location_node_id, to_utc_ms

#: Reason codes of rejected pushes (dead-letter reasons and metric labels).
FEED_REASONS = ("bad_signature", "replayed", "bad_json", "bad_payload", "bad_time", "oversize")


class FeedError(Exception):
    """A push that cannot be used: ``reason`` is one of :data:`FEED_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Parsed:
    """The scans of one push; ``skipped`` counts checkpoints that carry no scan (e.g. 'pending')."""

    scans: list[Scan] = field(default_factory=list)
    skipped: int = 0
    #: the vendor's push kind (e.g. TRACKING_STOPPED, shutdown) for logs and counters
    kind: str = ""


class Adapter(Protocol):
    name: str

    def verify(self, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
        """Raise ``FeedError('bad_signature' | 'replayed', ...)`` unless the push is authentic."""
        ...

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Parsed: ...

    def reply(self, ok: bool, message: str) -> tuple[str, bytes]:
        """(content type, body) of the answer the vendor expects."""
        ...


def make_scan(
    *,
    feed: str,
    waybill: str,
    stamp: str | None,
    utc_stamp: str | None = None,
    event_type: EventType,
    status: str,
    carrier: str | None,
    location: str | None = None,
    city: str | None = None,
    postcode: str | None = None,
    admin_area: str | None = None,
    country: str | None = None,
    region: str | None = None,
    detail: str | None = None,
    id_text: str | None = None,
) -> Scan:
    """One slim scan from a feed checkpoint: UTC time with its basis, stable node and event ids.

    ``stamp`` is the checkpoint's local time (offset optional); ``utc_stamp``
    a UTC time the vendor also gives (preferred when present). ``status`` is
    the checkpoint's own code (part of the event id; ``id_text`` replaces it
    there when the vendor gives the checkpoint no code of its own).
    """

    try:
        if utc_stamp:
            t, _ = to_utc_ms(utc_stamp)  # UTC by definition, with or without its "Z"
            basis = "offset"
        elif stamp:
            t, basis = to_utc_ms(stamp, country=country, admin_area=admin_area)
        else:
            raise FeedError("bad_time", f"checkpoint of {waybill} has no time")
    except TimeError as exc:
        raise FeedError("bad_time", str(exc)) from None
    key = location_key(country=country, admin_area=admin_area, postcode=postcode, city=city, location=location)
    node = location_node_id(country=country, admin_area=admin_area, postcode=postcode, city=city, location=location)
    return Scan(
        schema_version=2,
        event_id=event_id(feed, waybill, t, key, id_text or status),
        waybill_id=waybill,
        event_time=t,
        event_type=event_type,
        source=feed,
        carrier_id=carrier or None,
        node_id=node,
        region=region,
        location=(location or None) and location[:256],
        city=(city or None) and city[:128],
        postcode=(postcode or None) and postcode[:32],
        admin_area=(admin_area or None) and admin_area[:64],
        country=(country or None) and country[:8],
        detail=(detail or None) and detail[:256],
        time_basis=basis,
    )


def text(obj: Mapping[str, object], name: str) -> str | None:
    """A string field of a vendor object (numbers as text), None when absent or empty."""

    value = obj.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str | int | float):
        return str(value)
    raise FeedError("bad_payload", f"field {name!r} is not a string")
