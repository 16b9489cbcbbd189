"""Run engines over an event log exactly as the Kafka path does: ticks interleaved, one engine per partition.

``interleave_ticks`` is the deterministic clock the replay producer and the
backtest share: it yields the events unchanged and a clock tick at each
multiple of ``every_ms`` that the running maximum event time crosses, placed
before the event that crosses it, plus one final tick far enough ahead that
every pending deadline fires. ``run_partitioned`` routes events with Kafka's
partitioner, broadcasts ticks to every partition engine and returns all
alerts, so a backtest gives the alerts a worker would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.hub_stage import AggregateStage, HubStage
from logiwatch.detectors.model import Alert, ScanEvent, Tick
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.pool import MemoryPool, PoolMissing

#: How far past the last event the final tick goes: every deadline fires by then (stall and
#: likely-lost deadlines on slow lanes lie weeks or months after the last scan).
FINAL_HORIZON_MS = 400 * 86_400_000


def interleave_ticks(
    events: Iterable[ScanEvent], every_ms: int, *, final_tick_ms: int | None = None
) -> Iterator[ScanEvent | Tick]:
    """Events unchanged, with clock ticks where the running max time crosses multiples of ``every_ms``.

    >>> from logiwatch.detectors.testing import Scenario, H
    >>> sc = Scenario(start_ms=0)
    >>> _ = sc.parcel("WB1").paid(0).dispatched(90 * 60_000)
    >>> [type(r).__name__ for r in interleave_ticks(sc.events(), H, final_tick_ms=10 * H)]
    ['ScanEvent', 'Tick', 'ScanEvent', 'Tick']
    """

    if every_ms <= 0:
        raise ValueError("every_ms must be positive")
    max_t: int | None = None
    last_mult = 0
    for ev in events:
        t = ev.event_time
        if max_t is None:
            max_t = t
            last_mult = t - t % every_ms
        elif t > max_t:
            max_t = t
            mult = t - t % every_ms
            if mult > last_mult:
                last_mult = mult
                yield Tick(tick_time=mult, source="interleave")
        yield ev
    if max_t is not None or final_tick_ms is not None:
        end = final_tick_ms if final_tick_ms is not None else (max_t or 0) + FINAL_HORIZON_MS
        yield Tick(tick_time=end, source="final")


def run_partitioned(
    records: Iterable[ScanEvent | Tick],
    num_partitions: int,
    config: EngineConfig,
    *,
    engines: list[Engine] | None = None,
    stage: AggregateStage | None = None,
) -> list[Alert]:
    """All alerts of one engine per partition fed in partition order (ticks go to every engine).

    With ``config.pool_epoch_ms`` the engines share learning through a ``MemoryPool``
    (``detectors/pool.py``): at each new epoch of the tick clock every partition is
    brought to that tick first, so each finds the others' deltas of the epoch before.
    ``engines`` continues from given engines (e.g. restored from a checkpoint, their
    pool attached by the caller) instead of new ones, and ``stage`` from a given hub stage.
    Hub incidents come from one hub stage over every partition's hub summaries, as live
    (``detectors/hub_stage.py``): the same incidents whatever ``num_partitions``.
    """

    if num_partitions < 1:
        raise ValueError("num_partitions must be >= 1")
    given = engines is not None
    if engines is None:
        engines = [Engine(config) for _ in range(num_partitions)]
    elif len(engines) != num_partitions:
        raise ValueError("one engine per partition")
    # one partition has no one to pool with (the pooled sums would add nothing)
    epoch_ms = config.pool_epoch_ms if num_partitions > 1 else 0
    if epoch_ms and not given:
        pool = MemoryPool(num_partitions)
        for p, engine in enumerate(engines):
            engine.attach_pool(pool, p)
    for p, engine in enumerate(engines):
        engine.hub_source = p
    if stage is None and "hub_incident" in config.detectors:
        stage = HubStage(num_partitions, config.min_count, config.knobs.get("hub_incident"))
    epoch: int | None = None
    pending: list[list[ScanEvent | Tick]] = [[] for _ in range(num_partitions)]
    where: dict[str, int] = {}
    alerts: list[Alert] = []

    def run(p: int) -> None:
        alerts.extend(engines[p].process(pending[p]))
        pending[p].clear()
        if stage is not None:
            for summary in engines[p].take_hub_summaries():
                alerts.extend(stage.offer(summary))

    def flush() -> None:
        for p, batch in enumerate(pending):
            if batch:
                run(p)

    for rec in records:
        if type(rec) is ScanEvent:
            wb = rec.waybill_id
            at = where.get(wb)
            if at is None:
                at = where[wb] = partition_for(wb, num_partitions)
            p = at
            pending[p].append(rec)
            if len(pending[p]) >= 4096:
                run(p)
        else:
            assert isinstance(rec, Tick)
            if epoch_ms and (epoch is None or rec.tick_time // epoch_ms > epoch):
                # a new pooling epoch: every partition reaches this tick before any goes past it,
                # as the live partitions do (they need each other's deltas of the epoch before)
                epoch = rec.tick_time // epoch_ms
                flush()
                for batch in pending:
                    batch.append(rec)
                flush()
                continue
            for batch in pending:
                batch.append(rec)
    flush()
    if any(engine.held for engine in engines):  # the barrier above makes this a bug, not a wait
        raise PoolMissing("a partition is still waiting for pooled deltas at the end of the records")
    return alerts
