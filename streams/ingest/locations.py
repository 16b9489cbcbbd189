"""Raw feed places and local times, made stable: node ids, regions, UTC, event ids.

Tracking feeds name places in free text ("Shenzhen Bao'an Hub", "【深圳转运中心】",
"LOS ANGELES, CA 90001, US") with optional city, postcode, admin-area code
and country. The detectors key their baselines by node, so the same place
must always give the same node id, whichever feed or resend it came from:

* each part is normalised: Unicode NFKC, case-folded, the 【】 brackets and
  punctuation turned into spaces, runs of whitespace collapsed;
* the node id is ``LOC-<COUNTRY>-<AREA>-<h>``: the upper-cased country (``XX``
  when unknown), the admin-area code, else the postcode, else the city
  (``X`` when none; non-alphanumerics dropped, at most 16 characters), and
  ``h`` = the first 10 hex digits of BLAKE2b over the normalised
  ``country|admin_area|postcode|city|facility`` joined with ``|``;
* the region is ``<COUNTRY>-<ADMIN_AREA>`` (the province or state), else
  ``<COUNTRY>-<CITY>``, else ``<COUNTRY>``, else ``unknown``.

Times: feeds stamp a checkpoint in the local time of the place, with an
offset or without. :func:`to_utc_ms` returns the UTC instant and how it was
obtained (``offset`` given, ``zone`` inferred from the country/area, or
``assumed`` UTC). Event ids hash the waybill, the UTC time, the normalised
location and the feed's status code, so a resent history gives the same ids.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from logiwatch.detectors.model import EventType, NodeType

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
_ALNUM = re.compile(r"[^0-9A-Z]+")

#: Where a scan type happens when the feed does not say.
NODE_TYPE_OF: dict[EventType, NodeType] = {
    EventType.ORDER_PAID: NodeType.MERCHANT,
    EventType.DISPATCHED: NodeType.MERCHANT,
    EventType.PICKED_UP: NodeType.OUTLET,
    EventType.HUB_ARRIVED: NodeType.HUB,
    EventType.HUB_DEPARTED: NodeType.HUB,
    EventType.OUT_FOR_DELIVERY: NodeType.STATION,
    EventType.DELIVERED: NodeType.CUSTOMER,
    EventType.DELIVERY_FAILED: NodeType.CUSTOMER,
    EventType.EXCEPTION: NodeType.HUB,
    EventType.RETURNED: NodeType.MERCHANT,
}

#: Countries with one civil time zone (ISO 3166 alpha-2 and alpha-3), for offset-less stamps.
_ZONE_OF_COUNTRY: dict[str, str] = {
    "CN": "Asia/Shanghai", "CHN": "Asia/Shanghai",
    "HK": "Asia/Hong_Kong", "HKG": "Asia/Hong_Kong",
    "TW": "Asia/Taipei", "TWN": "Asia/Taipei",
    "JP": "Asia/Tokyo", "JPN": "Asia/Tokyo",
    "KR": "Asia/Seoul", "KOR": "Asia/Seoul",
    "SG": "Asia/Singapore", "SGP": "Asia/Singapore",
    "IN": "Asia/Kolkata", "IND": "Asia/Kolkata",
    "GB": "Europe/London", "GBR": "Europe/London",
    "DE": "Europe/Berlin", "DEU": "Europe/Berlin",
    "FR": "Europe/Paris", "FRA": "Europe/Paris",
    "NL": "Europe/Amsterdam", "NLD": "Europe/Amsterdam",
    "IT": "Europe/Rome", "ITA": "Europe/Rome",
    "ES": "Europe/Madrid", "ESP": "Europe/Madrid",
    "PL": "Europe/Warsaw", "POL": "Europe/Warsaw",
}  # fmt: skip

#: US states by postal code -> zone (the state's most populous zone), for offset-less US stamps.
_ZONE_OF_US_STATE: dict[str, str] = {
    **dict.fromkeys(["CA", "WA", "OR", "NV"], "America/Los_Angeles"),
    **dict.fromkeys(["AZ"], "America/Phoenix"),
    **dict.fromkeys(["CO", "UT", "NM", "MT", "WY", "ID"], "America/Denver"),
    **dict.fromkeys(
        ["TX", "IL", "MN", "WI", "MO", "IA", "LA", "OK", "KS", "NE", "AR", "MS", "AL", "TN", "SD", "ND"],
        "America/Chicago",
    ),
    **dict.fromkeys(
        ["NY", "NJ", "PA", "MA", "FL", "GA", "NC", "SC", "VA", "MD", "OH", "MI", "CT", "DC", "IN", "KY"],
        "America/New_York",
    ),
}

ISO3_TO_ISO2: dict[str, str] = {
    "CHN": "CN", "HKG": "HK", "TWN": "TW", "JPN": "JP", "KOR": "KR", "SGP": "SG", "IND": "IN",
    "GBR": "GB", "DEU": "DE", "FRA": "FR", "NLD": "NL", "ITA": "IT", "ESP": "ES", "POL": "PL",
    "USA": "US", "CAN": "CA", "AUS": "AU", "BRA": "BR", "MEX": "MX",
}  # fmt: skip


def norm(text: str | None) -> str:
    """Case-folded NFKC text with punctuation and brackets as single spaces.

    >>> norm("  【深圳 转运中心】 ")
    '深圳 转运中心'
    >>> norm("Los Angeles,  CA")
    'los angeles ca'
    """

    if not text:
        return ""
    return " ".join(_PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def country_code(country: str | None) -> str:
    """ISO alpha-2 for a 2- or 3-letter code (upper-cased), '' when none."""

    if not country:
        return ""
    c = country.strip().upper()
    return ISO3_TO_ISO2.get(c, c)


def location_key(
    *,
    country: str | None = None,
    admin_area: str | None = None,
    postcode: str | None = None,
    city: str | None = None,
    location: str | None = None,
) -> str:
    """The normalised ``country|admin_area|postcode|city|facility`` a node id hashes."""

    return "|".join(
        (country_code(country).lower(), norm(admin_area), norm(postcode), norm(city), norm(location))
    )


def location_node_id(
    *,
    country: str | None = None,
    admin_area: str | None = None,
    postcode: str | None = None,
    city: str | None = None,
    location: str | None = None,
) -> str:
    """A stable node id for a raw location (see the module docstring).

    >>> location_node_id(country="CN", admin_area="440300", location="【深圳转运中心】")
    'LOC-CN-440300-89b4b800a1'
    >>> location_node_id(country="chn", admin_area="440300", location="深圳转运中心")
    'LOC-CN-440300-89b4b800a1'
    """

    key = location_key(country=country, admin_area=admin_area, postcode=postcode, city=city, location=location)
    digest = hashlib.blake2b(key.encode(), digest_size=5).hexdigest()
    cc = country_code(country) or "XX"
    area_raw = admin_area or postcode or city or ""
    area = _ALNUM.sub("", unicodedata.normalize("NFKC", area_raw).upper())[:16] or "X"
    return f"LOC-{_ALNUM.sub('', cc)[:3] or 'XX'}-{area}-{digest}"


def location_region(
    *, country: str | None = None, admin_area: str | None = None, city: str | None = None
) -> str:
    """The region of a raw location: country and admin area, else city, else country.

    >>> location_region(country="CN", admin_area="440300")
    'CN-440300'
    >>> location_region(country="USA", city="Los Angeles")
    'US-LOS ANGELES'
    >>> location_region()
    'unknown'
    """

    cc = country_code(country)
    part = (admin_area or "").strip().upper() or norm(city).upper()
    if cc and part:
        return f"{cc}-{part}"[:64]
    return (cc or (f"XX-{part}" if part else "unknown"))[:64]


def zone_for(country: str | None, admin_area: str | None = None) -> str | None:
    """The IANA zone of a place when the country (and for the US the state) decides it."""

    cc = country_code(country)
    if cc == "US" and admin_area:
        state = admin_area.strip().upper()
        state = state[3:] if state.startswith("US-") else state
        return _ZONE_OF_US_STATE.get(state)
    return _ZONE_OF_COUNTRY.get(cc)


class TimeError(ValueError):
    """A feed's time stamp that cannot be read."""


def to_utc_ms(stamp: str, *, country: str | None = None, admin_area: str | None = None) -> tuple[int, str]:
    """A feed's ISO-8601-like local stamp as UTC epoch ms, with how it was known.

    ``offset``: the stamp carried one (``Z``, ``+08:00``, ``-0500``);
    ``zone``: no offset, the zone follows from the country (or US state);
    ``assumed``: neither, taken as UTC.

    >>> to_utc_ms("2026-05-01T10:00:00+08:00")
    (1777600800000, 'offset')
    >>> to_utc_ms("2026-05-01 10:00:00", country="CN")
    (1777600800000, 'zone')
    >>> to_utc_ms("2026-05-01T02:00:00")
    (1777600800000, 'assumed')
    """

    text = stamp.strip()
    if not text:
        raise TimeError("empty time stamp")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        raise TimeError(f"unreadable time stamp {stamp!r}") from None
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        basis = "offset"
    else:
        zone = zone_for(country, admin_area)
        if zone is not None:
            dt, basis = dt.replace(tzinfo=ZoneInfo(zone)), "zone"
        else:
            dt, basis = dt.replace(tzinfo=UTC), "assumed"
    offset = dt.utcoffset() or timedelta(0)
    if abs(offset) > timedelta(hours=14):
        raise TimeError(f"time stamp {stamp!r} has an impossible offset")
    return int(dt.timestamp() * 1000), basis


def event_id(feed: str, waybill: str, utc_ms: int, location: str, status: str) -> str:
    """The stable id of one feed checkpoint: a resend of the same history gives the same ids.

    >>> event_id("aftership", "WB1", 0, "cn||||shenzhen", "InTransit_001") == event_id(
    ...     "aftership", "WB1", 0, "cn||||shenzhen", "InTransit_001")
    True
    """

    raw = f"{waybill}|{utc_ms}|{location}|{status}".encode()
    return f"{feed[:3]}-{hashlib.blake2b(raw, digest_size=12).hexdigest()}"
