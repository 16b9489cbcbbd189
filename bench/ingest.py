"""Phase ``ingest``: the front door's throughput, pushes/s and scans/s through to Kafka.

Starts ``logiwatch ingest serve`` as its own process (the real command, on a
free port, against the bench's broker and Redis, a fresh events topic and
key prefix), then posts signed AfterShip-style pushes built from the
workload's scans by :mod:`logiwatch.streams.ingest.pushes`: each push
resends the parcel's whole history so far, as the feeds do, so most of a
push's checkpoints are dropped by the receiver's dedup and one is new.
``concurrency`` connections post until every push is answered or the phase
budget runs out. The clock runs from the first request to the last answer;
a 200 means the push's new scans were acknowledged by Kafka, so scans/s is
"through to Kafka". The counts come from the receiver's own ``/metrics``.
The pushes are built before the clock starts.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logiwatch import stack
from logiwatch.bench.processes import spawn
from logiwatch.detectors.model import ScanEvent
from logiwatch.errors import LogiwatchError
from logiwatch.streams.ingest.pushes import aftership_push, pushed

#: connections posting at once (a vendor's webhook workers)
CONCURRENCY = 16
#: pushes built per second of phase budget (building costs time too; more than the receiver takes)
PUSHES_PER_BUDGET_S = 3_000


def _scrape_sum(text: str, name: str, label: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def build_pushes(events: Sequence[ScanEvent], secret: str, limit: int) -> list[tuple[bytes, dict[str, str]]]:
    """Up to ``limit`` signed history resends, in event-time order of their newest checkpoint."""

    histories: dict[str, list[ScanEvent]] = {}
    bodies: list[tuple[bytes, dict[str, str]]] = []
    now_s = time.time()
    for ev in sorted(pushed(events), key=lambda e: e.event_time):
        history = histories.setdefault(ev.waybill_id, [])
        history.append(ev)
        bodies.append(aftership_push(history, secret, now_s))
        if len(bodies) >= limit:
            break
    return bodies


def ingest_phase(
    bootstrap: str, redis_url: str, events: Sequence[ScanEvent], seconds: float, workdir: Path
) -> dict[str, Any]:
    """Pushes/s and scans/s of the receiver; raises when it cannot start or nothing is accepted."""

    secret = uuid.uuid4().hex
    prefix = f"lwbench-ingest:{uuid.uuid4().hex[:8]}:"
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    stack.create_topics(bootstrap, {topic: 4})
    port = stack.free_port()
    env = {
        "LOGIWATCH_KAFKA__BOOTSTRAP": bootstrap,
        "LOGIWATCH_KAFKA__TOPICS__EVENTS": topic,
        "LOGIWATCH_REDIS__URL": redis_url,
        "LOGIWATCH_REDIS__KEY_PREFIX": prefix,
        "LOGIWATCH_INGEST__AFTERSHIP_SECRET": secret,
        "LOGIWATCH_INGEST__HOST": "127.0.0.1",
        "LOGIWATCH_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "logiwatch.cli", "ingest", "serve", "--port", str(port)]
    cmd += ["--duration", str(seconds + 120)]
    bodies = build_pushes(events, secret, int(seconds * PUSHES_PER_BUDGET_S))
    proc = spawn("ingest-serve", cmd, workdir, env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc.check_alive)
        figures = asyncio.run(_post_all(base, bodies, seconds, CONCURRENCY))
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        proc.stop()
        stack.delete_redis_prefix(redis_url, prefix)
        stack.delete_topics(bootstrap, [topic])
    if not figures["ok"]:
        raise LogiwatchError(f"no push was accepted ({figures['failed']} answered otherwise); see {proc.log_path}")
    produced = _scrape_sum(text, "logiwatch_ingest_scans_total", 'outcome="produced"')
    duplicate = _scrape_sum(text, "logiwatch_ingest_scans_total", 'outcome="duplicate"')
    wall = figures["seconds"]
    return {
        "ingest_pushes_per_s": figures["ok"] / wall,
        "ingest_scans_per_s": produced / wall,
        "ingest_pushes": figures["ok"],
        "ingest_failed": figures["failed"],
        "ingest_built": len(bodies),
        "ingest_scans_produced": int(produced),
        "ingest_scans_duplicate": int(duplicate),
        "ingest_concurrency": CONCURRENCY,
        "ingest_seconds": wall,
    }


def _wait_healthy(base: str, check_alive: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        check_alive()
        if time.monotonic() > deadline:
            raise LogiwatchError(f"ingest serve did not answer /healthz within {timeout_s:.0f} s")
        time.sleep(0.1)


async def _post_all(
    base: str, bodies: list[tuple[bytes, dict[str, str]]], seconds: float, concurrency: int
) -> dict[str, Any]:
    import aiohttp

    queue = list(reversed(bodies))
    ok = failed = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    last = t0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, failed, last
        while queue and time.perf_counter() < deadline:
            body, headers = queue.pop()
            async with session.post(base + "/v1/feeds/aftership", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                else:
                    failed += 1
            last = time.perf_counter()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"ok": ok, "failed": failed, "seconds": max(1e-9, last - t0)}
