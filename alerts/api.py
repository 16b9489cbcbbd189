"""The HTTP API and the CS alert board (aiohttp, same process as the consumer).

Reads are open; mutating calls need ``Authorization: Bearer <alerts.api_token>``.
Every error is a JSON object ``{"error": "<one line>"}`` with a 4xx status
(5xx only for a real fault, still one line, never a traceback).

=======  =======================================  ==============================
method   path                                     what
=======  =======================================  ==============================
GET      /                                        the CS board (static/board.html)
GET      /healthz                                 liveness and consumer status
GET      /metrics                                 Prometheus exposition
GET      /api/alerts?state=&type=&waybill=&incident=&limit=   list and filter
GET      /api/alerts/{id}                         one alert record
POST     /api/alerts/{id}/ack                     acknowledge (token)
POST     /api/alerts/{id}/resolve                 resolve (token)
POST     /api/alerts/{id}/false-alarm             CS feedback (token), body {"note": "..."}
GET      /api/incidents                           open hub incidents with parcel counts
GET      /api/parcels/{waybill}                   a parcel's alerts and liability entries
GET      /api/liability/totals?since=&until=      net amounts per party and rule
GET/POST /api/silences                            list / add a silence (token)
GET      /api/receivers                           receivers, queue depth, dead letters
=======  =======================================  ==============================
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from logiwatch.alerts.ledger import Ledger
from logiwatch.alerts.metrics import AlertMetrics
from logiwatch.alerts.model import AlertRecord, AlertState, Matcher, Silence
from logiwatch.alerts.pipeline import Pipeline
from logiwatch.alerts.store import AlertStore, now_ms
from logiwatch.detectors.codec import to_builtins

log = logging.getLogger(__name__)
BOARD = Path(__file__).with_name("static") / "board.html"
MAX_BODY_BYTES = 16 * 1024
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
        return _json({"error": exc.reason}, exc.status)
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
    if not hmac.compare_digest(token.strip().encode(), _ctx(request).token.encode()):
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
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


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

    if raw.isdigit():
        return int(raw)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {raw[:40]!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"time {raw[:40]!r} needs a UTC offset, e.g. 2026-11-11T00:00:00Z")
    return int(dt.timestamp() * 1000)


async def board(request: web.Request) -> web.Response:
    return web.Response(body=BOARD.read_bytes(), content_type="text/html", charset="utf-8")


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
    recs = await _ctx(request).store.query(
        state=state, alert_type=q.get("type"), waybill=q.get("waybill"), incident=q.get("incident"), limit=limit
    )
    return _json({"alerts": [_record_json(r) for r in recs], "count": len(recs)})


async def _get_or_404(request: web.Request) -> AlertRecord:
    aid = request.match_info["alert_id"]
    if len(aid) > 128:
        raise ApiError(400, "alert id too long")
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
    return _json({"alert_id": rec.alert.alert_id, "recorded": bool(first), "suppression_key": ctx.store.suppression_key(rec.alert.alert_type.value)})


async def incidents(request: web.Request) -> web.Response:
    store = _ctx(request).store
    out = []
    for rec in await store.open_incidents():
        count, sample = await store.incident_parcel_count(rec.alert.alert_id)
        item = _record_json(rec)
        item["parcel_count"] = count
        item["sample_waybills"] = sample
        out.append(item)
    return _json({"incidents": out, "count": len(out)})


async def parcel(request: web.Request) -> web.Response:
    wb = request.match_info["waybill"]
    if len(wb) > 128:
        raise ApiError(400, "waybill id too long")
    ctx = _ctx(request)
    recs = await ctx.store.query(waybill=wb, limit=1000)
    entries = await ctx.ledger.entries(waybill=wb)
    return _json(
        {
            "waybill_id": wb,
            "alerts": [_record_json(r) for r in recs],
            "liability": [to_builtins(e) for e in entries],
            "liability_net_yuan": {p: round(sum(e.amount_fen for e in entries if e.party == p) / 100, 2) for p in {e.party for e in entries}},
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


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_BODY_BYTES)
    app[CTX] = ctx
    app.router.add_get("/", board)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/{alert_id}", get_alert)
    app.router.add_post("/api/alerts/{alert_id}/ack", ack)
    app.router.add_post("/api/alerts/{alert_id}/resolve", resolve)
    app.router.add_post("/api/alerts/{alert_id}/false-alarm", false_alarm)
    app.router.add_get("/api/incidents", incidents)
    app.router.add_get("/api/parcels/{waybill}", parcel)
    app.router.add_get("/api/liability/totals", liability_totals)
    app.router.add_get("/api/silences", list_silences)
    app.router.add_post("/api/silences", add_silence)
    app.router.add_get("/api/receivers", receivers)
    return app
