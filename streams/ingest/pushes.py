"""Vendor-style pushes from simulated scans, for the demo, the benchmark and tests.

The simulator writes v1 scan events; a tracking feed would tell the same
journey as signed pushes that resend the whole history each time. These
builders turn a parcel's scans so far into an AfterShip-style webhook or a
Kuaidi100-style subscription push (signed with the vendor's scheme, local
times with and without an offset), and its first scan into the shipment
registration the order system would have sent. Simulated node ids become
facility text and provinces become admin areas, so what the worker derives
(``LOC-CN-...`` nodes, ``CN-<PROVINCE>`` regions) is consistent per place.
Payment and dispatch are the merchant's, not the carrier's: those scans
are not pushed (the registration stands for them). The module lives beside
the adapters it speaks to, where the demo (``logiwatch.demo``) and the
bench (``logiwatch.bench.ingest``) may import it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from logiwatch.detectors.model import EventType, ScanEvent, ShipmentRegistration
from logiwatch.streams.ingest.locations import location_region

_CST = timezone(timedelta(hours=8))

#: v1 event type -> AfterShip (tag, subtag); None: not a carrier checkpoint
AFTERSHIP_TAG: dict[EventType, tuple[str, str] | None] = {
    EventType.ORDER_PAID: None,
    EventType.DISPATCHED: None,
    EventType.PICKED_UP: ("InTransit", "InTransit_002"),
    EventType.HUB_ARRIVED: ("InTransit", "InTransit_003"),
    EventType.HUB_DEPARTED: ("InTransit", "InTransit_007"),
    EventType.OUT_FOR_DELIVERY: ("OutForDelivery", "OutForDelivery_001"),
    EventType.DELIVERED: ("Delivered", "Delivered_001"),
    EventType.DELIVERY_FAILED: ("AttemptFail", "AttemptFail_001"),
    EventType.EXCEPTION: ("Exception", "Exception_016"),
    EventType.RETURNED: ("Exception", "Exception_011"),
}

#: v1 event type -> (Kuaidi100 statusCode, context template); None: not pushed
KUAIDI100_STATE: dict[EventType, tuple[str, str] | None] = {
    EventType.ORDER_PAID: None,
    EventType.DISPATCHED: None,
    EventType.PICKED_UP: ("103", "【{node}】已揽收"),
    EventType.HUB_ARRIVED: ("1001", "快件已到达【{node}】"),
    EventType.HUB_DEPARTED: ("1002", "快件已从【{node}】发出"),
    EventType.OUT_FOR_DELIVERY: ("501", "【{node}】派件中"),
    EventType.DELIVERED: ("301", "【{node}】已签收"),
    EventType.DELIVERY_FAILED: ("203", "【{node}】拒收"),
    EventType.EXCEPTION: ("201", "【{node}】快件疑难"),
    EventType.RETURNED: ("401", "【{node}】退签"),
}


def pushed(events: Sequence[ScanEvent]) -> list[ScanEvent]:
    """The checkpoints a carrier feed would report: no payment or dispatch (the merchant's),
    each scan once (a feed lists a checkpoint once, however often the carrier resent it)."""

    seen: set[str] = set()
    out = []
    for e in events:
        if e.event_type not in (EventType.ORDER_PAID, EventType.DISPATCHED) and e.event_id not in seen:
            seen.add(e.event_id)
            out.append(e)
    return out


def registration_of(first: ScanEvent) -> ShipmentRegistration:
    """What the order system registers for the parcel of ``first``, regions as the feeds' are derived."""

    return ShipmentRegistration(
        waybill_id=first.waybill_id,
        registered_at=first.event_time,
        order_id=first.order_id,
        merchant_id=first.merchant_id,
        carrier_id=first.carrier_id,
        promised_dispatch_by=first.promised_dispatch_by,
        promised_delivery_by=first.promised_delivery_by,
        order_amount=first.order_amount,
        category=first.category,
        origin_region=location_region(country="CN", admin_area=first.origin_region),
        dest_region=location_region(country="CN", admin_area=first.dest_region),
    )


def _local(ms: int, with_offset: bool) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=_CST)
    return dt.isoformat(timespec="seconds") if with_offset else dt.replace(tzinfo=None).isoformat(timespec="seconds")


def aftership_push(history: Sequence[ScanEvent], secret: str, now_s: float) -> tuple[bytes, dict[str, str]]:
    """A signed AfterShip-style webhook carrying the parcel's whole history so far (oldest first)."""

    cps = []
    for i, ev in enumerate(pushed(history)):
        tag = AFTERSHIP_TAG[ev.event_type]
        assert tag is not None  # pushed() keeps the carrier's scans only
        cps.append(
            {
                # every third checkpoint without its offset, as some carriers report
                "checkpoint_time": _local(ev.event_time, with_offset=i % 3 != 2),
                "tag": tag[0],
                "subtag": tag[1],
                "location": ev.node_id,
                "state": ev.region,
                "city": None,
                "country_iso3": "CHN",
                "zip": None,
                "message": ev.detail or tag[1],
            }
        )
    wb = history[-1].waybill_id
    body = json.dumps(
        {"event": "tracking_update", "ts": int(now_s), "msg": {"tracking_number": wb, "slug": history[-1].carrier_id,
                                                                "checkpoints": cps}},
        ensure_ascii=False,
    ).encode()  # fmt: skip
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return body, {"aftership-hmac-sha256": sig, "Content-Type": "application/json"}


def kuaidi100_push(history: Sequence[ScanEvent], salt: str) -> tuple[bytes, dict[str, str]]:
    """A signed Kuaidi100-style subscription push (``data`` newest first, China local time, no offset)."""

    data = []
    for ev in reversed(pushed(history)):
        state = KUAIDI100_STATE[ev.event_type]
        assert state is not None  # pushed() keeps the carrier's scans only
        t = _local(ev.event_time, with_offset=False).replace("T", " ")
        data.append({"context": state[1].format(node=ev.node_id), "time": t, "ftime": t,
                     "areaCode": None, "areaName": ev.region, "statusCode": state[0]})  # fmt: skip
    last = history[-1]
    param = json.dumps(
        {"status": "polling", "message": "", "lastResult": {"nu": last.waybill_id, "com": last.carrier_id,
                                                             "state": "0", "status": "200", "data": data}},
        ensure_ascii=False,
    )  # fmt: skip
    sign = hashlib.md5((param + salt).encode()).hexdigest().upper()
    return urlencode({"param": param, "sign": sign}).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
