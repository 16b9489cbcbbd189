"""Shared pieces of the alert-service integration tests (no tests here).

* :class:`HookReceiver`: a real aiohttp webhook receiver on 127.0.0.1 in its
  own thread, recording every request; it can be told to fail (status,
  Retry-After; or a scripted answer per request) or to answer slowly, and
  it stamps each arrival with the alert service's own clock
  (:func:`logiwatch.alerts.store.now_ms`), so timelines compare like with like; it verifies signatures with its own
  implementation of the Standard Webhooks check.
* :class:`ServiceThread`: the real :class:`AlertService` on its own loop.
* :func:`stall` / :func:`produce`: alert records onto a real topic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from logiwatch.alerts.liability import load_rules
from logiwatch.alerts.routing import RoutingConfig, parse_routes
from logiwatch.alerts.service import AlertService
from logiwatch.alerts.store import now_ms
from logiwatch.config import Settings
from logiwatch.detectors.codec import encode_alert
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity

SECRET = "whsec_" + base64.b64encode(b"integration-test-secret-32-bytes").decode()
T0 = 1_790_000_000_000
HOUR = 3_600_000
TOKEN = "test-token-123"


def independent_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification written from the spec, independent of logiwatch."""

    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    return any(sig.split(",", 1)[1] == expected for sig in headers["webhook-signature"].split() if sig.startswith("v1,"))


@dataclass
class Hit:
    webhook_id: str
    status: int
    body: bytes
    headers: dict[str, str]
    verified: bool
    arrived: float  # monotonic time the request reached the receiver
    arrived_ms: int = 0  # the same moment on the alert service's clock (epoch ms)

    def json(self) -> Any:
        return json.loads(self.body)


class HookReceiver:
    """A local webhook endpoint; ``fail_with``/``delay_s`` change its behaviour live."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.fail_with: int | None = None
        self.retry_after: str | None = None
        self.delay_s = 0.0
        #: answers for the next requests, first first: (status, Retry-After or None)
        self.script: list[tuple[int, str | None]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HookReceiver:
        self._thread.start()
        assert self._ready.wait(10), "receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        async def hook(request: web.Request) -> web.Response:
            arrived, arrived_ms = time.monotonic(), now_ms()
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            with self._lock:
                status, retry_after = self.script.pop(0) if self.script else (self.fail_with or 200, self.retry_after)
            hit = Hit(headers.get("webhook-id", ""), status, body, headers, independent_verify(SECRET, headers, body), arrived, arrived_ms)
            with self._lock:
                self.hits.append(hit)
            extra = {"Retry-After": retry_after} if status != 200 and retry_after else {}
            return web.json_response({"ok": status == 200}, status=status, headers=extra)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def ok_hits(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if 200 <= h.status < 300]

    def ok_counts(self) -> Counter[str]:
        return Counter(h.webhook_id for h in self.ok_hits())


def routes(receivers: dict[str, tuple[str, str]], **top: Any) -> RoutingConfig:
    """name -> (url, format); every receiver gets every alert; fast retries for tests."""

    return parse_routes(
        {
            **top,
            "receivers": [
                {
                    "name": n,
                    "url": url,
                    "secret": SECRET,
                    "format": fmt,
                    "allow_private_networks": True,
                    "retry_schedule_s": [0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                    "rate_per_s": 200,
                    "timeout_s": 5,
                    "connect_timeout_s": 2,
                }
                for n, (url, fmt) in receivers.items()
            ],
            "routes": [{"receiver": n} for n in receivers],
        }
    )


def service_settings(settings_factory: Any, topic: str, liability_topic: str, group: str) -> Settings:
    settings: Settings = settings_factory(
        kafka={
            "topics": {"alerts": topic, "liability": liability_topic},
            "alerts_group": group,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        alerts={"api_port": 0, "api_token": TOKEN, "public_url": "http://board.test"},
    )
    return settings


class ServiceThread:
    """The real alert service on its own event loop in a thread."""

    def __init__(self, settings: Settings, routing: RoutingConfig) -> None:
        self.settings = settings
        self.routing = routing
        self.registry = CollectorRegistry()
        self.service: AlertService | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            self.service = AlertService(self.settings, self.routing, load_rules(), self.registry)
            ready = asyncio.Event()
            task = asyncio.create_task(self.service.run(self.stop_event, ready))
            await ready.wait()
            self._ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc
            self._ready.set()

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        assert self._ready.wait(30), "alert service did not start"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self._thread.join(30)

    @property
    def url(self) -> str:
        assert self.service is not None
        return self.service.api_url

    @property
    def consumed(self) -> int:
        assert self.service is not None
        return int(self.service.status["consumed"])

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return float(value or 0.0)


def stall(i: int, **over: Any) -> Alert:
    base: dict[str, Any] = {
        "alert_id": f"stall-{i}",
        "alert_type": AnomalyType.STALL,
        "status": AlertStatus.FIRING,
        "severity": Severity.WARNING,
        "detected_at": T0 + i,
        "summary": f"parcel WB{i} stalled at HUB-1",
        "waybill_id": f"WB{i}",
        "order_id": f"O{i}",
        "merchant_id": "M1",
        "carrier_id": "C1",
        "node_id": "HUB-1",
        "region": "east",
        "order_amount": 100.0,
        "promised_delivery_by": T0 + 48 * HOUR,
    }
    base.update(over)
    return Alert(**base)


def produce(bootstrap: str, topic: str, alerts: list[Alert]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for a in alerts:
            producer.send(topic, key=a.alert_id.encode(), value=encode_alert(a))
        producer.flush(30)
    finally:
        producer.close()
