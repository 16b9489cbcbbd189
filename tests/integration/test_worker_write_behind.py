"""Write-behind checkpoints of the partition-batch handler, on the real Redis and broker.

With ``write_behind`` (how the app runs) a due checkpoint encodes the
changes in the handler and writes them in a task, so detection goes on while
the acknowledgements and the Redis write are pending. These tests hold the
acknowledgements of the records the worker produces behind a gate (the
records are really produced; only the worker's view of their acks waits) to
pin down the ordering rules: nothing reaches Redis before the records it
covers are acknowledged, an offset is reported committable only once its
snapshot is in Redis, a write stuck for a whole checkpoint interval pauses
the handler, and an engine failure rebuilds from the landed snapshot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from logiwatch.detectors.codec import encode_event
from logiwatch.streams.state import Snapshot, SnapshotStore
from logiwatch.streams.worker import BatchOutcome, BatchWorker, PartitionEngine
from tests.integration.test_worker_batch import Rec, paid, poisoned_factory, real_factory
from tests.integration.test_worker_batch import Rig as BatchRig

#: how long a test waits for something that should happen at once (not a timing assertion)
PATIENCE_S = 30.0


def batch(topic: str, first_offset: int, waybills: Sequence[str | None]) -> list[Rec]:
    """Records from ``first_offset``; a None waybill is an undecodable record (a dead letter to produce)."""

    out = []
    for i, wb in enumerate(waybills):
        offset = first_offset + i
        value = b"not an event" if wb is None else encode_event(paid(offset, wb))
        out.append(Rec(offset, value, None if wb is None else wb.encode(), topic))
    return out


class GatedSink:
    """Produces for real; the acknowledgements it hands back resolve only once ``gate`` is set."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.gate = asyncio.Event()

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        ack = await self.producer.send(
            topic, value=value, key=key, headers=list(headers) if headers else None
        )

        async def gated() -> Any:
            await self.gate.wait()
            return await ack

        return asyncio.ensure_future(gated())


@dataclass
class Rig(BatchRig):
    """The batch tests' rig, running a scenario on a write-behind worker with gated acknowledgements."""

    def run_gated(
        self,
        scenario: Callable[[BatchWorker, GatedSink, SnapshotStore], Awaitable[None]],
        factory: Callable[[Snapshot], PartitionEngine] = real_factory,
        checkpoint_interval_s: float = 3600.0,
        checkpoint_max_records: int = 0,
    ) -> None:
        async def main() -> None:
            async with self.worker(
                factory,
                GatedSink,
                checkpoint_interval_s=checkpoint_interval_s,
                checkpoint_max_records=checkpoint_max_records,
                write_behind=True,
            ) as (worker, sink, store):
                assert isinstance(sink, GatedSink)
                try:
                    await scenario(worker, sink, store)
                finally:
                    sink.gate.set()

        asyncio.run(main())


@pytest.fixture
def rig(kafka_bootstrap: str, redis_url: str, redis_prefix: str, worker_topics: tuple[str, str, str]) -> Rig:
    return Rig(kafka_bootstrap, redis_url, redis_prefix, *worker_topics)


async def landed(worker: BatchWorker) -> dict[tuple[str, int], int]:
    """Poll the between-fetches checkpoint until a write is reported (as the consumer does)."""

    deadline = time.monotonic() + PATIENCE_S
    while True:
        done = await worker.checkpoint(force=False)
        if done:
            return done
        assert time.monotonic() < deadline, "no snapshot write was reported"
        await asyncio.sleep(0.01)


def test_detection_goes_on_while_a_checkpoint_waits_for_its_acknowledgements(rig: Rig) -> None:
    events = rig.events
    seen: list[Any] = []

    async def scenario(worker: BatchWorker, sink: GatedSink, store: SnapshotStore) -> None:
        # Due at once (two events); the dead letter's ack is held back.
        seen.append(await worker.handle(batch(events, 0, ["WB1", None, "WB4"]), None))
        seen.append(await worker.handle(batch(events, 3, ["WB2"]), None))  # not due yet
        seen.append(await store.load(events, 0))  # nothing written before the ack
        seen.append(await worker.checkpoint(force=False))  # nothing landed either
        sink.gate.set()
        seen.append(await landed(worker))  # the first snapshot, covering 0..2 only
        seen.append(await store.load(events, 0))
        seen.append(await worker.checkpoint(force=True))  # the rest, waited for
        seen.append(await store.load(events, 0))

    rig.run_gated(scenario, checkpoint_max_records=2)
    first, second, before, not_yet, first_landed, after_first, forced, after_all = seen
    assert first == BatchOutcome() and second == BatchOutcome()
    assert isinstance(before, Snapshot) and before.offset is None and not before.parcels
    assert not_yet == {}
    assert first_landed == {(events, 0): 3}
    assert after_first.offset == 3 and set(after_first.parcels) == {"WB1", "WB4"}
    assert forced == {(events, 0): 4}
    assert after_all.offset == 4 and set(after_all.parcels) == {"WB1", "WB4", "WB2"}


def test_a_write_stuck_for_a_checkpoint_interval_pauses_the_handler(rig: Rig) -> None:
    events = rig.events
    seen: list[Any] = []

    async def scenario(worker: BatchWorker, sink: GatedSink, store: SnapshotStore) -> None:
        await worker.handle(batch(events, 0, ["WB1", None]), None)  # due: its write waits on the gate
        await asyncio.sleep(0.01)  # longer than the checkpoint interval
        # So the next due checkpoint finds the write stuck and waits for it:
        # the handler does not return.
        second = asyncio.ensure_future(worker.handle(batch(events, 2, ["WB2"]), None))
        await asyncio.sleep(0.2)
        seen.append(second.done())
        sink.gate.set()
        seen.append(await asyncio.wait_for(second, PATIENCE_S))
        seen.append(await worker.checkpoint(force=True))
        seen.append(await store.load(events, 0))

    rig.run_gated(scenario, checkpoint_interval_s=0.001, checkpoint_max_records=1)
    paused, outcome, forced, snap = seen
    assert paused is False
    # It reports the write it waited for; its own write started behind it.
    assert outcome == BatchOutcome(commit_offset=2)
    assert forced == {(events, 0): 3}
    assert snap.offset == 3 and set(snap.parcels) == {"WB1", "WB2"}


def test_an_engine_failure_during_a_write_rebuilds_from_the_snapshot_once_it_lands(rig: Rig) -> None:
    events = rig.events
    seen: list[Any] = []

    async def scenario(worker: BatchWorker, sink: GatedSink, store: SnapshotStore) -> None:
        await worker.handle(batch(events, 0, ["WB0", None, "WB4"]), None)  # write of 0..2 waits on the gate
        await worker.handle(batch(events, 3, ["WB1"]), None)  # not due: only in memory
        failing = asyncio.ensure_future(worker.handle(batch(events, 4, ["WB2", "WB-POISON", "WB3"]), None))
        await asyncio.sleep(0.2)
        seen.append(failing.done())  # the rebuild waits for the write in flight
        sink.gate.set()
        await asyncio.wait_for(failing, PATIENCE_S)
        seen.append(await worker.checkpoint(force=True))
        seen.append(await store.load(events, 0))

    rig.run_gated(scenario, poisoned_factory, checkpoint_max_records=2)
    waited, forced, snap = seen
    assert waited is False
    assert forced == {(events, 0): 7}
    # Rebuilt from the landed snapshot (WB0, WB4) plus WB1, then the batch without the poison.
    assert snap.offset == 7 and set(snap.parcels) == {"WB0", "WB4", "WB1", "WB2", "WB3"}
