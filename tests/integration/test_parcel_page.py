"""The parcel and incident pages against the real alert service and Redis: a parcel's scans
come from the worker's checkpointed state (written here through the worker's own
:class:`SnapshotStore` with a real engine's parcel state, on the partition Kafka's default
partitioner picks), a parcel no longer in state says so, and ledger lines come from the
ledger index (removing a parcel's index set hides its lines; a ledger written before the
index is indexed once), matching a full pass over the ledger."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from logiwatch.alerts.ledger import Ledger
from logiwatch.alerts.ledger_index import index_key
from logiwatch.alerts.liability import load_rules
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import AnomalyType
from logiwatch.detectors.partitioning import partition_for
from logiwatch.sim import traffic as simulator
from logiwatch.streams.state import SnapshotStore
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import (
    HOUR,
    T0,
    ServiceThread,
    produce,
    routes,
    service_settings,
    stall,
)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def engine_state() -> tuple[str, bytes, list[tuple[int, str, str]]]:
    """A parcel still in flight after a real engine ran simulated traffic: its waybill, its
    encoded state as the worker checkpoints it, and its route (time, node, region)."""

    events, _ = simulator.generate("default", seed=5, parcels=80)
    engine = Engine(EngineConfig())
    engine.process(events[: len(events) // 2])
    wb, blob = next((wb, blob) for wb, blob in sorted(engine.take_changes().upserts.items()) if len(engine.state_of(wb).route) >= 3)  # type: ignore[union-attr]
    state = engine.state_of(wb)
    assert state is not None
    return wb, blob, [(t, node, region) for t, _code, node, region in state.route]


async def seed_state(settings: Any, wb: str, blob: bytes) -> None:
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        topics = settings.kafka.topics
        partition = partition_for(wb, topics.events_partitions)
        store = SnapshotStore(client, settings.redis.key_prefix)
        assert await store.save(topics.events, partition, upserts={wb: blob}, deletes=[], models=None, offset=1)
    finally:
        await client.aclose()


async def full_pass(settings: Any) -> list[Any]:
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        ledger = Ledger(client, settings.redis.key_prefix, load_rules())
        return await ledger.entries()  # no waybill: the whole stream
    finally:
        await client.aclose()


async def redis_call(settings: Any, fn: Callable[[aioredis.Redis, Ledger], Any]) -> None:
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        await fn(client, Ledger(client, settings.redis.key_prefix, load_rules()))
    finally:
        await client.aclose()


def test_the_parcel_page_shows_the_workers_scans_and_ledger_lines_from_the_index(
    topic_factory: Callable[..., str], settings_factory: Any, kafka_bootstrap: str
) -> None:
    wb, blob, route = engine_state()
    topic, ltopic = topic_factory("alerts"), topic_factory("liability", 1)
    settings = service_settings(settings_factory, topic, ltopic, "g-parcel-page")
    asyncio.run(seed_state(settings, wb, blob))
    charged = stall(0, detected_at=T0 + 30 * HOUR, promised_delivery_by=T0 + HOUR)  # breaks the promise: a charge
    incident = stall(9, alert_id="inc-page", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, detected_at=T0 + 31 * HOUR,
                     affected_waybills=("WB0",))
    with ServiceThread(settings, routes({})) as svc:
        produce(kafka_bootstrap, topic, [charged, incident])
        wait_until(lambda: svc.consumed == 2, 60, what="alerts consumed")

        page = get(f"{svc.url}/api/parcels/{wb}")
        scans = page["scans"]
        assert scans["in_state"] is True
        assert scans["partition"] == partition_for(wb, settings.kafka.topics.events_partitions)
        assert [(s["at_ms"], s["node_id"], s["region"]) for s in scans["scans"]] == route
        assert all(s["detail"] and s["event_type"] in s["detail"] for s in scans["scans"])

        gone = get(f"{svc.url}/api/parcels/WB-not-in-state")["scans"]
        assert gone["in_state"] is False and gone["scans"] == [] and "not in the worker's state" in gone["note"]

        # ledger lines of the parcel and of the incident: the same as a full pass finds
        everything = asyncio.run(full_pass(settings))
        mine = [e.entry_id for e in everything if e.waybill_id == "WB0"]
        wait_until(lambda: len(get(f"{svc.url}/api/parcels/WB0")["liability"]) == len(mine) > 0, 20, what="the charge on the parcel page")
        assert [e["entry_id"] for e in get(f"{svc.url}/api/parcels/WB0")["liability"]] == mine
        cited = [e.entry_id for e in everything if "inc-page" in e.evidence]
        assert cited  # the incident moved the charge to the platform
        assert [e["entry_id"] for e in get(f"{svc.url}/api/incidents/inc-page")["liability_entries"]] == cited

        # the page reads the index, not the ledger: without the parcel's index set it shows no line
        async def drop_index(client: aioredis.Redis, ledger: Ledger) -> None:
            await client.delete(index_key(ledger.key, "parcel", "WB0"))

        asyncio.run(redis_call(settings, drop_index))
        assert get(f"{svc.url}/api/parcels/WB0")["liability"] == []

        # a ledger written before the index: a fresh reader indexes it once
        async def backfill(client: aioredis.Redis, ledger: Ledger) -> None:
            await client.delete(ledger.key("ix:version"))
            assert await ledger.index.ensure() == len(everything)
            assert [e.entry_id for e in await ledger.entries(waybill="WB0")] == mine
            assert await ledger.index.ensure() == 0

        asyncio.run(redis_call(settings, backfill))
