"""The processes and the receiver ``logiwatch demo`` starts: its worker subprocess and a verifying webhook endpoint.

Split from :mod:`logiwatch.demo` (the run itself); the benchmark's alert-service phase uses
the receiver too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logiwatch import stack
from logiwatch.config import Settings
from logiwatch.errors import LogiwatchError

if TYPE_CHECKING:
    from aiohttp import web

#: How long (event time) the demo's worker waits for a front-door parcel's registration. The
#: join's wait runs on event time, and the demo compresses about six hours into a second, so
#: the default ten minutes would be a few milliseconds of the run: six hours is about a second.
JOIN_WAIT_MS = 6 * 3600_000


def _reachable(host: str) -> str:
    """Where to reach a server bound to ``host``: loopback for a wildcard address.

    >>> _reachable("0.0.0.0"), _reachable("10.1.2.3"), _reachable("::1")
    ('127.0.0.1', '10.1.2.3', '[::1]')
    """

    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class Worker:
    """The ``logiwatch worker`` subprocess of this run, configured through ``LOGIWATCH_*``."""

    def __init__(self, settings: Settings, log_path: Path, config: str | None) -> None:
        k, t = settings.kafka, settings.kafka.topics
        env = {
            **os.environ,
            "LOGIWATCH_KAFKA__BOOTSTRAP": k.bootstrap,
            "LOGIWATCH_KAFKA__TOPICS__EVENTS": t.events,
            "LOGIWATCH_KAFKA__TOPICS__ALERTS": t.alerts,
            "LOGIWATCH_KAFKA__TOPICS__DLQ": t.dlq,
            "LOGIWATCH_KAFKA__TOPICS__LIABILITY": t.liability,
            "LOGIWATCH_KAFKA__TOPICS__SHIPMENTS": t.shipments,
            "LOGIWATCH_WORKER__JOIN_WAIT_MS": str(JOIN_WAIT_MS),
            "LOGIWATCH_KAFKA__WORKER_GROUP": k.worker_group,
            "LOGIWATCH_REDIS__URL": settings.redis.url,
            "LOGIWATCH_REDIS__KEY_PREFIX": settings.redis.key_prefix,
            "LOGIWATCH_WORKER__METRICS_PORT": str(settings.worker.metrics_port),
            "LOGIWATCH_STACK__STATE_DIR": str(settings.stack.state_dir),
            "LOGIWATCH_LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", "logiwatch.cli"] + (["--config", config] if config else []) + ["worker"]
        self.log_path = log_path
        self.metrics_url = f"http://{_reachable(settings.worker.metrics_host)}:{settings.worker.metrics_port}/metrics"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:  # the latest run's log only
            # Its own session: a Ctrl-C in the terminal reaches only the demo,
            # which then stops the worker in order (after the drain).
            self.popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def failed(self, what: str) -> LogiwatchError:
        return LogiwatchError(f"the worker {what} (exit status {self.popen.poll()}); see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (it checkpoints and commits), SIGKILL after ``timeout``."""

        stack.stop_pid(self.popen.pid, timeout=timeout, popen=self.popen)
        return self.popen.returncode


# --------------------------------------------------------------------------- the receiver and the alert service


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
        from aiohttp import web

        from logiwatch.alerts.webhooks import verify

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
        from aiohttp import web

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
