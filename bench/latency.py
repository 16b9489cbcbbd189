"""Phase ``latency``: ingest-to-alert latency of a worker fed at a paced rate
(half its sustained rate by default), each alert matched to the scan that
triggered it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from logiwatch import stack
from logiwatch.bench.figures import (
    ALERTS,
    CHECKPOINT_BYTES,
    CONSUMED,
    LATENCY_MIN_EVENTS,
    PROGRESS_TIMEOUT_S,
    TriggerIndex,
    batch_profile,
    match_latencies,
    percentile,
)
from logiwatch.bench.workers import BenchContext, CommittedReader, WorkerSet
from logiwatch.bench.workload import Workload, produce_batches
from logiwatch.detectors.codec import decode_alert, encode_event
from logiwatch.detectors.model import ScanEvent
from logiwatch.detectors.partitioning import partition_for
from logiwatch.errors import LogiwatchError


async def _latency(
    bootstrap: str,
    topic: str,
    alerts_topic: str,
    paced: Sequence[tuple[int, bytes, bytes, ScanEvent]],
    rate_eps: float,
    workers: WorkerSet,
    reader: CommittedReader,
    expected_total: int,
    index: TriggerIndex,
) -> tuple[list[float], list[float], int, int]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    received: list[tuple[str | None, int, float]] = []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    # The worker created the alerts topic at start-up, with its configured partitions.
    await consumer.topics()  # refreshes the metadata cache
    alerts_partitions = consumer.partitions_for_topic(alerts_topic) or set()
    if not alerts_partitions:
        raise LogiwatchError(f"alerts topic {alerts_topic} has no partitions: did the worker start?")
    tps = [TopicPartition(alerts_topic, p) for p in sorted(alerts_partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batches.values():
                for record in records:
                    alert = decode_alert(record.value)
                    received.append((alert.waybill_id, alert.detected_at, now))

    task = asyncio.create_task(consume())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False, linger_ms=2)
    await producer.start()
    try:
        t_start = time.perf_counter()
        sent = 0
        total = len(paced)
        while sent < total:
            due = min(total, int((time.perf_counter() - t_start) * rate_eps) + 1)
            while sent < due:
                partition, key, value, ev = paced[sent]
                index.add(partition, ev.waybill_id, ev.event_time, time.time())
                # The delivery future is not awaited one by one: the producer batches.
                await producer.send(topic, value, key=key, partition=partition)
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while reader.total() < expected_total:
            workers.check_alive()
            if time.monotonic() > deadline:
                raise LogiwatchError("the latency worker did not commit every paced event in time")
            await asyncio.sleep(0.1)
        emitted = int(sum(s.get(ALERTS, 0.0) for s in workers.scrape_all()))
        deadline = time.monotonic() + 30.0
        while len(received) < emitted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await producer.stop()
        await consumer.stop()
    lat, negative = match_latencies(index, received, len(index.warmup_max))
    by_scan = [a for a in received if a[0] is not None and index.is_scan(a[0], a[1])]
    scan_lat, _ = match_latencies(index, by_scan, len(index.warmup_max))
    return lat, scan_lat, negative, len(received)


def latency_phase(ctx: BenchContext, workload: Workload, rate_eps: float, seconds: float) -> dict[str, Any]:
    """p50/p99 ingest-to-alert at ``rate_eps`` on a fresh topic and worker (see ``render_markdown``)."""

    partitions, bootstrap = ctx.partitions, ctx.bootstrap
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    stack.create_topics(bootstrap, {topic: partitions})
    ctx.cleanup.append(lambda: stack.delete_topics(bootstrap, [topic]))
    # Warm up on a prefix (at most ~10 s of worker time at full speed): the
    # first hours of a simulation hold few parcels in flight and few alerts.
    warmup_n = max(1, min(len(workload.events) // 2, int(rate_eps * 2 * 10)))
    # At least LATENCY_MIN_EVENTS, so that a slow build still yields enough alerts for a p99.
    n_paced = min(len(workload.events) - warmup_n, max(LATENCY_MIN_EVENTS, int(rate_eps * seconds)))
    # Arrival order, as the simulator emits them; the partition is Kafka's.
    order = []
    for ev in workload.events[: warmup_n + n_paced]:
        p = partition_for(ev.waybill_id, partitions)
        order.append((p, ev.waybill_id.encode(), encode_event(ev), ev))
    warm: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    warmup_max: list[int | None] = [None] * partitions
    for p, key, value, ev in order[:warmup_n]:
        warm[p].append((key, value))
        warmup_max[p] = max(warmup_max[p] or 0, ev.event_time)
    index = TriggerIndex(partitions, ctx.lateness_ms, warmup_max)
    asyncio.run(produce_batches(bootstrap, topic, warm))
    workers = ctx.workers(1, "lat", topic=topic)
    reader = CommittedReader(bootstrap, workers.group, topic, partitions)
    try:
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while reader.total() < warmup_n:  # joined, restored and running before the clock starts
            workers.check_alive()
            if time.monotonic() > deadline:
                raise LogiwatchError("the latency worker did not consume the warm-up events in time")
            time.sleep(0.1)
        before = workers.scrape_all()[0]
        lat, scan_lat, negative, n_alerts = asyncio.run(
            _latency(
                bootstrap,
                topic,
                workers.alerts_topic,
                order[warmup_n:],
                rate_eps,
                workers,
                reader,
                warmup_n + n_paced,
                index,
            )
        )
        after = workers.scrape_all()[0]
        batches = batch_profile(before, after)
        paced = after.get(CONSUMED, 0.0) - before.get(CONSUMED, 0.0)
        written = after.get(CHECKPOINT_BYTES, 0.0) - before.get(CHECKPOINT_BYTES, 0.0)
    finally:
        reader.close()
        workers.stop()
    if len(lat) < 20:
        raise LogiwatchError(f"only {len(lat)} alerts matched to their trigger: too few for a p99")
    return {
        "latency_p50_ms": percentile(lat, 50),
        "latency_p99_ms": percentile(lat, 99),
        "latency_max_ms": max(lat),
        "latency_matched": len(lat),
        "latency_misattributed": negative,
        # the alerts a scan triggered directly (no deadline arithmetic involved)
        "latency_scan_matched": len(scan_lat),
        "latency_scan_p50_ms": percentile(scan_lat, 50) if scan_lat else None,
        "latency_scan_p99_ms": percentile(scan_lat, 99) if scan_lat else None,
        "latency_alerts": n_alerts,
        "latency_events": n_paced,
        "latency_rate_eps": rate_eps,
        # how the worker handled the paced stream: small batches pay the per-batch cost often
        "latency_batch_events": batches[0] if batches else None,
        "latency_batch_ms": batches[1] * 1000 if batches else None,
        "latency_checkpoint_bytes_per_event": written / paced if paced else None,
    }
