"""Webhook payloads, Standard Webhooks signing, response classification,
retry schedule and the SSRF guard.

Everything here but :func:`post` is pure. A notification is rendered in one
of three formats (generic JSON, Alertmanager webhook v4, DingTalk-style
markdown robot), signed with the receiver's secret as Standard Webhooks
prescribes (``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``)
and posted without following redirects, with bounded timeouts, to an
address checked at connect time. :func:`classify` is the one place that
decides what a response means.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import json
import random
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from logiwatch.alerts.model import AlertRecord, NotificationEvent, PayloadFormat, Receiver
from logiwatch.detectors.codec import to_builtins
from logiwatch.detectors.model import AnomalyType

#: Receivers reject signatures whose timestamp is further than this from their clock.
REPLAY_WINDOW_S = 300
SCHEMA_ID = "logiwatch.webhook/v1"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended"


# --------------------------------------------------------------------------- signing


def secret_bytes(secret: str) -> bytes:
    """Key bytes: ``whsec_<base64>`` as in Standard Webhooks, else the UTF-8 text.

    The one decoder of secrets: the routes file is checked with it at load
    time, so a bad ``whsec_`` value is a start-up error, never a silent
    fallback to signing with the text.

    >>> len(secret_bytes("whsec_" + "A" * 32))
    24
    >>> secret_bytes("whsec_not base64!")
    Traceback (most recent call last):
    ValueError: a whsec_ secret must be base64 after the prefix
    """

    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""

    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, body: bytes, now_s: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if now_s is None else now_s
    return {
        "content-type": "application/json",
        "user-agent": "logiwatch-alerts/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, webhook_id, ts, body),
    }


def verify(secret: str, headers: dict[str, str], body: bytes, now_s: int | None = None) -> bool:
    """Receiver-side check (used by the docs' example and the demo receiver)."""

    try:
        wid, ts = headers["webhook-id"], int(headers["webhook-timestamp"])
        sigs = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    now = int(time.time()) if now_s is None else now_s
    if abs(now - ts) > REPLAY_WINDOW_S:
        return False
    expected = sign(secret, wid, ts, body)
    return any(hmac.compare_digest(expected, s) for s in sigs)


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Rendering:
    """What a payload needs besides the alert record."""

    webhook_id: str
    receiver: str
    event: NotificationEvent
    public_url: str
    parcel_count: int = 0
    sample_waybills: tuple[str, ...] = ()


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _incident(rec: AlertRecord, r: Rendering) -> dict[str, Any] | None:
    a = rec.alert
    if a.alert_type != AnomalyType.HUB_INCIDENT:
        return None
    return {
        "incident_id": a.alert_id,
        "node_id": a.node_id,
        "window_start": a.window_start,
        "window_end": a.window_end,
        "parcel_count": max(r.parcel_count, len(a.affected_waybills)),
        "sample_waybills": list(r.sample_waybills or a.affected_waybills[:20]),
        "parcels_url": f"{r.public_url}/api/alerts?incident={a.alert_id}",
    }


def generic_payload(rec: AlertRecord, r: Rendering) -> dict[str, Any]:
    a = rec.alert
    alert = to_builtins(a)
    assert isinstance(alert, dict)
    alert.pop("affected_waybills", None)  # bounded: the incident block carries a sample and a link
    alert["state"] = rec.state.value
    return {
        "schema": SCHEMA_ID,
        "webhook_id": r.webhook_id,
        "event": f"alert.{r.event.value}",
        "receiver": r.receiver,
        "alert": alert,
        "incident": _incident(rec, r),
        "links": {"alert": f"{r.public_url}/api/alerts/{a.alert_id}", "board": f"{r.public_url}/"},
    }


def alertmanager_payload(rec: AlertRecord, r: Rendering) -> dict[str, Any]:
    """Alertmanager webhook payload version 4 with one alert (the group is the alert or incident)."""

    a = rec.alert
    status = "resolved" if r.event == NotificationEvent.RESOLVED else "firing"
    labels = {
        "alertname": a.alert_type.value,
        "severity": a.severity.value,
        **{
            k: v
            for k, v in {
                "waybill_id": a.waybill_id,
                "merchant_id": a.merchant_id,
                "carrier_id": a.carrier_id,
                "node_id": a.node_id,
                "region": a.region,
                "incident_id": a.incident_id,
            }.items()
            if v
        },
    }
    annotations = {"summary": a.summary, "description": f"logiwatch {r.event.value}: {a.summary}"}
    inc = _incident(rec, r)
    if inc:
        annotations["parcel_count"] = str(inc["parcel_count"])
        annotations["parcels_url"] = inc["parcels_url"]
    group_labels = {"alertname": a.alert_type.value, "alert_id": a.alert_id}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alert_id="{a.alert_id}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": r.receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": r.public_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _iso(a.onset_at or rec.alert.detected_at),
                "endsAt": _iso(a.detected_at) if status == "resolved" else _ZERO_TIME,
                "generatorURL": f"{r.public_url}/api/alerts/{a.alert_id}",
                "fingerprint": a.alert_id[:16],
            }
        ],
    }


_HEADS = {NotificationEvent.FIRING: "🔴", NotificationEvent.RESOLVED: "✅", NotificationEvent.ESCALATED: "🚨"}


def dingtalk_payload(rec: AlertRecord, r: Rendering) -> dict[str, Any]:
    """A chat-robot markdown message (DingTalk shape; Feishu/WeCom robots accept the same idea)."""

    a = rec.alert
    head = _HEADS[r.event]
    lines = [f"### {head} {a.alert_type.value} ({a.severity.value}) {r.event.value}", "", a.summary, ""]
    for label, value in (
        ("waybill", a.waybill_id),
        ("merchant", a.merchant_id),
        ("carrier", a.carrier_id),
        ("node", a.node_id),
        ("region", a.region),
    ):
        if value:
            lines.append(f"- **{label}**: {value}")
    inc = _incident(rec, r)
    if inc:
        lines.append(f"- **parcels affected**: {inc['parcel_count']} ([list]({inc['parcels_url']}))")
    lines.append(f"\n[open the board]({r.public_url}/)")
    return {"msgtype": "markdown", "markdown": {"title": f"{a.alert_type.value} {r.event.value}", "text": "\n".join(lines)}}


_RENDERERS = {
    PayloadFormat.GENERIC: generic_payload,
    PayloadFormat.ALERTMANAGER: alertmanager_payload,
    PayloadFormat.DINGTALK: dingtalk_payload,
}


def render(fmt: PayloadFormat, rec: AlertRecord, r: Rendering) -> bytes:
    return json.dumps(_RENDERERS[fmt](rec, r), ensure_ascii=False, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- responses and retries


class DeliveryAction(enum.StrEnum):
    """What to do after one attempt (also the ``outcome`` label of the attempts metric)."""

    OK = "ok"
    RETRY = "retry"  # 408, 429, 5xx, network trouble: again after the backoff
    DISABLE = "disable"  # 410 Gone: stop sending to this receiver until redriven
    GIVE_UP = "give_up"  # other answers: dead-letter this notification


@dataclass(frozen=True)
class Outcome:
    """The classified result of one attempt."""

    action: DeliveryAction
    status: int | None = None
    retry_after_s: float | None = None
    error: str | None = None


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or bad."""

    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def classify(status: int, retry_after: str | None = None, now_s: float | None = None) -> Outcome:
    """The one rule for responses: 2xx ok; 408/429/5xx retry (honour Retry-After);
    410 disable the endpoint; anything else (3xx, other 4xx) give up and record."""

    if 200 <= status < 300:
        return Outcome(DeliveryAction.OK, status)
    if status in (408, 429) or 500 <= status < 600:
        return Outcome(DeliveryAction.RETRY, status, parse_retry_after(retry_after, now_s), f"HTTP {status}")
    if status == 410:
        return Outcome(DeliveryAction.DISABLE, status, None, "HTTP 410 Gone: endpoint disabled")
    if 300 <= status < 400:
        return Outcome(DeliveryAction.GIVE_UP, status, None, f"HTTP {status}: redirects are not followed")
    return Outcome(DeliveryAction.GIVE_UP, status, None, f"HTTP {status}")


#: Upper bound on a receiver's Retry-After, so one header cannot park an alert for weeks.
MAX_RETRY_AFTER_S = 86_400.0


def next_delay_s(
    failed_attempts: int,
    schedule: tuple[float, ...],
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Delay before the next attempt after ``failed_attempts`` failures, or None: dead-letter.

    The schedule's step is jittered by +-20% so that many alerts failing
    together do not come back together; a Retry-After longer than the step wins.
    """

    if failed_attempts < 1 or failed_attempts > len(schedule):
        return None
    base = schedule[failed_attempts - 1]
    jitter = (rng or random).uniform(0.8, 1.2)
    delay = base * jitter
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


# --------------------------------------------------------------------------- SSRF guard


_BLOCKED_NETS = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "198.18.0.0/15",  # benchmarking nets, used inside some clouds
        "::/128",
        "::1/128",
        # IPv6 forms that carry an IPv4 address a gateway may forward to (NAT64,
        # 6to4, deprecated IPv4-compatible): treated as internal, like the IPv4 ranges.
        "::/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
]


def blocked_reason(address: str) -> str | None:
    """Why ``address`` may not be a webhook target (loopback, private, link-local/metadata...), or None."""

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"not an IP address: {address}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for net in _BLOCKED_NETS:
        if ip.version == net.version and ip in net:
            return f"address {ip} is in blocked range {net}"
    return None


class BlockedAddress(OSError):
    """Raised at connect time when a receiver resolves to a blocked address."""


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default, then refuses blocked addresses.

    The check runs on the addresses the connection will actually use, at
    connect time, so DNS rebinding after start-up cannot slip past it.
    """

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for res in results:
            reason = blocked_reason(res["host"])
            if reason:
                raise BlockedAddress(f"{host} resolves to a blocked address ({reason})")
        return results

    async def close(self) -> None:
        await self._inner.close()


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment (robot URLs carry tokens there)."""

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, receiver: Receiver) -> str:
    """Remove the receiver's secret and URL secrets from an error string."""

    out = text.replace(receiver.url, redact_url(receiver.url))
    for secret in {receiver.secret, receiver.secret.removeprefix("whsec_")}:
        if secret:
            out = out.replace(secret, "[redacted]")
    query = urlsplit(receiver.url).query
    if query:
        out = out.replace(query, "[redacted]")
    return out


def make_session(allow_private: bool) -> aiohttp.ClientSession:
    """A session whose connector checks every resolved address (unless private targets are allowed)."""

    connector = aiohttp.TCPConnector(
        resolver=None if allow_private else GuardedResolver(),
        use_dns_cache=False,
        limit=8,
    )
    return aiohttp.ClientSession(connector=connector)


def _find_blocked(exc: BaseException) -> BlockedAddress | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, BlockedAddress):
            return cur
        nxt = getattr(cur, "os_error", None) or cur.__cause__ or cur.__context__
        cur = nxt if isinstance(nxt, BaseException) else None
    return None


async def post(session: aiohttp.ClientSession, receiver: Receiver, webhook_id: str, body: bytes) -> Outcome:
    """One signed attempt; never raises for network trouble (it becomes an Outcome)."""

    if len(body) > receiver.max_payload_bytes:
        return Outcome(DeliveryAction.GIVE_UP, None, None, f"payload of {len(body)} bytes exceeds max_payload_bytes")
    host = urlsplit(receiver.url).hostname or ""
    if not receiver.allow_private_networks:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass  # a name: checked by the resolver at connect time
        else:
            reason = blocked_reason(host.strip("[]"))
            if reason:  # aiohttp skips the resolver for IP literals
                return Outcome(DeliveryAction.GIVE_UP, None, None, f"blocked target: {reason}")
    # an Alertmanager receiver has no secret (its API checks none): the same headers, unsigned
    headers = signed_headers(receiver.secret, webhook_id, body) if receiver.secret else {"content-type": "application/json", "webhook-id": webhook_id}
    timeout = aiohttp.ClientTimeout(total=receiver.timeout_s, sock_connect=receiver.connect_timeout_s)
    try:
        async with session.post(receiver.url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            await resp.content.read(1024)  # read a little, trust none of it
            return classify(resp.status, resp.headers.get("Retry-After"))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every network failure is a retryable outcome, never a crash
        blocked = _find_blocked(exc)
        if blocked is not None:
            return Outcome(DeliveryAction.GIVE_UP, None, None, redact(f"blocked target: {blocked}", receiver))
        kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        return Outcome(DeliveryAction.RETRY, None, None, redact(f"{kind}: {exc}", receiver))
