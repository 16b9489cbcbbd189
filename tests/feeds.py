"""Feed push fixtures, written here from the vendors' public documentation of their formats.

Each builder returns the raw body and the headers a vendor would send, signed
with that vendor's scheme. ``history`` is newest-last (AfterShip's order) and
the builders reorder it as the vendor does (17TRACK and Kuaidi100 list the
newest first).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from urllib.parse import urlencode

AFTERSHIP_SECRET = "as-secret-0123"
SEVENTEEN_KEY = "17-key-4567"
KUAIDI_SALT = "kd-salt-89"

# (local time, tag, subtag, city, state, zip, country_iso3, location, message)
AS_FIRST = [
    ("2026-09-01T09:00:00+08:00", "InfoReceived", "InfoReceived_001", "Shenzhen", "Guangdong", "518000", "CHN", "Shenzhen", "Electronic info received"),
    ("2026-09-01T18:30:00+08:00", "InTransit", "InTransit_002", "Shenzhen", "Guangdong", "518000", "CHN", "Bao'an outlet", "Picked up"),
]
AS_MORE = [
    ("2026-09-02T02:10:00", "InTransit", "InTransit_003", "Shenzhen", "Guangdong", "518000", "CHN", "Shenzhen hub", "Arrival scan"),  # no offset
    ("2026-09-02T06:00:00+08:00", "InTransit", "InTransit_007", "Shenzhen", "Guangdong", "518000", "CHN", "Shenzhen hub", "Departure scan"),
]
AS_EXCEPTION = [("2026-09-03T11:00:00+08:00", "Exception", "Exception_013", "Wuhan", "Hubei", "430000", "CHN", "Wuhan hub", "Shipment lost")]
AS_DELIVERED = [("2026-09-04T15:45:00+08:00", "Delivered", "Delivered_001", "Beijing", "Beijing", "100000", "CHN", "Chaoyang", "Delivered")]


def aftership(waybill: str, checkpoints: Sequence[tuple[str, ...]], *, version: str = "2025-07", ts: float | None = None,
              secret: str = AFTERSHIP_SECRET, slug: str = "sf-express") -> tuple[bytes, dict[str, str]]:
    cps = []
    for when, tag, subtag, city, state, zip_, iso3, loc, message in checkpoints:
        cp = {"checkpoint_time": when, "tag": tag, "subtag": subtag, "city": city, "state": state,
              "location": loc, "message": message, "slug": slug}
        if version >= "2026-01":
            cp["postal_code"], cp["country_region"] = zip_, iso3
        else:
            cp["zip"], cp["country_iso3"] = zip_, iso3
        cps.append(cp)
    body = json.dumps({
        "event": "tracking_update", "event_id": f"evt-{waybill}-{len(cps)}",
        "ts": int(ts if ts is not None else time.time()),
        "msg": {"id": f"t-{waybill}", "tracking_number": waybill, "slug": slug,
                "tag": cps[-1]["tag"] if cps else "Pending", "checkpoints": cps},
    }, ensure_ascii=False).encode()
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return body, {"aftership-hmac-sha256": sig, "Content-Type": "application/json", "aftership-webhook-version": version}


# (time_iso, time_utc or None, sub_status, description, location, country, state, city, postal_code)
ST_FIRST = [
    ("2026-09-01T10:00:00+08:00", "2026-09-01T02:00:00Z", "InfoReceived", "Order info received", "Guangzhou", "CN", "Guangdong", "Guangzhou", "510000"),
    ("2026-09-01T20:00:00+08:00", None, "InTransit_PickedUp", "Picked up", "Guangzhou", "CN", "Guangdong", "Guangzhou", "510000"),
]
ST_MORE = [
    ("2026-09-02T04:00:00", None, "InTransit_Arrival", "Arrived at sorting center", "Guangzhou hub", "CN", "Guangdong", "Guangzhou", "510000"),  # no offset, no UTC
    ("2026-09-02T09:00:00+08:00", "2026-09-02T01:00:00Z", "InTransit_Departure", "Departed sorting center", "Guangzhou hub", "CN", "Guangdong", "Guangzhou", "510000"),
]
ST_EXCEPTION = [("2026-09-03T12:00:00+08:00", None, "Exception_Delayed", "Delayed by weather", "Changsha hub", "CN", "Hunan", "Changsha", "410000")]
ST_DELIVERED = [("2026-09-04T16:00:00+08:00", None, "Delivered_Other", "Delivered", "Shanghai", "CN", "Shanghai", "Shanghai", "200000")]


def seventeentrack(waybill: str, events: Sequence[tuple[object, ...]], *, key: str = SEVENTEEN_KEY,
                   stopped: bool = False) -> tuple[bytes, dict[str, str]]:
    evs = [
        {"time_iso": ti, "time_utc": tu, "sub_status": sub, "description": desc, "location": loc,
         "address": {"country": c, "state": st, "city": city, "street": None, "postal_code": pc}}
        for ti, tu, sub, desc, loc, c, st, city, pc in events
    ][::-1]
    latest = evs[0]["sub_status"] if evs else "NotFound_Other"
    body = json.dumps({
        "event": "TRACKING_STOPPED" if stopped else "TRACKING_UPDATED",
        "data": {"number": waybill, "carrier": 3011, "param": None, "tag": None,
                 "track_info": {"latest_status": {"status": str(latest).split("_")[0], "sub_status": latest},
                                "tracking": {"providers_hash": 1, "providers": [{"provider": {"key": 3011, "name": "China Post"},
                                                                                 "events": evs}]}}},
    }, ensure_ascii=False).encode()
    sign = hashlib.sha256(body + b"/" + key.encode()).hexdigest()
    return body, {"sign": sign, "Content-Type": "application/json"}


# (ftime China local, context, areaCode, areaName, statusCode or None)
KD_FIRST = [
    ("2026-09-01 09:30:00", "【杭州西湖营业部】已揽收", "330106000000", "浙江省,杭州市,西湖区", "103"),
    ("2026-09-01 21:00:00", "快件已发往【杭州转运中心】", "330100000000", "浙江省,杭州市", "1002"),
]
KD_MORE = [
    ("2026-09-02 03:00:00", "快件已到达【南京转运中心】", "320100000000", "江苏省,南京市", None),
    ("2026-09-02 08:00:00", "快件已从【南京转运中心】发出，发往【北京转运中心】", "320100000000", "江苏省,南京市", "1002"),
]
KD_EXCEPTION = [("2026-09-03 10:00:00", "【北京转运中心】快件疑难，请联系客服", "110000000000", "北京市", "201")]
KD_DELIVERED = [("2026-09-04 17:00:00", "【北京朝阳营业部】已签收，签收人：本人", "110105000000", "北京市,朝阳区", "301")]


def kuaidi100(waybill: str, items: Sequence[tuple[object, ...]], *, state: str = "0", status: str = "polling",
              salt: str = KUAIDI_SALT) -> tuple[bytes, dict[str, str]]:
    data = []
    for ftime, context, code, name, status_code in list(items)[::-1]:
        item = {"context": context, "time": ftime, "ftime": ftime, "areaCode": code, "areaName": name}
        if status_code is not None:
            item["statusCode"] = status_code
        data.append(item)
    param = json.dumps({"status": status, "billstatus": "got", "message": "", "autoCheck": "0",
                        "lastResult": {"message": "ok", "nu": waybill, "ischeck": "0", "condition": "F00",
                                       "com": "zhongtong", "status": "200", "state": state, "data": data}},
                       ensure_ascii=False)
    sign = hashlib.md5((param + salt).encode()).hexdigest().upper()
    return urlencode({"param": param, "sign": sign}).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
