"""The run's options and its one workload: simulator events generated once,
encoded and split by partition as the producer would, then produced once
into the topic every phase reads.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from logiwatch.bench.figures import EVENTS_PER_PARCEL, PHASES, rate
from logiwatch.detectors.codec import encode_event
from logiwatch.detectors.model import Label, ScanEvent
from logiwatch.detectors.partitioning import partition_for
from logiwatch.errors import ConfigError, LogiwatchError


@dataclass(frozen=True)
class BenchOptions:
    events: int = 1_000_000
    partitions: int = 4
    #: the bare Faust agent counts this prefix only (its per-event cost is flat)
    faust_events: int = 50_000
    #: the bench's own virtualenv for the quixstreams phases (made on first use)
    quix_venv: str = ".venv-quix"
    latency_seconds: float = 15.0
    #: paced rate for the latency phase; default half the measured worker rate
    latency_rate: float | None = None
    skip: frozenset[str] = frozenset()
    seed: int = 7
    #: also profile a one-process worker run with py-spy (an extra worker run)
    profile: bool = False
    #: a worker or engine phase stops its clock after this long and reports the
    #: rate over the events it covered, so a slow build still finishes in time
    phase_seconds: float = 45.0

    def __post_init__(self) -> None:
        if self.events < 1000:
            raise ConfigError(f"--events must be at least 1000, got {self.events}")
        unknown = sorted(set(self.skip) - set(PHASES))
        if unknown:
            raise ConfigError(f"unknown phase(s) to skip: {', '.join(unknown)}; known: {', '.join(PHASES)}")


@dataclass
class Workload:
    events: list[ScanEvent]
    labels: list[Label]
    parcels: int
    #: per partition: (key, value) in offset order
    by_partition: list[list[tuple[bytes, bytes]]]
    start_ms: int

    def prefix(self, n: int) -> Workload:
        """The first ``n`` events (arrival order), for phases that cannot take all of them in time."""

        if n >= len(self.events):
            return self
        events = self.events[:n]
        kept = {ev.waybill_id for ev in events}
        parts: list[list[tuple[bytes, bytes]]] = [[] for _ in self.by_partition]
        for ev in events:
            parts[partition_for(ev.waybill_id, len(parts))].append((ev.waybill_id.encode(), encode_event(ev)))
        labels = [lb for lb in self.labels if lb.waybill_id is None or lb.waybill_id in kept]
        return Workload(
            events=events, labels=labels, parcels=len(kept), by_partition=parts, start_ms=self.start_ms
        )

    @property
    def counts(self) -> list[int]:
        return [len(p) for p in self.by_partition]

    @property
    def total(self) -> int:
        return sum(self.counts)


def build_workload(n_events: int, partitions: int, seed: int, log: Callable[[str], None]) -> Workload:
    """Simulate enough parcels for ``n_events`` scans (truncated to exactly that) and pre-encode them."""

    from logiwatch.sim.traffic import generate

    # Start 30 days ago at midnight UTC, so the journeys are over before now
    # and inside the worker's event-time sanity window whatever the date.
    day_ms = 86_400_000
    start_ms = (int(time.time() * 1000) // day_ms - 30) * day_ms
    parcels = max(1, math.ceil(n_events / EVENTS_PER_PARCEL * 1.05))
    t0 = time.perf_counter()
    events, labels = generate("default", seed=seed, parcels=parcels, start=start_ms)
    if len(events) < n_events:
        extra = math.ceil((n_events - len(events)) / EVENTS_PER_PARCEL * 1.2) + 10
        events, labels = generate("default", seed=seed, parcels=parcels + extra, start=start_ms)
    if len(events) < n_events:
        raise LogiwatchError(f"the simulator gave {len(events)} events, fewer than the {n_events} wanted")
    events = events[:n_events]
    by_partition: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    for ev in events:
        key = ev.waybill_id.encode()
        by_partition[partition_for(ev.waybill_id, partitions)].append((key, encode_event(ev)))
    n_parcels = len({ev.waybill_id for ev in events})
    log(f"workload: {len(events):,} events of {n_parcels:,} parcels in {time.perf_counter() - t0:.1f} s")
    kept = {ev.waybill_id for ev in events}
    labels = [lb for lb in labels if lb.waybill_id is None or lb.waybill_id in kept]
    return Workload(
        events=events, labels=labels, parcels=n_parcels, by_partition=by_partition, start_ms=start_ms
    )


async def produce_batches(
    bootstrap: str, topic: str, by_partition: Sequence[Sequence[tuple[bytes, bytes]]]
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        enable_idempotence=False,  # Tansu rejects aiokafka's InitProducerId
        max_batch_size=1 << 20,
        max_request_size=16 << 20,
        linger_ms=20,
    )
    await producer.start()
    try:
        futures = []
        for partition, records in enumerate(by_partition):
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        # One future per ~1 MiB batch, not per message.
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_workload(bootstrap: str, topic: str, workload: Workload) -> float:
    """Produce every event with explicit partitions; return events/s."""

    t0 = time.perf_counter()
    asyncio.run(produce_batches(bootstrap, topic, workload.by_partition))
    return rate(workload.total, time.perf_counter() - t0)
