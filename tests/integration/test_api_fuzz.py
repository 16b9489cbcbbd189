"""Hostile requests against the alert service's HTTP API: clear 4xx, never a crash.

The service publishes no OpenAPI document, so hypothesis generates requests
for every route in ``alerts/api.py``: fuzzed path parameters, query strings,
methods, headers and bodies (garbage bytes, arbitrary JSON, oversized). The
real service runs on the real broker and Redis with a few real alerts in it.
Every answer must be below 500, carry no traceback and no token, and every
error must be the one-line JSON object the API promises; mutations without
the right bearer token are 401 and oversized bodies 413. Afterwards the
service still answers and the seeded alerts are intact.
"""

from __future__ import annotations

import hmac
import http.client
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from uuid import uuid4

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logiwatch import stack
from logiwatch.alerts import api
from logiwatch.config import Settings
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import (
    TOKEN,
    ServiceThread,
    produce,
    routes,
    service_settings,
    stall,
)

SEEDED = [stall(i) for i in range(3)]
MUTATIONS = ("/api/alerts/{id}/ack", "/api/alerts/{id}/resolve", "/api/alerts/{id}/false-alarm", "/api/silences")
READS = (
    "/",
    "/healthz",
    "/metrics",
    "/api/alerts",
    "/api/alerts/{id}",
    "/api/incidents",
    "/api/parcels/{wb}",
    "/api/liability/totals",
    "/api/silences",
    "/api/receivers",
)
QUERY_NAMES = ("state", "type", "waybill", "incident", "limit", "since", "until", "x")


@pytest.fixture(scope="module")
def service(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceThread]:
    """One real alert service for the whole module (hypothesis reuses it across examples)."""

    topic, ltopic = f"fuzz-alerts-{uuid4().hex}", f"fuzz-liab-{uuid4().hex}"
    stack.create_topics(kafka_bootstrap, {topic: 2, ltopic: 1})
    prefix = f"lwtest:{uuid4().hex}:"

    def make(**over: Any) -> Settings:
        base: dict[str, Any] = {
            "kafka": {"bootstrap": kafka_bootstrap, **over.get("kafka", {})},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "stack": {"state_dir": str(tmp_path_factory.mktemp("state"))},
            "alerts": over.get("alerts", {}),
        }
        return Settings(**base)

    cfg = service_settings(make, topic, ltopic, f"g-{uuid4().hex}")
    try:
        with ServiceThread(cfg, routes({})) as svc:
            produce(kafka_bootstrap, topic, SEEDED)
            wait_until(lambda: svc.consumed == len(SEEDED), 60, what="seed alerts consumed")
            yield svc
    finally:
        stack.delete_topics(kafka_bootstrap, [topic, ltopic])
        r = redis.Redis.from_url(redis_url)
        try:
            keys = list(r.scan_iter(match=f"{prefix}*"))
            if keys:
                r.delete(*keys)
        finally:
            r.close()


def send(
    base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    finally:
        conn.close()


def assert_clean(status: int, body: bytes, ctype: str, what: str) -> None:
    assert status < 500, f"{what} -> {status} {body[:300]!r}"
    text = body.decode(errors="replace")
    assert "Traceback" not in text and 'File "' not in text, f"{what} leaked a traceback"
    assert TOKEN not in text, f"{what} echoed the API token"
    if status >= 400 and ctype.startswith("application/json") and body:  # HEAD answers carry no body
        err = json.loads(body)
        assert isinstance(err.get("error"), str) and "\n" not in err["error"], f"{what}: {text[:200]}"


path_text = st.text(min_size=0, max_size=60) | st.sampled_from(["stall-0", "..", "../..", "%00", "a/b", "WB1"])
query_value = st.text(max_size=40) | st.integers(-(10**20), 10**20).map(str) | st.sampled_from(["firing", "2026-11-11T00:00:00Z", "9" * 5000])
json_doc = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=10,
)
mutation_body = (
    st.binary(max_size=300)
    | json_doc.map(lambda d: json.dumps(d).encode())
    | st.fixed_dictionaries(
        {},
        optional={
            "by": json_doc,
            "note": json_doc,
            "matchers": st.lists(st.text(max_size=30), max_size=4) | json_doc,
            "starts_at": query_value | json_doc,
            "ends_at": query_value | json_doc,
            "comment": json_doc,
        },
    ).map(lambda d: json.dumps(d).encode())
)


def fill(template: str, value: str) -> str:
    return template.replace("{id}", quote(value, safe="")).replace("{wb}", quote(value, safe=""))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    template=st.sampled_from(READS),
    param=path_text,
    query=st.dictionaries(st.sampled_from(QUERY_NAMES), query_value, max_size=4),
    method=st.sampled_from(["GET", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]),
)
def test_fuzzed_reads_get_an_answer_below_500_without_traceback(
    service: ServiceThread, template: str, param: str, query: dict[str, str], method: str
) -> None:
    path = fill(template, param) + ("?" + urlencode(query) if query else "")
    status, body, ctype = send(service.url, method, path)
    assert_clean(status, body, ctype, f"{method} {path[:120]}")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    template=st.sampled_from(MUTATIONS),
    alert=st.sampled_from([a.alert_id for a in SEEDED]) | path_text,
    body=mutation_body,
    auth=st.sampled_from(["none", "wrong", "scheme", "good"]) | st.text(max_size=40),
)
def test_fuzzed_mutations_need_the_token_and_never_crash(
    service: ServiceThread, template: str, alert: str, body: bytes, auth: str
) -> None:
    headers = {"Content-Type": "application/json"}
    if auth == "good":
        headers["Authorization"] = f"Bearer {TOKEN}"
    elif auth == "wrong":
        headers["Authorization"] = f"Bearer {TOKEN}x"
    elif auth == "scheme":
        headers["Authorization"] = f"Basic {TOKEN}"
    elif auth != "none" and auth.isprintable() and auth.isascii() and "\n" not in auth:
        headers["Authorization"] = auth
    path = fill(template, alert)
    status, raw, ctype = send(service.url, "POST", path, body, headers)
    assert_clean(status, raw, ctype, f"POST {path[:80]} auth={auth[:20]!r} body={body[:60]!r}")
    # An id the route cannot match (empty, '/', braces: aiohttp's [^{}/]+, dot segments) is a 404 before auth.
    routable = "{id}" not in template or (bool(re.fullmatch(r"[^{}/]+", alert)) and alert not in (".", ".."))
    if auth != "good" and routable:
        assert status == 401, f"mutation without the right token got {status}"


@pytest.mark.parametrize("template", MUTATIONS)
def test_oversized_bodies_are_refused_with_413(service: ServiceThread, template: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    big = b'{"note": "' + b"x" * (api.MAX_BODY_BYTES * 4) + b'"}'
    status, raw, ctype = send(service.url, "POST", fill(template, SEEDED[0].alert_id), big, headers)
    assert status == 413, (status, raw[:200])
    assert_clean(status, raw, ctype, "oversized body")


def test_every_token_check_goes_through_compare_digest_with_the_whole_token(
    service: ServiceThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Timing cannot be asserted here; what can: each check, right or wrong, early or
    # late difference, is one hmac.compare_digest over the whole presented token.
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    path = fill("/api/alerts/{id}/ack", SEEDED[0].alert_id)
    wrong_first, wrong_last = "X" + TOKEN[1:], TOKEN[:-1] + "X"
    for token in (wrong_first, wrong_last, TOKEN + "-longer"):
        status, _, _ = send(service.url, "POST", path, b"{}", {"Authorization": f"Bearer {token}"})
        assert status == 401, (token, status)
    assert (wrong_first.encode(), TOKEN.encode()) in seen
    assert (wrong_last.encode(), TOKEN.encode()) in seen
    assert ((TOKEN + "-longer").encode(), TOKEN.encode()) in seen


def test_service_is_healthy_and_seeded_alerts_intact_after_the_fuzzing(
    service: ServiceThread, redis_url: str
) -> None:
    status, body, _ = send(service.url, "GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    for alert in SEEDED:
        status, body, _ = send(service.url, "GET", f"/api/alerts/{alert.alert_id}")
        assert status == 200 and json.loads(body)["alert"]["alert_id"] == alert.alert_id


@pytest.mark.parametrize("template", MUTATIONS)
def test_a_non_ascii_bearer_token_is_a_401_not_a_crash(service: ServiceThread, template: str) -> None:
    # http.client sends header text as Latin-1: the server sees bytes that are not UTF-8.
    headers = {"Authorization": "Bearer tökén", "Content-Type": "application/json"}
    status, raw, ctype = send(service.url, "POST", fill(template, SEEDED[0].alert_id), b"{}", headers)
    assert (status, json.loads(raw)) == (401, {"error": "invalid bearer token"})
    assert ctype.startswith("application/json")


def test_a_deeply_nested_body_is_a_400_naming_the_depth(service: ServiceThread) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for body in (b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000, b"[" * 5000 + b"]" * 5000):
        status, raw, ctype = send(service.url, "POST", fill(MUTATIONS[0], SEEDED[0].alert_id), body, headers)
        assert status == 400 and "nested deeper than" in json.loads(raw)["error"], (status, raw[:200])


@pytest.mark.parametrize(
    "ends_at", [10**30, "1" * 31, "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", 1e30]
)
def test_a_silence_ending_past_2100_or_lasting_over_5_years_is_refused(service: ServiceThread, ends_at: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = json.dumps({"matchers": ["carrier_id=C1"], "ends_at": ends_at}).encode()
    status, raw, _ = send(service.url, "POST", "/api/silences", body, headers)
    assert status == 400, (status, raw[:200])
    assert "starts_at/ends_at" in json.loads(raw)["error"]
    body = json.dumps({"matchers": ["carrier_id=C1"], "ends_at": "2099-01-01T00:00:00Z"}).encode()
    status, raw, _ = send(service.url, "POST", "/api/silences", body, headers)
    assert status == 400 and "at most 5 years" in json.loads(raw)["error"]


def test_over_long_header_lines_are_answered_in_json(service: ServiceThread) -> None:
    for headers in ({"X-Long": "a" * 20_000}, {"Authorization": "Bearer " + "b" * 20_000}, {"X-" + "n" * 9000: "v"}):
        status, raw, ctype = send(service.url, "GET", "/api/alerts", None, headers)
        assert status == 400 and ctype.startswith("application/json"), (status, ctype, raw[:200])
        err = json.loads(raw)["error"]
        assert isinstance(err, str) and "\n" not in err and len(err) <= 200
    status, raw, ctype = send(service.url, "GET", "/api/alerts?" + "q=" + "x" * 20_000)
    assert status in (400, 414) and ctype.startswith("application/json"), (status, raw[:200])
