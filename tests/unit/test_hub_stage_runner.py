"""The live hub stage runner: offsets, its Redis checkpoint and a restart that replays records.

Redis and the producer are replaced by in-memory fakes; the summaries are the
ones the parcel engines of the hub scenario emit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from logiwatch.detectors.codec import decode_alert
from logiwatch.detectors.engine import Engine
from logiwatch.detectors.hub_stage import encode_hub_summary
from logiwatch.detectors.model import Alert, Tick
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.detectors.testing import H
from logiwatch.streams.hubs import HubStageRunner
from logiwatch.streams.metrics import WorkerMetrics
from logiwatch.streams.state import SnapshotStore
from tests.unit.test_hub_incident import CONFIG, hub_scenario, incidents

PARTITIONS = 3


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = 0
    headers: Sequence[tuple[str, bytes]] = ()


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.data[key] = value


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _summary_records() -> tuple[list[Rec], list[Alert]]:
    records = list(interleave_ticks(hub_scenario(outage=True).events(), H))
    engines = [Engine(CONFIG) for _ in range(PARTITIONS)]
    for p, e in enumerate(engines):
        e.hub_source = p
    out: list[Rec] = []
    for r in records:
        for p in range(PARTITIONS) if isinstance(r, Tick) else [partition_for(r.waybill_id, PARTITIONS)]:
            engines[p].process([r])
            for s in engines[p].take_hub_summaries():
                out.append(Rec("ev-hubs", 0, len(out), encode_hub_summary(s)))
    return out, incidents(run_partitioned(records, PARTITIONS, CONFIG))


def _runner(redis: FakeRedis, sink: FakeSink) -> HubStageRunner:
    return HubStageRunner(
        client=redis, prefix="t:", topic="ev-hubs", sources=PARTITIONS, min_count=CONFIG.min_count,
        knobs=None, sink=sink, alerts_topic="al",
    )


def test_a_restarted_stage_replays_from_its_checkpoint_and_ends_with_the_same_incidents() -> None:
    recs, expected = _summary_records()
    assert expected

    async def run() -> list[Alert]:
        redis, sink = FakeRedis(), FakeSink()
        first = _runner(redis, sink)
        cut = len(recs) // 2
        assert await first.handle(recs[: cut // 2]) == cut // 2
        await first.handle(recs[cut // 2 : cut])
        # a crash after the checkpoint at `cut`; the consumer re-delivers from an older offset
        second = _runner(redis, sink)
        assert await second.handle(recs[: cut // 2]) is None  # all applied before
        await second.handle(recs[cut // 2 :])
        return [decode_alert(v) for _, v in sink.sent]

    got = asyncio.run(run())
    assert got == expected


def test_the_stage_checkpoint_key_is_hash_tagged() -> None:
    assert _runner(FakeRedis(), FakeSink()).key == "t:hubstage:{ev-hubs:0}"


class FlakyRedis(FakeRedis):
    """Refuses the first ``failures`` checkpoint writes, as a Redis that is down for a moment."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def set(self, key: str, value: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("redis down")
        await super().set(key, value)


def test_a_redis_outage_pauses_the_stage_instead_of_failing_its_batch_and_the_lag_is_reported() -> None:
    recs, expected = _summary_records()
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    async def run() -> tuple[list[Alert], int | None]:
        redis, sink = FlakyRedis(failures=3), FakeSink()
        store = SnapshotStore(redis, "t:", metrics, backoff_initial_s=0.001, backoff_max_s=0.001)  # type: ignore[arg-type]
        runner = HubStageRunner(
            client=redis, prefix="t:", topic="ev-hubs", sources=PARTITIONS, min_count=CONFIG.min_count,
            knobs=None, sink=sink, alerts_topic="al", metrics=metrics, retry=store.retry,
        )
        half = len(recs) // 2
        committed = await runner.handle(recs[:half], highwater=len(recs))
        lag = registry.get_sample_value("logiwatch_worker_hub_stage_lag")
        assert lag == len(recs) - half
        await runner.handle(recs[half:], highwater=len(recs))
        assert redis.failures == 0 and redis.data  # the writes were retried until they landed
        return [decode_alert(v) for _, v in sink.sent], committed

    got, committed = asyncio.run(run())
    assert committed == len(recs) // 2
    assert got == expected
    assert registry.get_sample_value("logiwatch_worker_hub_stage_lag") == 0
    assert registry.get_sample_value("logiwatch_worker_redis_errors_total") == 3


def test_a_lost_and_recreated_hubs_log_is_applied_from_its_start() -> None:
    # A Tansu restart loses the topic: the new log starts again at offset 0 while the stage's
    # checkpoint names a later offset. The summaries after the restart must still be applied.
    recs, expected = _summary_records()
    cut = len(recs) // 2
    # the new log holds what the partitions send after the restart, renumbered from 0,
    # plus one summary the stage had seen already (dropped by its (partition, tick))
    again = [Rec("ev-hubs", 0, i, r.value) for i, r in enumerate(recs[cut - 1 :])]

    async def run() -> list[Alert]:
        redis, sink = FakeRedis(), FakeSink()
        runner = _runner(redis, sink)
        assert await runner.handle(recs[:cut], highwater=cut) == cut
        assert await runner.handle(again, highwater=len(again)) == len(again)
        return [decode_alert(v) for _, v in sink.sent]

    assert asyncio.run(run()) == expected
