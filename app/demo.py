"""The alert service as ``logiwatch demo`` shows it: the real service plus a local
webhook receiver that verifies every signature and prints what it gets.

:func:`run_alerts_demo` runs until ``stop`` is set, then prints the liability
summary. The demo command calls it next to the worker; it needs nothing but
the settings (routes are built here, pointing at the local receiver, which
is why ``allow_private_networks`` is on).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from logiwatch.alerts.liability import load_rules
from logiwatch.alerts.routing import parse_routes
from logiwatch.alerts.service import AlertService
from logiwatch.alerts.webhooks import verify
from logiwatch.config import Settings


class DemoReceiver:
    """An aiohttp webhook endpoint on 127.0.0.1 that verifies and reports each request."""

    def __init__(self, secret: str, report: Callable[[str], Any]) -> None:
        self.secret = secret
        self.report = report
        self.received = 0
        self.bad_signatures = 0
        self.seen: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not verify(self.secret, headers, body):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        wid = headers["webhook-id"]
        if wid in self.seen:  # the id is the idempotency key: a repeat is acknowledged, not re-processed
            return web.json_response({"ok": True, "duplicate": True})
        self.seen.add(wid)
        self.received += 1
        p = json.loads(body)
        a = p["alert"]
        extra = f" ({p['incident']['parcel_count']} parcels)" if p.get("incident") else ""
        self.report(f"  webhook {p['event']:<16} {a['alert_type']:<20} {a['severity']:<8} {a.get('waybill_id') or a.get('node_id')}{extra}")
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server  # the bound port of a port-0 site
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def run_alerts_demo(settings: Settings, stop: asyncio.Event, report: Callable[[str], Any] = print) -> dict[str, Any]:
    """Serve alerts to a local verifying receiver until ``stop``; return and print the summary."""

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver = DemoReceiver(secret, report)
    await receiver.start()
    routing = parse_routes(
        {
            "group_wait_s": 2,
            "receivers": [
                {
                    "name": "demo-cs",
                    "url": receiver.url,
                    "secret": secret,
                    "allow_private_networks": True,
                    "rate_per_s": 200,
                }
            ],
            "routes": [{"receiver": "demo-cs", "types": list(_NOTIFY_TYPES)}],
        }
    )
    service = AlertService(settings, routing, load_rules(settings.alerts.liability_rules_file))
    try:
        await service.run(stop)
    finally:
        await receiver.stop()
    totals = await _totals(settings)
    report(f"alerts: {receiver.received} notifications received and verified ({receiver.bad_signatures} bad signatures)")
    report("liability (yuan): " + (", ".join(f"{k} {v:.2f}" for k, v in totals["by_party_yuan"].items()) or "none"))
    return {"notifications": receiver.received, "bad_signatures": receiver.bad_signatures, **totals}


_NOTIFY_TYPES = (
    "late_dispatch",
    "pickup_timeout",
    "stall",
    "abnormal_segment",
    "misroute",
    "contradiction",
    "likely_lost",
    "suspicious_delivery",
    "hub_incident",
)


def notify_types() -> tuple[str, ...]:
    """The alert types the demo routes to its receiver."""

    return _NOTIFY_TYPES


async def _totals(settings: Settings) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from logiwatch.alerts.ledger import Ledger

    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        t = await Ledger(client, settings.redis.key_prefix, load_rules(settings.alerts.liability_rules_file)).totals()
    finally:
        await client.aclose()
    return {"by_party_yuan": {k: v / 100 for k, v in sorted(t.by_party.items())}, "by_rule_yuan": {k: v / 100 for k, v in sorted(t.by_rule.items())}}
