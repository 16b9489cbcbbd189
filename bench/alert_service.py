"""Phase ``alert_service``: the real alert service consuming the alerts the
engine phase raised, through its own consume loop, with a local receiver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from logiwatch import stack
from logiwatch.bench.figures import PROGRESS_TIMEOUT_S, rate
from logiwatch.bench.workload import produce_batches
from logiwatch.config import Settings
from logiwatch.detectors.model import Alert
from logiwatch.detectors.partitioning import partition_for
from logiwatch.errors import LogiwatchError


def alert_service_run(
    alerts: Sequence[Alert],
    settings: Settings,
    bootstrap: str,
    redis_url: str,
    partitions: int,
    max_seconds: float,
    cleanup: list[Callable[[], None]],
) -> dict[str, Any]:
    """Alerts/s through the alert service's own consume loop, pipeline and ledger.

    The alerts go to a fresh topic first (keyed by alert id, as the worker
    sends them); then an ``AlertService`` runs in this process, exactly as
    ``logiwatch alerts serve`` does, with one route for every type to a local
    receiver that checks each signature. The clock runs from its first handled
    batch until it has handled them all (or ``max_seconds``): deduplication,
    grouping, alert state and notification queue in Redis, liability ledger;
    notifications are delivered meanwhile and counted, not waited for.
    """

    from logiwatch.detectors.codec import encode_alert

    if not alerts:
        raise LogiwatchError("no alerts to feed the alert service (the engine phase raised none, or was skipped)")
    tag = uuid.uuid4().hex[:8]
    topic, prefix = f"bench-svc-alerts-{tag}", f"lwbench:svc-{tag}:"
    stack.create_topics(bootstrap, {topic: partitions})
    cleanup.append(lambda: stack.delete_topics(bootstrap, [topic]))
    cleanup.append(lambda: stack.delete_redis_prefix(redis_url, prefix))
    by_partition: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    for alert in alerts:
        by_partition[partition_for(alert.alert_id, partitions)].append((alert.alert_id.encode(), encode_alert(alert)))
    asyncio.run(produce_batches(bootstrap, topic, by_partition))
    data = settings.model_dump()
    data["kafka"].update(bootstrap=bootstrap, alerts_group=f"bench-svc-{tag}")
    data["kafka"]["topics"]["alerts"] = topic
    data["redis"] = {"url": redis_url, "key_prefix": prefix}
    data["alerts"].update(api_host="127.0.0.1", api_port=stack.free_port(), public_url="http://127.0.0.1")
    svc_settings = Settings.model_validate(data)
    n = len(alerts)

    # The service announces its board on stdout, which `--json` keeps for the results.
    with contextlib.redirect_stdout(sys.stderr):
        return asyncio.run(_clock(svc_settings, n, max_seconds))


async def _clock(svc_settings: Settings, n: int, max_seconds: float) -> dict[str, Any]:
    """Run the service on the produced alerts; clock its consume loop and count notifications."""

    from logiwatch.alerts.liability import load_rules
    from logiwatch.alerts.routing import parse_routes
    from logiwatch.alerts.service import AlertService
    from logiwatch.demo import NOTIFY_TYPES
    from logiwatch.demo_services import DemoReceiver

    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = DemoReceiver(secret, report=lambda _line: None)
    await receiver.start()
    routing = parse_routes(
        {
            "receivers": [
                {"name": "bench-cs", "url": receiver.url, "secret": secret, "allow_private_networks": True}
            ],
            "routes": [{"receiver": "bench-cs", "types": list(NOTIFY_TYPES)}],
        }
    )
    service = AlertService(svc_settings, routing, load_rules(svc_settings.alerts.liability_rules_file))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    t0: float | None = None
    c0 = done = 0
    notified0 = 0
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    try:
        while True:
            await asyncio.sleep(0.01)
            if task.done():
                task.result()  # raises what stopped the service
                raise LogiwatchError("the alert service stopped before it had handled every alert")
            done = int(service.status["consumed"])
            now = time.perf_counter()
            if t0 is None:
                if done > 0:
                    t0, c0, notified0 = now, done, receiver.received
                elif time.monotonic() > deadline:
                    raise LogiwatchError(f"the alert service consumed nothing in {PROGRESS_TIMEOUT_S:.0f} s")
                continue
            if done >= n or now - t0 >= max_seconds:
                break
        t1, notified = time.perf_counter(), receiver.received - notified0
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await receiver.stop()
    if receiver.bad_signatures:
        raise LogiwatchError(f"{receiver.bad_signatures} notifications had bad signatures")
    if done - c0 < n // 10:
        raise LogiwatchError(f"only {done - c0:,} of {n:,} alerts were clocked: use more --events")
    return {
        "alert_service_aps": rate(done - c0, t1 - t0),
        "alert_service_alerts": n,
        "alert_service_clocked": done - c0,
        "alert_service_notifications": notified,
    }

