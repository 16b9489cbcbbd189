"""The alert service's OpenAPI 3.1 contract, served at ``/api/openapi.json``.

Written here next to the handlers and checked against them: :func:`check_routes`
compares the document's (method, path) pairs with the aiohttp router when the
app is built, so a route without a description (or a description without a
route) stops the service from starting. The schemathesis tests
(``tests/integration/test_api_contract.py``) send generated requests from this
document to the real service and validate every answer against it.
"""

from __future__ import annotations

import re
from typing import Any

from logiwatch.detectors.model import AnomalyType, Severity

JSON = "application/json"

_ERROR = {"$ref": "#/components/schemas/Error"}
_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_NUM = {"type": "number"}
_INT = {"type": "integer"}

_ALERT = {
    "type": "object",
    "required": ["alert_id", "alert_type", "status", "severity", "detected_at", "summary"],
    "properties": {
        "alert_id": _STR,
        "alert_type": {"type": "string", "enum": [t.value for t in AnomalyType]},
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "severity": {"type": "string", "enum": [s.value for s in Severity]},
        "detected_at": _INT,
        "summary": _STR,
        "waybill_id": _NSTR,
        "order_id": _NSTR,
        "merchant_id": _NSTR,
        "carrier_id": _NSTR,
        "node_id": _NSTR,
        "region": _NSTR,
        "order_amount": {"type": ["number", "null"]},
        "predicted_lateness_s": {"type": ["number", "null"]},
        "incident_id": _NSTR,
        "affected_waybills": {"type": "array", "items": _STR},
        "revision": _INT,
        "evidence": {"type": "object"},
    },
}

_RECORD = {
    "type": "object",
    "required": ["alert", "state", "first_seen_ms", "updated_ms"],
    "properties": {
        "alert": {"$ref": "#/components/schemas/Alert"},
        "state": {"type": "string", "enum": ["open", "acknowledged", "resolved"]},
        "first_seen_ms": _INT,
        "updated_ms": _INT,
        "acknowledged_by": _NSTR,
        "resolved_by": _NSTR,
        "escalations": _INT,
        "false_alarm": {"type": "boolean"},
        "suppressed": _NSTR,
        "affected_truncated": {"type": "boolean"},
        "evidence_words": _STR,
    },
}

_ENTRY = {
    "type": "object",
    "required": ["key", "entry_id", "kind", "waybill_id", "party", "amount_fen", "rule_id", "rule_version", "evidence", "at_ms"],
    "properties": {
        "key": _STR,
        "entry_id": _STR,
        "kind": {"type": "string", "enum": ["charge", "reversal"]},
        "waybill_id": _STR,
        "party": _STR,
        "amount_fen": _INT,
        "currency": _STR,
        "rule_id": _STR,
        "rule_version": _STR,
        "evidence": {"type": "array", "items": _STR},
        "reason": _STR,
        "at_ms": _INT,
        "charge_key": _STR,
    },
}

_NOTIFICATION = {
    "type": "object",
    "required": ["nid", "receiver", "alert_id", "kind", "created_ms", "attempts"],
    "properties": {
        "nid": _STR,
        "receiver": _STR,
        "alert_id": _STR,
        "kind": _STR,
        "created_ms": _INT,
        "attempts": _INT,
        "last_error": _NSTR,
        "delivered_ms": {"type": ["integer", "null"]},
    },
}

_TOTALS_ROW = {
    "type": "object",
    "required": ["name", "charged", "reattributed", "reversed", "net"],
    "properties": {"name": _STR, "charged": _NUM, "reattributed": _NUM, "reversed": _NUM, "net": _NUM},
}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _resp(schema: dict[str, Any], description: str, ctype: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {ctype: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "bad input (the reason is in `error`)",
        401: "missing or wrong bearer token",
        404: "no such resource",
        413: "request body too large",
    }
    return {str(c): _resp(_ERROR, words[c]) for c in codes}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 128}, "description": description}


_TIME = {"type": "string", "minLength": 1, "maxLength": 40, "description": "ISO 8601 with offset, or epoch ms, 2000..2100"}
_PERIOD = [_q("since", _TIME, "inclusive start (event time)"), _q("until", _TIME, "exclusive end")]
_BY = {"type": "string", "minLength": 1, "maxLength": 64}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def _mutation(summary: str, body: dict[str, Any], ok: dict[str, Any], ok_code: str = "200", path_param: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": _SECURED,
        "requestBody": {"required": bool(body["required"]), "content": {JSON: {"schema": body}}},
        "responses": {ok_code: ok, **_errors(400, 401, 413, *((404,) if path_param else ()))},
    }
    if path_param:
        op["parameters"] = [_p("alert_id", "the alert id")]
    return op


def _get(summary: str, ok: dict[str, Any], params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = (400,)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if params:
        op["parameters"] = params
    return op


def _console_paths() -> dict[str, Any]:
    """The console page, its assets, health, metrics and this document."""

    return {
    "/": {"get": {"summary": "the CS console (HTML)", "responses": {"200": {"description": "page", "content": {"text/html": {"schema": _STR}}}}}},
    "/static/{name}": {
        "get": {
            "summary": "console assets (scripts, styles) served by the service itself",
            "parameters": [_p("name", "asset file name")],
            "responses": {
                "200": {
                    "description": "asset",
                    "content": {"text/javascript": {"schema": _STR}, "text/css": {"schema": _STR}},
                },
                **_errors(404),
            },
        }
    },
    "/healthz": {"get": _get("liveness and consumer status", _resp(_obj(["status"], status=_STR), "healthy"), errors=())},
    "/metrics": {
        "get": {
            "summary": "Prometheus exposition",
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": _STR}}}},
        }
    },
    "/api/openapi.json": {"get": _get("this document", _resp({"type": "object"}, "OpenAPI 3.1"), errors=())},
    }


def _alert_paths(queue_params: list[dict[str, Any]], counts: dict[str, Any]) -> dict[str, Any]:
    """The alerts, the queue and one alert's actions."""

    return {
    "/api/alerts": {
        "get": _get(
            "list and filter alert records (newest first)",
            _resp(_obj(["alerts", "count"], alerts={"type": "array", "items": _ref("AlertRecord")}, count=_INT), "records"),
            [
                _q("state", {"type": "string", "enum": ["open", "acknowledged", "resolved"]}, "lifecycle state"),
                _q("type", {"type": "string", "maxLength": 128}, "alert type"),
                _q("waybill", {"type": "string", "maxLength": 128}, "waybill id"),
                _q("incident", {"type": "string", "maxLength": 128}, "incident id"),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "at most this many"),
            ],
        )
    },
    "/api/queue": {
        "get": _get(
            "the CS queue: open and acknowledged parcel alerts, sorted, filtered, paged, with counts",
            _resp(
                _obj(
                    ["items", "total", "offset", "limit", "sort", "order", "counts"],
                    items={"type": "array", "items": _ref("AlertRecord")},
                    total=_INT,
                    offset=_INT,
                    limit=_INT,
                    sort=_STR,
                    order=_STR,
                    counts=counts,
                ),
                "one page",
            ),
            queue_params,
        )
    },
    "/api/queue/ack": {
        "post": _mutation(
            "acknowledge many alerts at once",
            _obj(["alert_ids"], alert_ids={"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 128}, "minItems": 1, "maxItems": 500}, by=_BY),
            _resp(_obj(["acknowledged", "missing"], acknowledged={"type": "array", "items": _STR}, missing={"type": "array", "items": _STR}), "done"),
            path_param=False,
        )
    },
    "/api/alerts/{alert_id}": {"get": _get("one alert record", _resp(_ref("AlertRecord"), "record"), [_p("alert_id", "the alert id")], (400, 404))},
    "/api/alerts/{alert_id}/ack": {"post": _mutation("acknowledge", _obj([], by=_BY), _resp(_ref("AlertRecord"), "the record"))},
    "/api/alerts/{alert_id}/resolve": {"post": _mutation("resolve", _obj([], by=_BY), _resp(_ref("AlertRecord"), "the record"))},
    "/api/alerts/{alert_id}/false-alarm": {
        "post": _mutation(
            "mark a false alarm: feeds the detectors' suppression and reverses what the alert charged",
            _obj([], note={"type": "string", "maxLength": 500}, by=_BY),
            _resp(
                _obj(
                    ["alert_id", "recorded", "suppression_key", "reversals"],
                    alert_id=_STR,
                    recorded={"type": "boolean"},
                    suppression_key=_STR,
                    reversals={"type": "array", "items": _ref("Entry")},
                ),
                "recorded (false: already marked; counted once)",
            ),
        )
    },
    }


def _feedback_and_incident_paths() -> dict[str, Any]:
    """Feedback and the list of hub incidents."""

    return {
    "/api/feedback": {
        "get": _get(
            "false-alarm marks per detector",
            _resp(_obj(["false_alarms_by_detector", "total"], false_alarms_by_detector={"type": "object", "additionalProperties": _INT}, total=_INT), "counts"),
            errors=(),
        )
    },
    "/api/incidents": {
        "get": _get(
            "open hub incidents (and recent ones with include=recent)",
            _resp(_obj(["incidents", "count"], incidents={"type": "array", "items": _ref("AlertRecord")}, count=_INT), "incidents"),
            [_q("include", {"type": "string", "enum": ["recent"]}, "also the last resolved incidents")],
        )
    },
    }


def _incident_and_parcel_paths() -> dict[str, Any]:
    """One incident, its chart, live events and the parcel page."""

    return {
    "/api/incidents/{incident_id}": {
        "get": _get(
            "one incident: affected parcels (paged), its series, inhibited alerts, liability moved",
            _resp(
                {
                    "allOf": [
                        _ref("AlertRecord"),
                        _obj(
                            ["parcels", "series", "inhibited_alert_ids", "liability_to_platform_yuan"],
                            parcels=_obj(["waybills", "total"], waybills={"type": "array", "items": _STR}, total=_INT, offset=_INT, limit=_INT),
                            series={"type": "array", "items": {"type": "object"}},
                            inhibited_alert_ids={"type": "array", "items": _STR},
                            inhibited_count=_INT,
                            liability_to_platform_yuan=_NUM,
                            liability_entries={"type": "array", "items": _ref("Entry")},
                        ),
                    ]
                },
                "incident",
            ),
            [
                _p("incident_id", "the incident's alert id"),
                _q("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000}, "parcel page start"),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "parcel page size"),
            ],
            (400, 404),
        )
    },
    "/api/incidents/{incident_id}/chart.svg": {
        "get": {
            "summary": "the incident's backlog over time (server-drawn SVG)",
            "parameters": [_p("incident_id", "the incident's alert id")],
            "responses": {"200": {"description": "chart", "content": {"image/svg+xml": {"schema": _STR}}}, **_errors(400, 404)},
        }
    },
    "/api/events": {
        "get": {
            "summary": "live updates: a server-sent event stream ('changed' after every commit of the alert store)",
            "responses": {"200": {"description": "an event stream that stays open", "content": {"text/event-stream": {"schema": _STR}}}},
        }
    },
    "/api/parcels/{waybill}": {
        "get": _get(
            "one parcel's story: alerts with evidence in words, deliveries, liability with running balance, promise",
            _resp(
                _obj(
                    ["waybill_id", "scans", "alerts", "liability", "liability_lines", "deliveries", "timeline", "promise"],
                    waybill_id=_STR,
                    scans=_obj(
                        ["in_state", "scans"],
                        in_state={"type": "boolean"},
                        partition=_INT,
                        note=_STR,
                        scans={
                            "type": "array",
                            "items": _obj(["at_ms", "at", "event_type", "node_id", "region", "detail"], at_ms=_INT, at=_STR, event_type=_STR, node_id=_STR, region=_STR, detail=_STR),
                        },
                    ),
                    alerts={"type": "array", "items": _ref("AlertRecord")},
                    liability={"type": "array", "items": _ref("Entry")},
                    liability_lines={"type": "array", "items": _obj(["balance_yuan", "amount_yuan", "party"], balance_yuan=_NUM, amount_yuan=_NUM, party=_STR)},
                    liability_net_yuan={"type": "object", "additionalProperties": _NUM},
                    deliveries={"type": "array", "items": _ref("Notification")},
                    timeline={"type": "array", "items": _obj(["at", "kind", "what"], at=_STR, kind=_STR, what=_STR, detail=_STR)},
                    promise={"type": "object"},
                ),
                "parcel",
            ),
            [_p("waybill", "the waybill id")],
            (400, 404),
        )
    },
    }


def _liability_paths() -> dict[str, Any]:
    """Liability totals, reports, charts and exports."""

    return {
    "/api/liability/totals": {
        "get": _get(
            "net amounts per party and rule (yuan)",
            _resp(
                _obj(
                    ["by_party_yuan", "by_rule_yuan", "net_yuan", "entries"],
                    by_party_yuan={"type": "object", "additionalProperties": _NUM},
                    by_rule_yuan={"type": "object", "additionalProperties": _NUM},
                    net_yuan=_NUM,
                    entries=_INT,
                ),
                "totals",
            ),
            _PERIOD,
        )
    },
    "/api/liability/report": {
        "get": _get(
            "totals per party and rule split into charged, re-attributed and reversed (yuan)",
            _resp(
                _obj(
                    ["by_party", "by_rule", "net_yuan", "entries"],
                    by_party={"type": "array", "items": _TOTALS_ROW},
                    by_rule={"type": "array", "items": _TOTALS_ROW},
                    net_yuan=_NUM,
                    entries=_INT,
                ),
                "report",
            ),
            _PERIOD,
        )
    },
    "/api/liability/chart.svg": {
        "get": {
            "summary": "the liability report as a bar chart (server-drawn SVG)",
            "parameters": [*_PERIOD, _q("by", {"type": "string", "enum": ["party", "rule"]}, "group by")],
            "responses": {"200": {"description": "chart", "content": {"image/svg+xml": {"schema": _STR}}}, **_errors(400)},
        }
    },
    "/api/liability/entries.csv": {
        "get": {
            "summary": "ledger lines of the period as CSV",
            "parameters": _PERIOD,
            "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": _STR}}}, **_errors(400)},
        }
    },
    }


def _admin_paths() -> dict[str, Any]:
    """Silences and receivers."""

    return {
    "/api/silences": {
        "get": _get("silences", _resp(_obj(["silences"], silences={"type": "array", "items": _ref("Silence")}), "silences"), errors=()),
        "post": _mutation(
            "add a silence (at most 5 years, times 2000..2100)",
            _obj(
                ["matchers", "ends_at"],
                matchers={"type": "array", "minItems": 1, "items": {"type": "string"}},
                starts_at={"type": ["string", "integer"]},
                ends_at={"type": ["string", "integer"]},
                comment={"type": "string", "maxLength": 500},
            ),
            _resp(_ref("Silence"), "created"),
            ok_code="201",
            path_param=False,
        ),
    },
    "/api/receivers": {
        "get": _get(
            "receivers with queue depth and dead letters",
            _resp(
                _obj(
                    ["receivers"],
                    receivers={
                        "type": "array",
                        "items": _obj(["name", "queued", "dead_letters"], name=_STR, queued=_INT, dead_letters=_INT, disabled=_NSTR),
                    },
                ),
                "receivers",
            ),
            errors=(),
        )
    },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict each call)."""

    queue_params = [
        _q("sort", {"type": "string", "enum": ["severity", "lateness", "amount", "age"]}, "sort order (severity: critical first, then oldest)"),
        _q("order", {"type": "string", "enum": ["asc", "desc"]}, "direction (default desc; asc for age = oldest first)"),
        _q("type", {"type": "string", "maxLength": 128}, "alert type"),
        _q("severity", {"type": "string", "maxLength": 128}, "severity"),
        _q("state", {"type": "string", "enum": ["open", "acknowledged"]}, "lifecycle state"),
        _q("merchant", {"type": "string", "maxLength": 128}, "merchant id"),
        _q("carrier", {"type": "string", "maxLength": 128}, "carrier id"),
        _q("region", {"type": "string", "maxLength": 128}, "region"),
        _q("hub", {"type": "string", "maxLength": 128}, "node (hub) id"),
        _q("min_age_s", {"type": "integer", "minimum": 0, "maximum": 100_000_000}, "first seen at least this long ago"),
        _q("max_age_s", {"type": "integer", "minimum": 0, "maximum": 100_000_000}, "first seen at most this long ago"),
        _q("q", {"type": "string", "maxLength": 128}, "search: a waybill or order id"),
        _q("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000}, "page start"),
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size"),
    ]
    counts = _obj(
        ["type", "severity", "state"],
        type={"type": "object", "additionalProperties": _INT},
        severity={"type": "object", "additionalProperties": _INT},
        state={"type": "object", "additionalProperties": _INT},
    )
    paths: dict[str, Any] = {
        **_console_paths(),
        **_alert_paths(queue_params, counts),
        **_feedback_and_incident_paths(),
        **_incident_and_parcel_paths(),
        **_liability_paths(),
        **_admin_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "logiwatch alert service",
            "version": "1",
            "description": "CS console API. Reads are open; mutations need `Authorization: Bearer <alerts.api_token>`. "
            "Every error is `{\"error\": \"<one line>\"}`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _obj(["error"], error=_STR),
                "Alert": _ALERT,
                "AlertRecord": _RECORD,
                "Entry": _ENTRY,
                "Notification": _NOTIFICATION,
                "Silence": _obj(
                    ["silence_id", "matchers", "starts_at", "ends_at"],
                    silence_id=_STR,
                    matchers={"type": "array", "items": _STR},
                    starts_at=_INT,
                    ends_at=_INT,
                    comment=_STR,
                    created_by=_STR,
                ),
            },
        },
    }


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) pairs the document describes."""

    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in {"get", "post", "put", "patch", "delete"}}


def check_routes(routes: set[tuple[str, str]], doc: dict[str, Any]) -> None:
    """Raise ``RuntimeError`` naming every route the document misses, and every description without a route."""

    documented = operations(doc)
    served = {(m, re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", p)) for m, p in routes if m != "HEAD"}
    missing, stale = sorted(served - documented), sorted(documented - served)
    if missing or stale:
        raise RuntimeError(f"OpenAPI document out of step with the routes: undocumented {missing}, unserved {stale}")
