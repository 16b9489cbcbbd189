"""The receiver's throughput for ``logiwatch bench`` (phase ``ingest``).

Starts ``logiwatch ingest serve`` as its own process (the real command, on a
free port, against the bench's broker and Redis), then posts signed
AfterShip-style pushes built from the workload's scans (each push resends
the parcel's whole history so far, as feeds do) from ``concurrency``
connections until every push is answered or the phase budget runs out.
The clock runs from the first request to the last answer; every 200 means
the push's new scans were acknowledged by Kafka, so scans/s is "through to
Kafka". The counts come from the receiver's own ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logiwatch.detectors.model import ScanEvent
from logiwatch.streams.ingest.pushes import aftership_push, pushed


def _scrape_sum(text: str, name: str, label: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def receiver_throughput(
    bootstrap: str,
    redis_url: str,
    events: Sequence[ScanEvent],
    seconds: float,
    workdir: Path,
    port: int,
    concurrency: int = 16,
) -> dict[str, Any]:
    """Pushes/s and scans/s of the receiver; raises when it cannot start or nothing is accepted."""

    secret = uuid.uuid4().hex
    prefix = f"lwbench-ingest:{uuid.uuid4().hex[:8]}:"
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_")}
    env.update(
        LOGIWATCH_KAFKA__BOOTSTRAP=bootstrap,
        LOGIWATCH_KAFKA__TOPICS__EVENTS=topic,
        LOGIWATCH_REDIS__URL=redis_url,
        LOGIWATCH_REDIS__KEY_PREFIX=prefix,
        LOGIWATCH_INGEST__AFTERSHIP_SECRET=secret,
        LOGIWATCH_LOG_LEVEL="WARNING",
    )
    log = open(workdir / "ingest-serve.log", "ab")
    cmd = [sys.executable, "-m", "logiwatch.cli", "ingest", "serve", "--port", str(port),
           "--duration", str(seconds + 120)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest serve did not start; see {workdir / 'ingest-serve.log'}")
            time.sleep(0.1)
        histories: dict[str, list[ScanEvent]] = {}
        bodies: list[tuple[bytes, dict[str, str]]] = []
        now_s = time.time()
        for ev in sorted(pushed(events), key=lambda e: e.event_time):
            h = histories.setdefault(ev.waybill_id, [])
            h.append(ev)
            bodies.append(aftership_push(h, secret, now_s))
        figures = asyncio.run(_post_all(base, bodies, seconds, concurrency))
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        produced = _scrape_sum(text, "logiwatch_ingest_scans_total", 'outcome="produced"')
        duplicate = _scrape_sum(text, "logiwatch_ingest_scans_total", 'outcome="duplicate"')
        if not figures["ok"]:
            raise RuntimeError(f"no push was accepted ({figures['failed']} failed)")
        wall = figures["seconds"]
        return {
            "ingest_pushes_per_s": figures["ok"] / wall,
            "ingest_scans_per_s": produced / wall,
            "ingest_pushes": figures["ok"],
            "ingest_failed": figures["failed"],
            "ingest_scans_produced": int(produced),
            "ingest_scans_duplicate": int(duplicate),
            "ingest_concurrency": concurrency,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        from logiwatch import stack

        stack.delete_redis_prefix(redis_url, prefix)
        stack.delete_topics(bootstrap, [topic])


async def _post_all(base: str, bodies: list[tuple[bytes, dict[str, str]]], seconds: float, concurrency: int) -> dict[str, Any]:
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
