"""17TRACK push notifications -> contract-v2 scans.

Body: ``{"event": "TRACKING_UPDATED" | "TRACKING_STOPPED", "data": {"number",
"carrier", "track_info": {...}}}``; header ``sign`` = hex SHA-256 of
``body + "/" + key`` (17TRACK signs no timestamp, so there is no replay
window: a replayed push only resends scans the dedup already knows).
``track_info.latest_status{status, sub_status}``; the scans are
``track_info.tracking.providers[].events[]`` with ``time_iso`` (offset
usually, not always), ``time_utc`` (may be null; preferred when present),
``sub_status``, ``description``, ``location`` and ``address{country, state,
city, postal_code}``. ``TRACKING_STOPPED`` carries no new scans.

Mapping (``sub_status``; an event without one takes the latest status when
it is the newest, else InTransit_Other):

| 17TRACK | event type |
|---|---|
| ``InfoReceived`` | DISPATCHED |
| ``InTransit_PickedUp`` | PICKED_UP |
| ``InTransit_Departure``, ``InTransit_CustomsReleased`` | HUB_DEPARTED |
| ``InTransit_Arrival``, ``InTransit_CustomsProcessing``, ``InTransit_Other`` | HUB_ARRIVED |
| ``AvailableForPickup_Other``, ``OutForDelivery_Other`` | OUT_FOR_DELIVERY |
| ``DeliveryFailure_*`` | DELIVERY_FAILED, ``detail`` = sub-status |
| ``Delivered_Other`` | DELIVERED |
| ``Exception_Returned`` | RETURNED |
| other ``Exception_*`` (Returning, Lost, Delayed, ...), ``Expired_Other``, ``InTransit_CustomsRequiringInformation`` | EXCEPTION, ``detail`` = sub-status |
| ``NotFound_*`` | no scan |
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import msgspec

from logiwatch.detectors.model import EventType
from logiwatch.streams.ingest.feeds import FeedError, Parsed, make_scan, text

SIGNATURE_HEADER = "sign"

_SIMPLE: dict[str, EventType] = {
    "InfoReceived": EventType.DISPATCHED,
    "InTransit_PickedUp": EventType.PICKED_UP,
    "InTransit_Departure": EventType.HUB_DEPARTED,
    "InTransit_CustomsReleased": EventType.HUB_DEPARTED,
    "InTransit_Arrival": EventType.HUB_ARRIVED,
    "InTransit_CustomsProcessing": EventType.HUB_ARRIVED,
    "InTransit_Other": EventType.HUB_ARRIVED,
    "AvailableForPickup_Other": EventType.OUT_FOR_DELIVERY,
    "OutForDelivery_Other": EventType.OUT_FOR_DELIVERY,
    "Delivered_Other": EventType.DELIVERED,
}


def event_type_of(sub_status: str) -> tuple[EventType | None, str | None]:
    """(event type or None for no scan, detail) of a 17TRACK sub-status.

    >>> event_type_of("Exception_Lost")
    (<EventType.EXCEPTION: 'EXCEPTION'>, '17track:Exception_Lost')
    """

    if sub_status in _SIMPLE:
        return _SIMPLE[sub_status], None
    prefix = sub_status.split("_", 1)[0]
    if prefix == "NotFound":
        return None, None
    if prefix == "DeliveryFailure":
        return EventType.DELIVERY_FAILED, f"17track:{sub_status}"
    if sub_status == "Exception_Returned":
        return EventType.RETURNED, f"17track:{sub_status}"
    if prefix in ("Exception", "Expired") or sub_status == "InTransit_CustomsRequiringInformation":
        return EventType.EXCEPTION, f"17track:{sub_status}"
    plain = {
        "InTransit": EventType.HUB_ARRIVED,
        "AvailableForPickup": EventType.OUT_FOR_DELIVERY,
        "OutForDelivery": EventType.OUT_FOR_DELIVERY,
        "Delivered": EventType.DELIVERED,
    }
    if prefix in plain:  # a status without (or with an unknown) sub-status
        return plain[prefix], None
    raise FeedError("bad_payload", f"unknown 17TRACK sub-status {sub_status!r}")


class SeventeenTrackAdapter:
    name = "17track"

    def __init__(self, key: str) -> None:
        self.key = key

    def sign(self, body: bytes) -> str:
        return hashlib.sha256(body + b"/" + self.key.encode()).hexdigest()

    def verify(self, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
        given = headers.get(SIGNATURE_HEADER, "").lower()
        if not given or not hmac.compare_digest(given.encode(), self.sign(body).encode()):
            raise FeedError("bad_signature", "sign does not match sha256(body + '/' + key)")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Parsed:
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise FeedError("bad_json", str(exc)) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            raise FeedError("bad_payload", "no 'data' object")
        kind = text(doc, "event") or ""
        if kind not in ("TRACKING_UPDATED", "TRACKING_STOPPED"):
            raise FeedError("bad_payload", f"unknown event {kind!r}")
        data: dict[str, Any] = doc["data"]
        out = Parsed(kind=kind)
        if kind == "TRACKING_STOPPED":
            return out
        waybill = text(data, "number")
        if waybill is None:
            raise FeedError("bad_payload", "data.number is missing")
        carrier_code = text(data, "carrier")
        carrier = f"17track:{carrier_code}" if carrier_code else None
        info = data.get("track_info") or {}
        if not isinstance(info, dict):
            raise FeedError("bad_payload", "data.track_info is not an object")
        latest = info.get("latest_status") or {}
        latest_sub = (text(latest, "sub_status") or text(latest, "status")) if isinstance(latest, dict) else None
        tracking = info.get("tracking") or {}
        if not isinstance(tracking, dict):
            raise FeedError("bad_payload", "track_info.tracking is not an object")
        providers = tracking.get("providers") or []
        if not isinstance(providers, list):
            raise FeedError("bad_payload", "tracking.providers is not a list")
        events: list[dict[str, Any]] = []
        for prov in providers:
            evs = prov.get("events") if isinstance(prov, dict) else None
            if not isinstance(evs, list) or not all(isinstance(e, dict) for e in evs):
                raise FeedError("bad_payload", "a provider's events are not a list of objects")
            events.extend(evs)
        for i, ev in enumerate(events):
            sub = text(ev, "sub_status") or text(ev, "stage")
            if sub is None:
                # only the newest event (17TRACK lists newest first) is known to be the latest status
                sub = latest_sub if i == 0 and latest_sub else "InTransit_Other"
            etype, detail = event_type_of(sub)
            if etype is None:
                out.skipped += 1
                continue
            addr = ev.get("address") or {}
            if not isinstance(addr, dict):
                raise FeedError("bad_payload", "an event's address is not an object")
            description = text(ev, "description")
            out.scans.append(
                make_scan(
                    feed=self.name,
                    waybill=waybill[:128],
                    stamp=text(ev, "time_iso"),
                    utc_stamp=text(ev, "time_utc"),
                    event_type=etype,
                    status=sub,
                    id_text=None if text(ev, "sub_status") else (description or sub),
                    carrier=carrier,
                    location=text(ev, "location"),
                    city=text(addr, "city"),
                    postcode=text(addr, "postal_code"),
                    admin_area=text(addr, "state"),
                    country=text(addr, "country"),
                    detail=f"{detail} {description}" if detail and description else detail,
                )
            )
        return out

    def reply(self, ok: bool, message: str) -> tuple[str, bytes]:
        return "application/json", msgspec.json.encode({"ok": ok, "message": message})
