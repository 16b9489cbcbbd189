"""Webhook receivers that are down, slow or failing for a long while lose nothing.

The real ``logiwatch alerts serve`` runs as a subprocess on the real broker
and Redis, delivering to five real aiohttp receivers on loopback: one
healthy, one down (nothing listens on its port), one slower than its
timeout, one answering 500 and one answering 429 with ``Retry-After``. The
outage lasts tens of seconds (the "minutes" of the issue, compressed by a
short retry schedule) while two waves of alerts arrive. The healthy
receiver must get every alert during the outage (consumption continues, one
bad receiver never delays another); after recovery every receiver must have
every alert, each under exactly one webhook-id, with nothing dead-lettered.

``FaultReceiver`` and ``AlertsServe`` are reused by the Redis fault tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiohttp import web

from logiwatch import stack
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import SECRET, TOKEN, produce, stall

pytestmark = pytest.mark.slow

OUTAGE_S = 20.0


@dataclass
class Hit:
    webhook_id: str
    alert_id: str
    status: int
    arrived: float


class FaultReceiver:
    """A webhook endpoint on a fixed loopback port that can be down, slow or failing.

    ``mode`` is ``ok``, ``slow`` (answers 200 after ``delay_s``), or an HTTP
    status to answer with; ``down()``/``up()`` close and reopen the listening
    socket, so the sender sees connection refused in between.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = stack.free_port()
        self.mode: str | int = "ok"
        self.delay_s = 0.0
        self.retry_after: str | None = None
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._site: web.TCPSite | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> FaultReceiver:
        self._thread.start()
        self._call(self._setup())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._teardown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _setup(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()

    async def _teardown(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _start_site(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _stop_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def up(self) -> None:
        self._call(self._start_site())

    def down(self) -> None:
        self._call(self._stop_site())

    async def _hook(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        mode = self.mode
        if mode == "slow":
            await asyncio.sleep(self.delay_s)
        status = 200 if mode in ("ok", "slow") else int(mode)
        try:
            alert_id = json.loads(body)["alert"]["alert_id"]
        except (ValueError, KeyError, TypeError):
            alert_id = ""
        with self._lock:
            self.hits.append(Hit(request.headers.get("webhook-id", ""), alert_id, status, arrived))
        headers = {"Retry-After": self.retry_after} if status == 429 and self.retry_after else {}
        return web.json_response({"ok": status == 200}, status=status, headers=headers)

    def ok_hits(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.status == 200]

    def delivered_alerts(self) -> set[str]:
        return {h.alert_id for h in self.ok_hits()}

    def failed_attempts(self) -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.status != 200)


def has_all(r: FaultReceiver, alert_ids: set[str]) -> bool:
    return r.delivered_alerts() == alert_ids


def figures(test: str, **values: object) -> None:
    """One greppable line of measured figures (``pytest -s``) for docs/reliability.md."""

    print(f"\nRELIABILITY {test} " + json.dumps(values, sort_keys=True), flush=True)


def receiver_toml(r: FaultReceiver, timeout_s: float = 5.0, schedule: str = "[0.3, 0.5, 1, 1, 2]") -> str:
    return f"""
[[receivers]]
name = "{r.name}"
url = "{r.url}"
secret = "{SECRET}"
allow_private_networks = true
timeout_s = {timeout_s}
connect_timeout_s = {min(timeout_s, 1.0)}
rate_per_s = 500
retry_schedule_s = {schedule}

[[routes]]
receiver = "{r.name}"
"""


class AlertsServe:
    """``logiwatch alerts serve`` as a subprocess configured by a TOML file."""

    def __init__(self, tmp: Path, bootstrap: str, redis_url: str, prefix: str, routes_toml: str) -> None:
        self.topic = f"fault-alerts-{uuid4().hex}"
        self.ltopic = f"fault-liab-{uuid4().hex}"
        stack.create_topics(bootstrap, {self.topic: 2, self.ltopic: 1})
        self.bootstrap = bootstrap
        self.port = stack.free_port()
        self.log_path = tmp / f"alerts-{self.port}.log"
        routes = tmp / f"routes-{self.port}.toml"
        routes.write_text(routes_toml)
        self.config = tmp / f"alerts-{self.port}.toml"
        self.config.write_text(
            f"""
log_level = "INFO"
log_format = "text"
[kafka]
bootstrap = "{bootstrap}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
alerts_group = "g-{uuid4().hex}"
[kafka.topics]
alerts = "{self.topic}"
liability = "{self.ltopic}"
[redis]
url = "{redis_url}"
key_prefix = "{prefix}"
[alerts]
routes_file = "{routes}"
api_port = {self.port}
api_token = "{TOKEN}"
metrics_port = 0
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_")}
        env.pop("REDIS_URL", None)  # the config file names the Redis under test
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "logiwatch.cli", "--config", str(self.config), "alerts", "serve"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        stack.delete_topics(self.bootstrap, [self.topic, self.ltopic])

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def receivers(self) -> dict[str, dict[str, Any]]:
        data = self.get("/api/receivers")
        return {r["name"]: r for r in data["receivers"]} if data else {}

    def consumed(self) -> int:
        health = self.get("/healthz")
        return int(health.get("consumed", 0)) if health else -1


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    """On one Redis and on a 3-master Redis Cluster (retries, dead letters and deliveries per receiver slot)."""

    return redis_url_both


def test_receivers_down_slow_or_failing_for_a_long_while_get_everything_exactly_once_after_recovery(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    wave1 = [stall(i) for i in range(30)]
    wave2 = [stall(i) for i in range(30, 60)]
    everything = {a.alert_id for a in wave1 + wave2}
    names = ("healthy", "down", "slow", "err500", "err429")
    recv = {n: FaultReceiver(n) for n in names}
    for r in recv.values():
        r.__enter__()
    # Enough retry steps (about 1.5 s apart) to outlast the outage without dead-lettering.
    schedule = "[" + ", ".join(["0.3", "0.6"] + ["1.5"] * 40) + "]"
    routes = "".join(receiver_toml(r, timeout_s=1.0 if n == "slow" else 5.0, schedule=schedule) for n, r in recv.items())
    svc = AlertsServe(tmp_path, kafka_bootstrap, redis_url, redis_prefix, routes)
    try:
        for name, r in recv.items():
            if name != "down":
                r.up()
        recv["slow"].mode, recv["slow"].delay_s = "slow", 3.0
        recv["err500"].mode = 500
        recv["err429"].mode, recv["err429"].retry_after = 429, "1"
        svc.start()
        wait_until(lambda: len(svc.receivers()) == len(names), 40, what=f"service up: {svc.log_tail()}")
        outage_started = time.monotonic()
        produce(kafka_bootstrap, svc.topic, wave1)
        wait_until(lambda: recv["healthy"].delivered_alerts() >= {a.alert_id for a in wave1}, 30, what="healthy gets wave 1")
        produce(kafka_bootstrap, svc.topic, wave2)
        wait_until(lambda: recv["healthy"].delivered_alerts() == everything, 30, what="healthy gets wave 2 during the outage")
        assert svc.consumed() == len(everything), "consumption stalled behind failing receivers"
        # The failing receivers keep being retried for the whole outage, not given up on.
        wait_until(lambda: time.monotonic() - outage_started >= OUTAGE_S, OUTAGE_S + 5, interval=0.5)
        for name in ("slow", "err500", "err429"):
            assert recv[name].failed_attempts() or name == "slow", f"{name} was never tried"
            assert recv[name].delivered_alerts() <= everything
        assert recv["err500"].failed_attempts() >= 2 * len(everything), "500s were not retried repeatedly"
        assert not recv["down"].hits
        queues = svc.receivers()
        assert all(queues[n]["dead_letters"] == 0 for n in names), queues
        assert all(queues[n]["queued"] > 0 for n in ("down", "err500", "err429")), queues
        recovered_at = time.monotonic()
        recv["down"].up()
        recv["slow"].mode = "ok"
        recv["err500"].mode = "ok"
        recv["err429"].mode = "ok"
        for name, r in recv.items():
            wait_until(partial(has_all, r, everything), 60, what=f"{name} gets everything after recovery")
        wait_until(
            lambda: all(q["queued"] == 0 for q in svc.receivers().values()), 30, what="every queue drained"
        )
        queues = svc.receivers()
        assert svc.alive(), svc.log_tail()
    finally:
        svc.close()
        for r in recv.values():
            r.__exit__()
    assert all(q["dead_letters"] == 0 for q in queues.values()), queues
    for name, r in recv.items():
        hits = r.ok_hits()
        ids_per_alert: dict[str, set[str]] = {}
        for h in hits:
            ids_per_alert.setdefault(h.alert_id, set()).add(h.webhook_id)
        assert set(ids_per_alert) == everything, f"{name}: lost {everything - set(ids_per_alert)}"
        assert all(len(ids) == 1 for ids in ids_per_alert.values()), f"{name}: an alert under two webhook-ids"
        repeats = {wid: n for wid, n in Counter(h.webhook_id for h in hits).items() if n > 1}
        if name == "slow":
            # A request the sender timed out on may still have been processed: the same
            # webhook-id arrives again, which is what receivers deduplicate on. Only those.
            slow_ids = {h.webhook_id for h in hits if h.arrived < recovered_at}
            assert set(repeats) <= slow_ids, f"slow: duplicates outside the slow phase {repeats}"
        else:
            assert not repeats, f"{name}: delivered twice {repeats}"
    figures(
        "webhook_receivers_faulty",
        redis="cluster" if redis_url.startswith("redis+cluster") else "single",
        outage_s=round(recovered_at - outage_started, 1),
        alerts=len(everything),
        receivers=len(names),
        failed_attempts={n: r.failed_attempts() for n, r in recv.items()},
        lost=0,
        duplicate_webhook_ids_per_alert=0,
        redelivered_same_id={n: sum(c - 1 for c in Counter(h.webhook_id for h in r.ok_hits()).values()) for n, r in recv.items()},
    )
