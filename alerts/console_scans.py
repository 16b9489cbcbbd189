"""A parcel's scans for the console, read from the worker's checkpointed parcel state.

The alert service stores no scans; the worker does, in the parcel state it checkpoints to
Redis per events partition (:mod:`logiwatch.streams.state`). The partition of a waybill is
Kafka's default partitioner on the key (the waybill, as every logiwatch producer keys
events), taken over ``kafka.topics.events_partitions`` (the count logiwatch creates the topic
with: a topic made elsewhere with another count sends the reader to the wrong partition, and
the page then says the parcel is not in state), so one ``HGET`` on that partition's parcels
hash finds it. The key comes only from :meth:`SnapshotStore.keys`, so a change of
the key layout there (say, hash tags for Redis Cluster) reaches this reader unchanged.

A parcel leaves the worker's state when its journey ends (delivered or returned, after the
retention) or when it falls silent for good; then the page says so instead of showing
nothing. The state keeps at most ``detection.max_route`` scans (the first two and the
latest), which the page says too when the route is that long.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from logiwatch.alerts.console import iso
from logiwatch.config import Settings
from logiwatch.detectors.errors import StateError
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.state import TYPES, ParcelState
from logiwatch.streams.state import SnapshotStore

_decoder = msgspec.msgpack.Decoder(ParcelState)

#: What each scan type means, in the words a CS agent would use on the phone.
_WORDS = {
    "ORDER_PAID": "order paid",
    "DISPATCHED": "handed over by the merchant",
    "PICKED_UP": "picked up by the carrier",
    "HUB_ARRIVED": "arrived at the hub",
    "HUB_DEPARTED": "left the hub",
    "OUT_FOR_DELIVERY": "out for delivery",
    "DELIVERED": "delivered",
    "DELIVERY_FAILED": "delivery attempt failed",
    "EXCEPTION": "carrier reported an exception",
    "RETURNED": "returned to the sender",
}


class ScanReader:
    """Reads one parcel's route from the worker's state (one HGET)."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, events_topic: str, partitions: int, max_route: int) -> None:
        self.client = client
        self.snapshots = SnapshotStore(client, key_prefix)
        self.events_topic = events_topic
        self.partitions = partitions
        self.max_route = max_route

    @classmethod
    def from_settings(cls, client: aioredis.Redis, settings: Settings) -> ScanReader:
        topics = settings.kafka.topics
        return cls(client, settings.redis.key_prefix, topics.events, topics.events_partitions, settings.detection.max_route)

    def state_key(self, waybill: str) -> tuple[str, int]:
        """The parcels hash holding ``waybill`` and its partition."""

        partition = partition_for(waybill, self.partitions)
        return self.snapshots.keys(self.events_topic, partition)[0], partition

    async def scans(self, waybill: str) -> dict[str, Any]:
        """``{"in_state", "partition", "scans": [...], "note"}`` for the parcel page."""

        key, partition = self.state_key(waybill)
        base: dict[str, Any] = {"in_state": False, "partition": partition, "scans": []}
        try:
            raw = await self.client.hget(key, waybill)
        except RedisError as exc:
            return {**base, "note": f"the worker's state could not be read: {type(exc).__name__}"}
        if raw is None:
            return {
                **base,
                "note": "not in the worker's state: its journey ended (delivered or returned) or it was never seen "
                f"on {self.events_topic} partition {partition}; the alerts below say where it was last seen",
            }
        try:
            blob = SnapshotStore.stored_value(raw if isinstance(raw, bytes) else str(raw).encode(), waybill)
            state = _decoder.decode(blob)
        except (msgspec.DecodeError, msgspec.ValidationError, StateError) as exc:
            return {**base, "note": f"the worker's state of this parcel is unreadable: {str(exc)[:120]}"}
        scans = [scan_row(entry) for entry in state.route]
        note = ""
        if len(scans) >= self.max_route:
            note = f"the worker keeps at most {self.max_route} scans per parcel (the first two and the latest): earlier ones may be left out"
        return {**base, "in_state": True, "scans": scans, "note": note}


def scan_row(entry: tuple[int, int, str, str]) -> dict[str, Any]:
    """One route entry (time, type code, node, region) as a table row.

    >>> scan_row((1_790_000_000_000, 3, "HUB-SH-1", "SH"))["detail"]
    'HUB_ARRIVED: arrived at the hub'
    """

    at_ms, code, node, region = entry
    kind = TYPES[code].value if 0 <= code < len(TYPES) else f"type {code}"
    return {"at_ms": at_ms, "at": iso(at_ms), "event_type": kind, "node_id": node, "region": region, "detail": f"{kind}: {_WORDS.get(kind, kind.lower())}"}
