"""AfterShip tracking webhooks -> contract-v2 scans.

Signature: header ``aftership-hmac-sha256`` = base64(HMAC-SHA256(webhook
secret, raw body)); the body's ``ts`` (epoch seconds, inside the signed body)
must lie within the replay window. ``msg`` is the tracking: ``tracking_number``,
``slug`` (the carrier), ``checkpoints[]`` with ``checkpoint_time`` in the
checkpoint's local time (offset optional), ``location``, ``city``, ``state``,
the postal code and the country. Field names follow the webhook version:
before 2026-01 ``zip`` and ``country_iso3``, from 2026-01 ``postal_code`` and
``country_region``; both spellings are read, whatever the version header says.

Mapping (``tag`` / ``subtag`` of each checkpoint -> event type; an exception keeps
its subtag in ``detail``):

| AfterShip | event type |
|---|---|
| ``InfoReceived`` | DISPATCHED |
| ``InTransit_002`` acceptance scan | PICKED_UP |
| ``InTransit_007`` departure scan, ``_005`` customs cleared, ``_009`` forwarded | HUB_DEPARTED |
| other ``InTransit_*`` (001 other, 003 arrival, 004 destination country, 006 customs, 008 resolved) | HUB_ARRIVED |
| ``OutForDelivery_*``, ``AvailableForPickup_*`` | OUT_FOR_DELIVERY |
| ``AttemptFail_*`` | DELIVERY_FAILED |
| ``Delivered_*`` | DELIVERED |
| ``Exception_011`` returned to sender | RETURNED |
| other ``Exception_*`` (e.g. 013 lost, 016 delay or misroute, 017 weather), ``Expired_*`` | EXCEPTION, ``detail`` = subtag |
| ``Pending`` | no scan |
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import msgspec

from logiwatch.detectors.model import EventType
from logiwatch.streams.ingest.feeds import FeedError, Parsed, make_scan, text

SIGNATURE_HEADER = "aftership-hmac-sha256"

_IN_TRANSIT_DEPARTED = {"InTransit_005", "InTransit_007", "InTransit_009"}


def event_type_of(tag: str, subtag: str | None) -> tuple[EventType | None, str | None]:
    """(event type or None for no scan, detail) of an AfterShip tag/subtag.

    >>> event_type_of("Exception", "Exception_013")
    (<EventType.EXCEPTION: 'EXCEPTION'>, 'aftership:Exception_013')
    >>> event_type_of("InTransit", "InTransit_007")[0]
    <EventType.HUB_DEPARTED: 'HUB_DEPARTED'>
    """

    sub = subtag or f"{tag}_001"
    if tag == "InfoReceived":
        return EventType.DISPATCHED, None
    if tag == "InTransit":
        if sub == "InTransit_002":
            return EventType.PICKED_UP, None
        if sub in _IN_TRANSIT_DEPARTED:
            return EventType.HUB_DEPARTED, None
        return EventType.HUB_ARRIVED, None
    if tag in ("OutForDelivery", "AvailableForPickup"):
        return EventType.OUT_FOR_DELIVERY, None
    if tag == "AttemptFail":
        return EventType.DELIVERY_FAILED, f"aftership:{sub}"
    if tag == "Delivered":
        return EventType.DELIVERED, None
    if tag == "Exception" and sub == "Exception_011":
        return EventType.RETURNED, f"aftership:{sub}"
    if tag in ("Exception", "Expired"):
        return EventType.EXCEPTION, f"aftership:{sub}"
    if tag == "Pending":
        return None, None
    raise FeedError("bad_payload", f"unknown AfterShip tag {tag!r}")


class AfterShipAdapter:
    name = "aftership"

    def __init__(self, secret: str, replay_window_s: float = 900.0) -> None:
        self.secret = secret.encode()
        self.replay_window_s = replay_window_s

    def sign(self, body: bytes) -> str:
        return base64.b64encode(hmac.new(self.secret, body, hashlib.sha256).digest()).decode()

    def verify(self, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
        given = headers.get(SIGNATURE_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), self.sign(body).encode()):
            raise FeedError("bad_signature", f"{SIGNATURE_HEADER} does not match the body")
        try:
            ts = msgspec.json.decode(body).get("ts")
        except (msgspec.DecodeError, AttributeError):
            return  # authentic but malformed: parse() says why
        if isinstance(ts, int | float) and abs(now_s - ts) > self.replay_window_s:
            raise FeedError("replayed", f"ts {ts} is outside the {self.replay_window_s:.0f} s window")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Parsed:
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise FeedError("bad_json", str(exc)) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("msg"), dict):
            raise FeedError("bad_payload", "no tracking object in 'msg'")
        msg: dict[str, Any] = doc["msg"]
        waybill = text(msg, "tracking_number")
        if waybill is None:
            raise FeedError("bad_payload", "msg.tracking_number is missing")
        carrier = text(msg, "slug")
        checkpoints = msg.get("checkpoints") or []
        if not isinstance(checkpoints, list):
            raise FeedError("bad_payload", "msg.checkpoints is not a list")
        out = Parsed(kind=str(doc.get("event") or "tracking_update"))
        for cp in checkpoints:
            if not isinstance(cp, dict):
                raise FeedError("bad_payload", "a checkpoint is not an object")
            tag = text(cp, "tag") or "InTransit"
            subtag = text(cp, "subtag")
            etype, detail = event_type_of(tag, subtag)
            if etype is None:
                out.skipped += 1
                continue
            message = text(cp, "message")
            out.scans.append(
                make_scan(
                    feed=self.name,
                    waybill=waybill[:128],
                    stamp=text(cp, "checkpoint_time"),
                    event_type=etype,
                    status=subtag or tag,
                    carrier=text(cp, "slug") or carrier,
                    location=text(cp, "location"),
                    city=text(cp, "city"),
                    postcode=text(cp, "postal_code") or text(cp, "zip"),
                    admin_area=text(cp, "state"),
                    country=text(cp, "country_region") or text(cp, "country_iso3"),
                    detail=f"{detail} {message}" if detail and message else detail,
                )
            )
        return out

    def reply(self, ok: bool, message: str) -> tuple[str, bytes]:
        return "application/json", msgspec.json.encode({"ok": ok, "message": message})
