"""Redis sizing: commands and memory per event (workers) and per alert (alert service), measured.

``python -m logiwatch.bench.redis_sizing --events 100000 --workers 2`` starts
its own Tansu broker and its own 3-master Redis Cluster (the same code as the
test fixtures), produces simulator events to a 16-partition topic, runs
``logiwatch worker`` processes on it and then the alert service on the
alerts the engine raises from the same events, and reads every master's
``INFO`` before and after each phase: ``total_commands_processed`` and
``used_memory``. It prints one JSON object; docs/operations.md turns it into
ops/s and memory per 1,000 events/s. ``--redis URL`` measures another Redis
instead (its ``INFO`` must be readable, and nothing else should use it meanwhile).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from logiwatch import stack
from logiwatch.bench.alert_service import alert_service_run
from logiwatch.bench.workers import BenchContext, measure_workers
from logiwatch.bench.workload import build_workload, produce_workload
from logiwatch.config import Settings
from logiwatch.redisconn import connect_sync, scan_keys

PARTITIONS = 16


def node_stats(url: str) -> list[dict[str, int]]:
    """Per master: commands processed so far, memory in use, keys."""

    from redis.cluster import RedisCluster

    client = connect_sync(url)
    try:
        if isinstance(client, RedisCluster):  # in a stable order: the deltas pair node with node
            nodes = [client.get_redis_connection(n) for n in sorted(client.get_primaries(), key=lambda n: n.name)]
        else:
            nodes = [client]
        out = []
        for node in nodes:
            info = node.info("all")
            out.append(
                {
                    "commands": int(info["total_commands_processed"]),
                    "used_memory": int(info["used_memory"]),
                    "keys": int(node.dbsize()),
                }
            )
        return out
    finally:
        client.close()


def delta(before: list[dict[str, int]], after: list[dict[str, int]], field: str) -> list[int]:
    return [a[field] - b[field] for b, a in zip(before, after, strict=True)]


def parcels_held(url: str, prefix: str) -> int:
    """Parcel states in the workers' snapshots (HLEN over every partition's parcels hash)."""

    client = connect_sync(url)
    try:
        return sum(int(client.hlen(k)) for k in scan_keys(client, f"{prefix}parcels:*"))
    finally:
        client.close()


def key_kind(rest: str) -> str:
    """``parcels``, ``models``, ``alerts.alert``, ``alerts.index``, ``ledger``... of a key without its prefix."""

    import re

    if rest.startswith("alerts:"):
        rest = rest[len("alerts:") :]
        return "alerts.index" if rest.startswith("{") else "alerts." + re.split(r"[:{]", rest, maxsplit=1)[0]
    if rest.startswith("liability:"):
        return "ledger"
    return re.split(r"[:{]", rest, maxsplit=1)[0]


def memory_by_kind(url: str, prefix: str) -> dict[str, int]:
    """MEMORY USAGE summed per key kind under ``prefix``."""

    client = connect_sync(url)
    out: dict[str, int] = {}
    try:
        for key in scan_keys(client, f"{prefix}*"):
            text = key.decode() if isinstance(key, bytes) else key
            kind = key_kind(text[len(prefix) :])
            out[kind] = out.get(kind, 0) + int(client.memory_usage(key, samples=0) or 0)
        return out
    finally:
        client.close()


def service_prefix(url: str) -> str | None:
    """The prefix the alert-service phase wrote under (``lwbench:svc-<tag>:``), found by SCAN."""

    client = connect_sync(url)
    try:
        for key in scan_keys(client, "lwbench:svc-*"):
            text = key.decode() if isinstance(key, bytes) else key
            return ":".join(text.split(":", 2)[:2]) + ":"
        return None
    finally:
        client.close()


def measure(n_events: int, n_workers: int, redis_url: str, workdir: Path, log: Any) -> dict[str, Any]:
    from logiwatch.detectors.engine import EngineConfig
    from logiwatch.detectors.runner import interleave_ticks, run_partitioned

    broker = stack.start_tansu(stack.free_port(), workdir / "tansu", timeout=60.0)
    cleanup: list[Any] = []
    try:
        workload = build_workload(n_events, PARTITIONS, 7, log)
        topic = "sizing-events"
        stack.create_topics(broker.url, {topic: PARTITIONS})
        produce_workload(broker.url, topic, workload)
        settings = Settings()
        ctx = BenchContext(
            broker.url, topic, PARTITIONS, workload.total, redis_url, workdir, 10_000,
            settings.worker.allowed_lateness_ms, 90.0, cleanup, [],
        )  # fmt: skip
        before = node_stats(redis_url)
        workers = ctx.workers(n_workers, f"sizing{n_workers}")
        try:
            run = measure_workers(workers, ctx, max_seconds=ctx.phase_seconds)
            time.sleep(settings.worker.commit_interval_s * 2)  # the last checkpoints land
            after = node_stats(redis_url)
            held = parcels_held(redis_url, workers.prefix)
            worker_kinds = memory_by_kind(redis_url, workers.prefix)
        finally:
            workers.stop()
        consumed = workload.total  # every worker consumed everything before its clock stopped, or this many
        cmds = delta(before, after, "commands")
        mem = delta(before, after, "used_memory")
        log(f"workers: {run.eps:,.0f} events/s, {sum(cmds):,} Redis commands, {sum(mem):,} bytes, {held:,} parcels held")
        conf = EngineConfig(allowed_lateness_ms=settings.worker.allowed_lateness_ms)
        alerts = run_partitioned(list(interleave_ticks(workload.events, 3_600_000)), PARTITIONS, conf)
        svc_before = node_stats(redis_url)
        svc = alert_service_run(alerts, settings, broker.url, redis_url, PARTITIONS, 120.0, cleanup)
        svc_after = node_stats(redis_url)
        svc_prefix = service_prefix(redis_url)
        svc_kinds = memory_by_kind(redis_url, svc_prefix) if svc_prefix else {}
        svc_cmds = delta(svc_before, svc_after, "commands")
        svc_mem = delta(svc_before, svc_after, "used_memory")
        return {
            "redis": "cluster" if redis_url.startswith("redis+cluster") else "single",
            "masters": len(before),
            "partitions": PARTITIONS,
            "workers": n_workers,
            "events": consumed,
            "parcels": workload.parcels,
            "worker_eps": run.eps,
            "worker_commands": sum(cmds),
            "worker_commands_per_node": cmds,
            "worker_commands_per_event": sum(cmds) / consumed,
            "worker_memory_bytes": sum(mem),
            "parcels_held": held,
            "worker_memory_by_kind": worker_kinds,
            "worker_parcel_bytes_per_parcel_held": worker_kinds.get("parcels", 0) / held if held else None,
            "alert_memory_by_kind": svc_kinds,
            "alerts": len(alerts),
            "alerts_per_event": len(alerts) / len(workload.events),
            "alert_service_aps": svc.get("alert_service_aps"),
            "alert_commands": sum(svc_cmds),
            "alert_commands_per_node": svc_cmds,
            "alert_commands_per_alert": sum(svc_cmds) / len(alerts),
            "alert_memory_bytes": sum(svc_mem),
            "alert_bytes_per_alert": sum(svc_mem) / len(alerts),
        }
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:  # clean-up must not hide the figures
                log(f"clean-up: {exc}")
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logiwatch.bench.redis_sizing", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis", default=None, help="measure this Redis instead of a fresh 3-master cluster")
    parser.add_argument("--single", action="store_true", help="a fresh single redis-server instead of the cluster")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="lw-sizing-") as tmp:
        workdir = Path(tmp)
        own: Any = None
        if not args.redis:
            if args.single:
                own = stack.start_redis(stack.free_port(), workdir / "redis")
            else:
                own = stack.start_redis_cluster(workdir / "cluster")
        try:
            result = measure(args.events, args.workers, args.redis or own.url, workdir, log)
        finally:
            if own is not None:
                own.stop()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
