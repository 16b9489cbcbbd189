"""Kuaidi100 (快递100) subscription pushes -> contract-v2 scans.

A form POST (``application/x-www-form-urlencoded``) with ``param`` (a JSON
string) and ``sign`` = upper-case hex MD5 of ``param + salt`` (Kuaidi100 signs
no timestamp: no replay window; a replay only resends known scans). ``param``:
``status`` (``polling``, ``shutdown``, ``abort``), ``lastResult{nu, com, state,
data[]}``; ``data`` is newest first, each ``{context, ftime, areaCode,
areaName, status?, statusCode?}`` (the last two with ``resultv2``); ``ftime`` is
China local time without an offset (zone Asia/Shanghai, basis ``zone``). The
facility is the text inside 【】 in ``context`` when there is one. The answer
Kuaidi100 expects is ``{"result": true, "returnCode": "200", "message": ...}``
(``false`` / ``"500"`` makes it push again later).

Mapping (``statusCode`` of an item, else ``lastResult.state`` for the newest
item, else keywords of ``context``; an exception keeps its code in ``detail``):

| Kuaidi100 state | event type |
|---|---|
| 1 揽收 collected (1xx sub-states) | PICKED_UP |
| 0 在途 in transit (10xx), 8 / 10-13 清关 customs | HUB_ARRIVED (HUB_DEPARTED when the text says 发往/离开/发出) |
| 7 转投 transferred | HUB_DEPARTED |
| 5 派件 dispatching (5xx) | OUT_FOR_DELIVERY |
| 3 签收 signed (3xx) | DELIVERED |
| 4 退签 returned-signed (4xx) | RETURNED |
| 14 拒签 refused, 203 拒收 | DELIVERY_FAILED, ``detail`` = code |
| 2 疑难 problem (2xx), 6 退回 returning (6xx) | EXCEPTION, ``detail`` = code |
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import msgspec

from logiwatch.detectors.model import EventType
from logiwatch.streams.ingest.feeds import FeedError, Parsed, make_scan, text

_FACILITY = re.compile(r"【([^】]{1,120})】")
_DEPARTED = ("发往", "离开", "发出", "已发车")
_ARRIVED = ("到达", "已到", "进港")

_STATE: dict[int, EventType] = {
    0: EventType.HUB_ARRIVED,
    1: EventType.PICKED_UP,
    2: EventType.EXCEPTION,
    3: EventType.DELIVERED,
    4: EventType.RETURNED,
    5: EventType.OUT_FOR_DELIVERY,
    6: EventType.EXCEPTION,
    7: EventType.HUB_DEPARTED,
    8: EventType.HUB_ARRIVED,
    10: EventType.HUB_ARRIVED,
    11: EventType.HUB_ARRIVED,
    12: EventType.HUB_ARRIVED,
    13: EventType.HUB_ARRIVED,
    14: EventType.DELIVERY_FAILED,
}


def top_state(code: int) -> int:
    """The main state of a (possibly 3- or 4-digit resultv2) Kuaidi100 state code.

    >>> [top_state(c) for c in (0, 14, 101, 1002, 203, 501, 301)]
    [0, 14, 1, 0, 2, 5, 3]
    """

    if code < 100:
        return code
    if code >= 1000:
        return code // 1000 - 1 if code < 2000 else code // 100  # 10xx: in transit
    return code // 100


def event_type_of(code: int | None, context: str) -> tuple[EventType, str | None]:
    """(event type, detail) of a Kuaidi100 state code (None: from the text).

    >>> event_type_of(2, "快件疑难")
    (<EventType.EXCEPTION: 'EXCEPTION'>, 'kuaidi100:2')
    >>> event_type_of(None, "快件已发往【深圳转运中心】")[0]
    <EventType.HUB_DEPARTED: 'HUB_DEPARTED'>
    """

    if code is None:
        if "签收" in context:
            return EventType.DELIVERED, None
        if "派件" in context or "派送" in context:
            return EventType.OUT_FOR_DELIVERY, None
        if "揽收" in context or "揽件" in context:
            return EventType.PICKED_UP, None
        if any(k in context for k in _DEPARTED):
            return EventType.HUB_DEPARTED, None
        return EventType.HUB_ARRIVED, None
    if code == 203:
        return EventType.DELIVERY_FAILED, "kuaidi100:203"
    state = top_state(code)
    etype = _STATE.get(state)
    if etype is None:
        raise FeedError("bad_payload", f"unknown Kuaidi100 state {code}")
    if etype is EventType.HUB_ARRIVED and any(k in context for k in _DEPARTED):
        etype = EventType.HUB_DEPARTED
    if etype in (EventType.EXCEPTION, EventType.DELIVERY_FAILED, EventType.RETURNED):
        return etype, f"kuaidi100:{code}"
    return etype, None


def _code(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        raise FeedError("bad_payload", f"state {value!r} is not a number") from None


class Kuaidi100Adapter:
    name = "kuaidi100"

    def __init__(self, salt: str) -> None:
        self.salt = salt

    def sign(self, param: str) -> str:
        return hashlib.md5((param + self.salt).encode()).hexdigest().upper()

    @staticmethod
    def _form(body: bytes) -> tuple[str, str]:
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise FeedError("bad_payload", "the form is not UTF-8") from None
        param = form.get("param", [""])[0]
        sign = form.get("sign", [""])[0]
        return param, sign

    def verify(self, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
        param, sign = self._form(body)
        if not param or not sign or not hmac.compare_digest(sign.upper().encode(), self.sign(param).encode()):
            raise FeedError("bad_signature", "sign does not match MD5(param + salt)")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Parsed:
        param, _ = self._form(body)
        try:
            doc = msgspec.json.decode(param)
        except msgspec.DecodeError as exc:
            raise FeedError("bad_json", f"param: {exc}") from None
        if not isinstance(doc, dict):
            raise FeedError("bad_payload", "param is not an object")
        kind = text(doc, "status") or "polling"
        out = Parsed(kind=kind)
        last: dict[str, Any] | None = doc.get("lastResult")
        if last is None:
            return out  # abort / shutdown without a result: nothing to scan
        if not isinstance(last, dict):
            raise FeedError("bad_payload", "lastResult is not an object")
        waybill = text(last, "nu")
        if waybill is None:
            raise FeedError("bad_payload", "lastResult.nu is missing")
        carrier = text(last, "com")
        state = _code(last.get("state"))
        items = last.get("data") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise FeedError("bad_payload", "lastResult.data is not a list of objects")
        for i, item in enumerate(items):
            context = text(item, "context") or ""
            own = _code(item.get("statusCode"))
            code = own if own is not None else (state if i == 0 else None)
            etype, detail = event_type_of(code, context)
            facility = _FACILITY.search(context)
            area_code = text(item, "areaCode")
            area_name = text(item, "areaName")
            province = f"CN-{area_code[:2]}0000" if area_code and area_code[:2].isdigit() else None
            out.scans.append(
                make_scan(
                    feed=self.name,
                    waybill=waybill[:128],
                    stamp=text(item, "ftime") or text(item, "time"),
                    event_type=etype,
                    status=str(own) if own is not None else "",
                    # the text identifies a checkpoint without a code of its own
                    id_text=None if own is not None else context,
                    carrier=carrier,
                    location=facility.group(1) if facility else (area_name or context[:80] or None),
                    city=area_name,
                    admin_area=area_code[:6] if area_code else None,
                    country="CN",
                    region=province,
                    detail=f"{detail} {context}"[:256] if detail else None,
                )
            )
        return out

    def reply(self, ok: bool, message: str) -> tuple[str, bytes]:
        body = {"result": ok, "returnCode": "200" if ok else "500", "message": message}
        return "application/json", msgspec.json.encode(body)
