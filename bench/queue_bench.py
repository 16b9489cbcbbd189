"""How fast the CS queue answers with many open alerts: p50/p95 of ``GET /api/queue``.

Writes ``--alerts`` open parcel alerts (default 100,000; types, severities,
merchants, carriers, regions, hubs, amounts and lateness drawn from a seeded
generator) into Redis through :meth:`AlertStore.commit_many`, the same write
path the service uses, under a fresh key prefix; serves the real API app
(:func:`logiwatch.alerts.api.build_app`) on a free port and times ``--repeat``
HTTP round trips per query with aiohttp, sequentially, after a warm-up. Then
deletes its keys. Redis is ``$REDIS_URL`` or ``redis://127.0.0.1:6379/0``.

    .venv/bin/python bench/queue_bench.py [--alerts 100000] [--repeat 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import time
import uuid
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from logiwatch.alerts.api import ApiContext, ApiRunner, build_app
from logiwatch.alerts.ledger import Ledger
from logiwatch.alerts.liability import load_rules
from logiwatch.alerts.metrics import AlertMetrics
from logiwatch.alerts.model import AlertRecord, AlertState
from logiwatch.alerts.pipeline import Pipeline
from logiwatch.alerts.routing import EMPTY
from logiwatch.alerts.store import AlertStore
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity

TYPES = [t for t in AnomalyType if t != AnomalyType.HUB_INCIDENT]
QUERIES = {
    "first page (severity)": "/api/queue",
    "first page (lateness)": "/api/queue?sort=lateness",
    "filter type": "/api/queue?type=stall",
    "filter type+severity+region": "/api/queue?type=stall&severity=critical&region=R3",
    "filter hub, by amount": "/api/queue?hub=HUB-7&sort=amount",
    "filter age (older than 1 h)": "/api/queue?min_age_s=3600",
    "filter age, by lateness": "/api/queue?min_age_s=3600&sort=lateness",
    "filter age, by amount": "/api/queue?min_age_s=3600&sort=amount",
    "filter age > 70 h, by lateness": "/api/queue?min_age_s=252000&sort=lateness",
    "filter type+age, by amount": "/api/queue?type=stall&min_age_s=3600&sort=amount",
    "search waybill": "/api/queue?q=WB-0004242",
    "page at offset 50,000": "/api/queue?offset=50000",
}


def records(n: int, seed: int, now_ms: int) -> list[AlertRecord]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t = rnd.choice(TYPES)
        seen = now_ms - rnd.randint(0, 3 * 86_400_000)
        a = Alert(
            alert_id=f"bench-{i}",
            alert_type=t,
            status=AlertStatus.FIRING,
            severity=rnd.choices([Severity.INFO, Severity.WARNING, Severity.CRITICAL], [2, 6, 2])[0],
            detected_at=seen,
            summary=f"bench alert {i}",
            waybill_id=f"WB-{i:07d}",
            order_id=f"OD-{i:07d}",
            merchant_id=f"M{rnd.randrange(200):04d}",
            carrier_id=f"C{rnd.randrange(8)}",
            node_id=f"HUB-{rnd.randrange(30)}",
            region=f"R{rnd.randrange(10)}",
            order_amount=round(rnd.uniform(5, 2000), 2),
            predicted_lateness_s=rnd.uniform(0, 86_400) if t == AnomalyType.PREDICTED_LATE else None,
            evidence={"dwell_s": rnd.uniform(3600, 90_000), "expected_dwell_p99_s": 23_000.0, "baseline_n": 1240},
        )
        state = AlertState.ACKNOWLEDGED if rnd.random() < 0.1 else AlertState.OPEN
        out.append(AlertRecord(alert=a, state=state, first_seen_ms=seen, updated_ms=seen))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def main(n: int, repeat: int) -> dict[str, Any]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"lwbench:{uuid.uuid4().hex}:"
    client = aioredis.Redis.from_url(url)
    store = AlertStore(client, prefix)
    registry = CollectorRegistry()
    ctx = ApiContext(
        store=store,
        pipeline=Pipeline(store, EMPTY),
        ledger=Ledger(client, prefix, load_rules()),
        metrics=AlertMetrics(registry),
        registry=registry,
        token="bench",
    )
    runner = ApiRunner(build_app(ctx), access_log=None)
    results: dict[str, Any] = {"alerts": n, "repeat": repeat, "redis": url.rsplit("@", 1)[-1], "queries": {}}
    try:
        started = time.perf_counter()
        recs = records(n, 1, int(time.time() * 1000))
        for i in range(0, n, 2000):
            await store.commit_many([(r, None, (), None) for r in recs[i : i + 2000]])
        results["load_seconds"] = round(time.perf_counter() - started, 1)
        await runner.setup()
        port = free_port()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            for name, path in QUERIES.items():
                for _ in range(5):  # warm-up
                    async with http.get(path) as resp:
                        await resp.read()
                times, total = [], None
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    async with http.get(path) as resp:
                        body = await resp.json()
                    times.append((time.perf_counter() - t0) * 1000)
                    assert resp.status == 200, (path, resp.status, body)
                    total = body["total"]
                results["queries"][name] = {"path": path, "matching": total, "p50_ms": round(pct(times, 0.5), 1), "p95_ms": round(pct(times, 0.95), 1)}
    finally:
        await runner.cleanup()
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=10_000)]
        for i in range(0, len(keys), 10_000):
            await client.delete(*keys[i : i + 10_000])
        await client.aclose()
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = asyncio.run(main(args.alerts, args.repeat))
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['alerts']:,} open alerts (loaded in {res['load_seconds']} s), {res['repeat']} requests per query")
        print(f"{'query':32} {'matching':>9} {'p50 ms':>8} {'p95 ms':>8}")
        for name, q in res["queries"].items():
            print(f"{name:32} {q['matching']:>9,} {q['p50_ms']:>8} {q['p95_ms']:>8}")
