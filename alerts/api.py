"""The HTTP API and the CS console (aiohttp, same process as the consumer).

Reads are open; mutating calls need ``Authorization: Bearer <alerts.api_token>``.
Every error is a JSON object ``{"error": "<one line>"}`` with a 4xx status
(5xx only for a real fault, still one line, never a traceback).

The console (``/``, static/console.*) is a single page over the JSON API; the
routes and their parameters are the OpenAPI 3.1 document at ``/api/openapi.json``
(:mod:`logiwatch.alerts.openapi`, checked against the router when the app is
built). Request bodies are bounded in size and nesting, path and query text in
length; times lie within 2000..2100; parser-level errors (over-long headers)
are JSON too (:class:`ApiRunner`).
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from logiwatch.alerts import console, console_events, openapi
from logiwatch.alerts.console_scans import ScanReader
from logiwatch.alerts.ledger import Ledger
from logiwatch.alerts.metrics import AlertMetrics
from logiwatch.alerts.model import AlertRecord, AlertState, Matcher, Silence
from logiwatch.alerts.pipeline import Pipeline
from logiwatch.alerts.store import QUEUE_FILTERS, QUEUE_SORTS, AlertStore, now_ms
from logiwatch.detectors.codec import to_builtins
from logiwatch.detectors.model import AnomalyType

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
MAX_BODY_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32
#: Times the API accepts (2000-01-01 .. 2100-01-01 UTC) and the longest silence (5 years).
MIN_TIME_MS, MAX_TIME_MS = 946_684_800_000, 4_102_444_800_000
MAX_SILENCE_MS = 5 * 366 * 86_400_000
_STATES = {s.value for s in AlertState}


@dataclass
class ApiContext:
    store: AlertStore
    pipeline: Pipeline
    ledger: Ledger
    metrics: AlertMetrics
    registry: CollectorRegistry
    token: str
    status: dict[str, Any] = field(default_factory=dict)
    #: the parcel page's scans, from the worker's state (None: not wired, the page says so)
    scans: ScanReader | None = None


CTX = web.AppKey("ctx", ApiContext)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


@web.middleware
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _json({"error": exc.message}, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _json({"error": exc.reason}, exc.status)
        for name in ("Allow", "Retry-After"):  # RFC 9110: a 405 lists the methods the resource allows
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except Exception as exc:  # one line to the caller; the stack goes to the log only
        log.exception("API %s %s failed", request.method, request.path)
        return _json({"error": f"internal error: {type(exc).__name__}"}, 500)


def _ctx(request: web.Request) -> ApiContext:
    return request.app[CTX]


def _require_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <alerts.api_token>'")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: a Latin-1 "Bearer tökén" holds
    # lone surrogates that a plain .encode() refuses; compare the bytes as they came in.
    sent = token.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(sent, _ctx(request).token.encode()):
        raise ApiError(401, "invalid bearer token")
    return "api"


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:  # json.loads recurses per nesting level; 16 KB can nest ~8,000 deep
        raise ApiError(400, f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise ApiError(400, f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, iteratively (no recursion on hostile input)."""

    deepest, stack = 0, [(value, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _text(raw: str, name: str, max_len: int = 128) -> str:
    """A path or query string value, bounded and encodable (lone surrogates are refused)."""

    if len(raw) > max_len:
        raise ApiError(400, f"{name} longer than {max_len} characters")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{name} is not valid UTF-8") from None
    return raw


def _record_json(rec: AlertRecord) -> dict[str, Any]:
    out = to_builtins(rec)
    assert isinstance(out, dict)
    alert = out["alert"]
    if len(alert.get("affected_waybills", [])) > 50:  # keep responses bounded; the list is a query away
        alert["affected_waybills"] = alert["affected_waybills"][:50]
        out["affected_truncated"] = True
    return out


def _int_param(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter {name} must be within {lo}..{hi}")
    return value


def _time_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_time_ms(raw)
    except ValueError as exc:
        raise ApiError(400, f"query parameter {name}: {exc}") from None


def parse_time_ms(raw: str) -> int:
    """Epoch ms from ISO 8601 with an offset (``Z`` allowed) or from digits (epoch ms)."""

    if raw.isascii() and raw.isdigit():
        ms = int(raw) if len(raw) <= 16 else MAX_TIME_MS + 1
    else:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {raw[:40]!r}") from None
        if dt.tzinfo is None:
            raise ValueError(f"time {raw[:40]!r} needs a UTC offset, e.g. 2026-11-11T00:00:00Z")
        try:
            ms = int(dt.timestamp() * 1000)
        except (OverflowError, ValueError):
            ms = MAX_TIME_MS + 1
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise ValueError(f"time {raw[:40]!r} is outside 2000-01-01..2100-01-01 UTC")
    return ms


#: Files under static/ the console may load (nothing else is served, nothing comes from outside).
_ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
OPENAPI = openapi.document()
#: Every page: scripts, styles, images and calls only from this service.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


async def console_page(request: web.Request) -> web.Response:
    return web.Response(
        body=(STATIC / "console.html").read_bytes(), content_type="text/html", charset="utf-8", headers={"Content-Security-Policy": _CSP}
    )


async def static_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise ApiError(404, f"no asset {name[:60]!r}")
    return web.Response(body=(STATIC / name).read_bytes(), content_type=_ASSETS[name], charset="utf-8")


async def openapi_json(request: web.Request) -> web.Response:
    return _json(OPENAPI)


async def healthz(request: web.Request) -> web.Response:
    await _ctx(request).store.r.ping()
    return _json({"status": "ok", **_ctx(request).status})


async def metrics(request: web.Request) -> web.Response:
    import asyncio

    body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, _ctx(request).registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def list_alerts(request: web.Request) -> web.Response:
    q = request.query
    state = q.get("state")
    if state is not None and state not in _STATES:
        raise ApiError(400, f"state must be one of {', '.join(sorted(_STATES))}")
    limit = _int_param(request, "limit", 200, 1, 5000)
    assert limit is not None
    alert_type, waybill, incident_id = (_text(q[n], f"query parameter {n}") if n in q else None for n in ("type", "waybill", "incident"))
    recs = await _ctx(request).store.query(state=state, alert_type=alert_type, waybill=waybill, incident=incident_id, limit=limit)
    return _json({"alerts": [_record_json(r) for r in recs], "count": len(recs)})


async def _get_or_404(request: web.Request) -> AlertRecord:
    aid = _text(request.match_info["alert_id"], "alert id")
    rec = await _ctx(request).store.get(aid)
    if rec is None:
        raise ApiError(404, f"no alert with id {aid!r}")
    return rec


async def get_alert(request: web.Request) -> web.Response:
    return _json(_record_json(await _get_or_404(request)))


async def _transition(request: web.Request, state: AlertState) -> web.Response:
    who = _require_token(request)
    body = await _body(request)
    by = body.get("by", who)
    if not isinstance(by, str) or not 0 < len(by) <= 64:
        raise ApiError(400, "'by' must be a string of 1..64 characters")
    rec = await _get_or_404(request)
    new = await _ctx(request).pipeline.set_state(rec.alert.alert_id, state, by, now_ms())
    assert new is not None
    return _json(_record_json(new))


async def ack(request: web.Request) -> web.Response:
    return await _transition(request, AlertState.ACKNOWLEDGED)


async def resolve(request: web.Request) -> web.Response:
    return await _transition(request, AlertState.RESOLVED)


async def false_alarm(request: web.Request) -> web.Response:
    _require_token(request)
    body = await _body(request)
    note, by = body.get("note", ""), body.get("by", "api")
    if not isinstance(note, str) or len(note) > 500:
        raise ApiError(400, "'note' must be a string of at most 500 characters")
    if not isinstance(by, str) or not 0 < len(by) <= 64:
        raise ApiError(400, "'by' must be a string of 1..64 characters")
    rec = await _get_or_404(request)
    ctx = _ctx(request)
    first = await ctx.store.record_false_alarm(rec, by, note)
    if first:
        ctx.metrics.false_alarms.labels(rec.alert.alert_type.value).inc()
        new = msgspec.structs.replace(rec, false_alarm=True, updated_ms=now_ms())
        await ctx.store.commit(new, rec)
    # Reversing is idempotent by key, so it also runs on a re-mark (a crash between the two writes heals).
    reversed_ = await ctx.ledger.reverse_false_alarm(rec.alert, note, rec.alert.detected_at)
    for e in reversed_:
        ctx.metrics.ledger_entries.labels(e.kind, e.party).inc()
    return _json(
        {
            "alert_id": rec.alert.alert_id,
            "recorded": bool(first),
            "suppression_key": ctx.store.suppression_key(rec.alert.alert_type.value),
            "reversals": [to_builtins(e) for e in reversed_],
        }
    )


async def feedback(request: web.Request) -> web.Response:
    store = _ctx(request).store
    got = await store.r.hgetall(store.key("false-alarms"))
    per = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in got.items()}
    return _json({"false_alarms_by_detector": dict(sorted(per.items())), "total": sum(per.values())})


def _queue_item(rec: AlertRecord) -> dict[str, Any]:
    item = _record_json(rec)
    item["evidence_words"] = console.evidence_words(rec)
    return item


async def queue(request: web.Request) -> web.Response:
    q = request.query
    sort = q.get("sort", "severity")
    if sort not in QUEUE_SORTS:
        raise ApiError(400, f"sort must be one of {', '.join(QUEUE_SORTS)}")
    order = q.get("order", "asc" if sort == "age" else "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be asc or desc")
    filters = {}
    for name in QUEUE_FILTERS:
        if name in q:
            value = _text(q[name], f"query parameter {name}")
            if name == "state" and value not in ("open", "acknowledged"):
                raise ApiError(400, "state must be open or acknowledged (resolved alerts leave the queue)")
            if value:
                filters[name] = value
    now = now_ms()
    min_age = _int_param(request, "min_age_s", None, 0, 10**8)
    max_age = _int_param(request, "max_age_s", None, 0, 10**8)
    first_seen = (now - max_age * 1000 if max_age is not None else None, now - min_age * 1000 if min_age is not None else None)
    search = _text(q["q"], "query parameter q").strip() if q.get("q") else None
    offset = _int_param(request, "offset", 0, 0, 10**7)
    limit = _int_param(request, "limit", 50, 1, 500)
    assert offset is not None and limit is not None
    store = _ctx(request).store
    recs, total = await store.queue_page(
        sort=sort, descending=order == "desc", filters=filters, first_seen_range=first_seen, search=search or None, offset=offset, limit=limit
    )
    return _json(
        {
            "items": [_queue_item(r) for r in recs],
            "total": total,
            "offset": offset,
            "limit": limit,
            "sort": sort,
            "order": order,
            "counts": await store.queue_counts(),
        }
    )


async def bulk_ack(request: web.Request) -> web.Response:
    _require_token(request)
    body = await _body(request)
    ids, by = body.get("alert_ids"), body.get("by", "api")
    if not isinstance(ids, list) or not 0 < len(ids) <= 500 or not all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids):
        raise ApiError(400, "'alert_ids' must be a list of 1..500 alert ids")
    if not isinstance(by, str) or not 0 < len(by) <= 64:
        raise ApiError(400, "'by' must be a string of 1..64 characters")
    ctx = _ctx(request)
    acked: list[str] = []
    missing: list[str] = []
    for aid in dict.fromkeys(_text(i, "alert id") for i in ids):
        new = await ctx.pipeline.set_state(aid, AlertState.ACKNOWLEDGED, by, now_ms())
        (acked if new is not None else missing).append(aid)
    return _json({"acknowledged": acked, "missing": missing})


async def _incident_view(ctx: ApiContext, rec: AlertRecord) -> dict[str, Any]:
    count, sample = await ctx.store.incident_parcel_count(rec.alert.alert_id)
    item = _record_json(rec)
    item["parcel_count"] = count
    item["sample_waybills"] = sample
    item["evidence_words"] = console.evidence_words(rec)
    return item


async def incidents(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    include = request.query.get("include")
    if include not in (None, "recent"):
        raise ApiError(400, "include must be 'recent'")
    recent = include == "recent"
    recs = list(await ctx.store.open_incidents())
    if recent:
        known = {r.alert.alert_id for r in recs}
        recs += [r for r in await ctx.store.query(alert_type=AnomalyType.HUB_INCIDENT.value, limit=50) if r.alert.alert_id not in known]
    recs.sort(key=lambda r: (r.state == AlertState.RESOLVED, -r.alert.detected_at))
    out = [await _incident_view(ctx, r) for r in recs]
    return _json({"incidents": out, "count": len(out)})


async def _incident_or_404(request: web.Request) -> AlertRecord:
    iid = _text(request.match_info["incident_id"], "incident id")
    rec = await _ctx(request).store.get(iid)
    if rec is None or rec.alert.alert_type is not AnomalyType.HUB_INCIDENT:
        raise ApiError(404, f"no hub incident with id {iid!r}")
    return rec


async def incident(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    rec = await _incident_or_404(request)
    iid = rec.alert.alert_id
    offset = _int_param(request, "offset", 0, 0, 10**7)
    limit = _int_param(request, "limit", 100, 1, 1000)
    assert offset is not None and limit is not None
    parcels, total = await ctx.store.incident_parcels(iid, offset, limit)
    grouped = await ctx.store.get_many(sorted(await ctx.store.ids_in("incident", iid)))
    inhibited = [r.alert.alert_id for r in grouped if r.suppressed == "inhibited"]
    moved = await ctx.ledger.index.entries("ref", iid)  # the entries citing the incident, not the whole ledger
    to_platform = sum(e.amount_fen for e in moved if e.party == "platform")
    return _json(
        {
            **(await _incident_view(ctx, rec)),
            "parcels": {"waybills": parcels, "total": total, "offset": offset, "limit": limit},
            "series": await ctx.store.incident_series(iid),
            "inhibited_alert_ids": inhibited[:500],
            "inhibited_count": len(inhibited),
            "liability_to_platform_yuan": to_platform / 100,
            "liability_entries": [to_builtins(e) for e in moved[:500]],
        }
    )


async def incident_chart(request: web.Request) -> web.Response:
    rec = await _incident_or_404(request)
    series = await _ctx(request).store.incident_series(rec.alert.alert_id)
    metric = "backlog_parcels" if any("backlog_parcels" in p for p in series) else "parcels"
    points = [(int(p["t"]), float(p.get(metric, 0))) for p in series]
    svg = console.line_chart_svg(points, f"{rec.alert.node_id or 'hub'}: {metric.replace('_', ' ')} over time", "parcels")
    return web.Response(text=svg, content_type="image/svg+xml")


async def parcel(request: web.Request) -> web.Response:
    wb = _text(request.match_info["waybill"], "waybill id")
    ctx = _ctx(request)
    recs = await ctx.store.query(waybill=wb, limit=1000)
    entries = await ctx.ledger.entries(waybill=wb)
    notifs = await ctx.store.notifications_of(r.alert.alert_id for r in recs)
    promise = next((r.alert.promised_delivery_by for r in recs if r.alert.promised_delivery_by), None)
    lateness = max((r.alert.predicted_lateness_s for r in recs if r.alert.predicted_lateness_s is not None), default=None)
    scans = await ctx.scans.scans(wb) if ctx.scans is not None else {"in_state": False, "scans": [], "note": "this service does not read the worker's state"}
    return _json(
        {
            "waybill_id": wb,
            "scans": scans,
            "alerts": [_queue_item(r) for r in recs],
            "liability": [to_builtins(e) for e in entries],
            "liability_lines": console.running_balance(entries),
            "liability_net_yuan": {p: round(sum(e.amount_fen for e in entries if e.party == p) / 100, 2) for p in {e.party for e in entries}},
            "deliveries": [to_builtins(n) for n in notifs],
            "timeline": console.timeline(recs, notifs, entries, await ctx.store.revisions(r.alert.alert_id for r in recs)),
            "promise": {
                "promised_delivery_by": promise,
                "promised": console.iso(promise),
                "predicted_lateness_s": lateness,
                "predicted_arrival": console.iso(promise + int(lateness * 1000)) if promise and lateness is not None else "",
            },
        }
    )


async def liability_totals(request: web.Request) -> web.Response:
    t = await _ctx(request).ledger.totals(_time_param(request, "since"), _time_param(request, "until"))
    return _json(
        {
            "by_party_yuan": {k: v / 100 for k, v in sorted(t.by_party.items())},
            "by_rule_yuan": {k: v / 100 for k, v in sorted(t.by_rule.items())},
            "net_yuan": t.net_fen / 100,
            "entries": t.entries,
        }
    )


async def _period_entries(request: web.Request) -> list[Any]:
    since, until = _time_param(request, "since"), _time_param(request, "until")
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "until must be after since")
    return await _ctx(request).ledger.entries(since, until)


async def liability_report(request: web.Request) -> web.Response:
    return _json(console.liability_report(await _period_entries(request)))


async def liability_chart(request: web.Request) -> web.Response:
    report = console.liability_report(await _period_entries(request))
    by = request.query.get("by", "party")
    if by not in ("party", "rule"):
        raise ApiError(400, "by must be party or rule")
    svg = console.bar_chart_svg(report[f"by_{by}"], ("charged", "reattributed", "reversed", "net"), f"Liability by {by} (yuan)")
    return web.Response(text=svg, content_type="image/svg+xml")


async def liability_csv(request: web.Request) -> web.Response:
    body = console.liability_csv(await _period_entries(request))
    return web.Response(
        text=body, content_type="text/csv", charset="utf-8", headers={"Content-Disposition": 'attachment; filename="liability.csv"'}
    )


async def list_silences(request: web.Request) -> web.Response:
    return _json({"silences": [to_builtins(s) for s in await _ctx(request).store.silences()]})


async def add_silence(request: web.Request) -> web.Response:
    _require_token(request)
    body = await _body(request)
    matchers = body.get("matchers")
    if not isinstance(matchers, list) or not matchers or not all(isinstance(m, str) for m in matchers):
        raise ApiError(400, "'matchers' must be a non-empty list of strings like 'carrier_id=C1'")
    for m in matchers:
        try:
            Matcher.parse(m)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    try:
        starts = parse_time_ms(str(body["starts_at"])) if "starts_at" in body else now_ms()
        ends = parse_time_ms(str(body.get("ends_at", "")))
    except ValueError as exc:
        raise ApiError(400, f"starts_at/ends_at: {exc}") from None
    if ends <= starts:
        raise ApiError(400, "ends_at must be after starts_at")
    if ends - starts > MAX_SILENCE_MS:
        raise ApiError(400, "a silence may last at most 5 years (ends_at - starts_at)")
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 500:
        raise ApiError(400, "'comment' must be a string of at most 500 characters")
    silence = Silence(silence_id=uuid.uuid4().hex, matchers=tuple(matchers), starts_at=starts, ends_at=ends, comment=comment, created_by="api")
    await _ctx(request).store.add_silence(silence)
    return _json(to_builtins(silence), 201)


async def receivers(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    disabled = await ctx.store.disabled()
    out = []
    for name in ctx.pipeline.routing.receivers:
        out.append(
            {
                "name": name,
                "queued": int(await ctx.store.r.zcard(ctx.store.key("queue", name))),
                "dead_letters": len(await ctx.store.dead_letters(name)),
                "disabled": disabled.get(name),
            }
        )
    return _json({"receivers": out})


class _JsonErrorHandler(RequestHandler):
    """aiohttp answers requests its parser rejects (over-long header lines, bad framing) before any
    middleware runs, in plain text; this keeps those answers the API's one-line JSON too."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, and refuses if a response started
        reason = (message or HTTPStatus(status).phrase).splitlines()[0][:200] if status != 500 else "internal error"
        resp = web.Response(
            status=status, text=json.dumps({"error": reason}), content_type="application/json"
        )
        resp.force_close()
        return resp


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer parser-level errors in JSON."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # Same object and state, one overridden factory: aiohttp offers no hook for the handler class.
        server.__class__ = _JsonErrorServer
        return server


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_BODY_BYTES)
    app[CTX] = ctx
    console_events.install(app, lambda: app[CTX].store)
    add = app.router.add_route
    add("GET", "/", console_page)
    add("GET", "/static/{name}", static_asset)
    add("GET", "/healthz", healthz)
    add("GET", "/metrics", metrics)
    add("GET", "/api/openapi.json", openapi_json)
    add("GET", "/api/alerts", list_alerts)
    add("GET", "/api/queue", queue)
    add("GET", "/api/events", console_events.events)
    add("POST", "/api/queue/ack", bulk_ack)
    add("GET", "/api/alerts/{alert_id}", get_alert)
    add("POST", "/api/alerts/{alert_id}/ack", ack)
    add("POST", "/api/alerts/{alert_id}/resolve", resolve)
    add("POST", "/api/alerts/{alert_id}/false-alarm", false_alarm)
    add("GET", "/api/feedback", feedback)
    add("GET", "/api/incidents", incidents)
    add("GET", "/api/incidents/{incident_id}", incident)
    add("GET", "/api/incidents/{incident_id}/chart.svg", incident_chart)
    add("GET", "/api/parcels/{waybill}", parcel)
    add("GET", "/api/liability/totals", liability_totals)
    add("GET", "/api/liability/report", liability_report)
    add("GET", "/api/liability/chart.svg", liability_chart)
    add("GET", "/api/liability/entries.csv", liability_csv)
    add("GET", "/api/silences", list_silences)
    add("POST", "/api/silences", add_silence)
    add("GET", "/api/receivers", receivers)
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    openapi.check_routes(routes, OPENAPI)
    return app
