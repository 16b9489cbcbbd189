"""Learning shared across partitions (detectors/pool.py): pooled baselines, determinism, restore."""

from __future__ import annotations

import pytest

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.model import ScanEvent, Tick
from logiwatch.detectors.pool import MemoryPool, PoolMissing
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.sim.traffic import generate

HOUR = 3_600_000
POOLED = EngineConfig(pool_epoch_ms=6 * HOUR)


@pytest.fixture(scope="module")
def records() -> list[ScanEvent | Tick]:
    events, _ = generate("default", seed=3, parcels=500)
    return list(interleave_ticks(events, 60_000))


def _alerts(alerts: list) -> list[tuple]:
    return sorted((a.alert_id, a.revision, a.status.value, a.detected_at) for a in alerts)


def _engines(config: EngineConfig, n: int, pool: MemoryPool | None) -> list[Engine]:
    engines = [Engine(config) for _ in range(n)]
    if pool is not None:
        for p, e in enumerate(engines):
            e.attach_pool(pool, p)
    return engines


def test_pooled_partitions_learn_from_every_partition(records: list[ScanEvent | Tick]) -> None:
    alone = _engines(EngineConfig(), 4, None)
    run_partitioned(records, 4, EngineConfig(), engines=alone)
    pooled = _engines(POOLED, 4, MemoryPool(4))
    run_partitioned(records, 4, POOLED, engines=pooled)
    # the busiest key: each partition alone holds about a quarter of its observations
    dwell = [e.env.baseline("dwell").hist for e in alone]
    key = max(dwell[0], key=lambda k: sum(h.get(k, [0])[0] for h in dwell))
    total = sum(h.get(key, [0])[0] for h in dwell)
    per_alone = max(h.get(key, [0])[0] for h in dwell)
    assert per_alone < 0.5 * total
    for e in pooled:
        # every partition knows all of them except what the others learned in the last epoch
        assert e.env.baseline("dwell").hist[key][0] > 0.9 * total


def test_pooled_backtest_is_deterministic_and_differs_from_alone(records: list[ScanEvent | Tick]) -> None:
    first = _alerts(run_partitioned(records, 4, POOLED))
    assert first == _alerts(run_partitioned(records, 4, POOLED))
    assert first != _alerts(run_partitioned(records, 4, EngineConfig()))


def test_restored_pooled_partitions_continue_as_if_never_stopped(records: list[ScanEvent | Tick]) -> None:
    reference = _alerts(run_partitioned(records, 4, POOLED))
    half = len(records) // 2
    pool = MemoryPool(4)
    engines = _engines(POOLED, 4, pool)
    alerts = run_partitioned(records[:half], 4, POOLED, engines=engines)
    restored = []
    for p, e in enumerate(engines):
        r = Engine.restore(POOLED, e.parcel_blobs(), e.export_models())
        r.attach_pool(pool, p)
        restored.append(r)
    # the first run's final flush ended mid-epoch: the rest continues from there
    alerts += run_partitioned(records[half:], 4, POOLED, engines=restored)
    assert _alerts(alerts) == reference


def test_a_partition_waits_for_the_others_deltas_and_keeps_its_records() -> None:
    pool = MemoryPool(2)
    a, b = _engines(POOLED, 2, pool)
    ticks = [Tick(tick_time=t * 6 * HOUR + 1, source="test") for t in range(4)]
    a.process(ticks[:3])  # closes epochs 0 and 1; epoch 0 needs b's deltas
    assert a.held == 1
    restored = Engine.restore(POOLED, a.parcel_blobs(), a.export_models())
    restored.attach_pool(pool, 0)
    assert restored.held == 1  # the held records are part of the checkpoint
    b.process(ticks[:3])
    restored.process([])
    assert restored.held == 0
    stuck = _engines(POOLED, 2, MemoryPool(2))
    with pytest.raises(PoolMissing):
        run_partitioned(ticks, 2, POOLED, engines=stuck[:1] * 2)



def test_a_checkpoint_of_changed_fields_restores_a_pooled_partition(records: list[ScanEvent | Tick]) -> None:
    """The worker's checkpoint (changed baseline fields + core blob), not the full export: pending deltas ride on the fields."""

    reference = _alerts(run_partitioned(records, 4, POOLED))
    pool = MemoryPool(4)
    engines = _engines(POOLED, 4, pool)
    fields: list[dict[str, bytes]] = [{} for _ in engines]
    parcels: list[dict[str, bytes]] = [{} for _ in engines]
    alerts = []
    third = len(records) // 3
    for chunk in (records[:third], records[third : 2 * third]):
        alerts += run_partitioned(chunk, 4, POOLED, engines=engines)
        for p, e in enumerate(engines):  # a checkpoint: what changed since the last one
            changes, models = e.take_changes(), e.take_model_changes()
            parcels[p].update(changes.upserts)
            for wb in changes.deletes:
                parcels[p].pop(wb, None)
            fields[p].update(models.baselines)
    restored = []
    for p in range(4):
        core = engines[p].take_model_changes().core
        r = Engine.restore(POOLED, parcels[p], core, fields[p])
        r.attach_pool(pool, p)
        restored.append(r)
    alerts += run_partitioned(records[2 * third :], 4, POOLED, engines=restored)
    assert _alerts(alerts) == reference


@pytest.fixture(scope="module")
def sparse_records() -> list[ScanEvent | Tick]:
    events, _ = generate("sparse", seed=3, parcels=800)
    return list(interleave_ticks(events, 60_000))


def _outcomes(engine: Engine) -> int:
    """Parcels counted in the carrier-wide keys of predicted-late's early-warning outcome table."""

    return sum(v[0] for k, v in engine.env.table("early_lateness").items() if "|" not in k)


def test_outcome_tables_are_pooled_across_partitions(sparse_records: list[ScanEvent | Tick]) -> None:
    """Predicted-late's outcome tables are sums like the baselines: each partition learns the topic's."""

    alone = _engines(EngineConfig(), 4, None)
    run_partitioned(sparse_records, 4, EngineConfig(), engines=alone)
    total = sum(_outcomes(e) for e in alone)
    assert total >= 20  # enough early warnings to tell a quarter from the whole
    assert max(_outcomes(e) for e in alone) < 0.5 * total
    pooled = _engines(POOLED, 4, MemoryPool(4))
    run_partitioned(sparse_records, 4, POOLED, engines=pooled)
    for e in pooled:
        # all but what the others learned in the last epoch or two
        assert _outcomes(e) > 0.8 * total
        assert all(n >= late >= 0 for n, late in e.env.table("early_lateness").values())


def test_pending_outcome_counts_survive_a_restore(sparse_records: list[ScanEvent | Tick]) -> None:
    """Outcome counts learned since the last publication are part of the checkpoint."""

    reference = _alerts(run_partitioned(sparse_records, 4, POOLED))
    pool = MemoryPool(4)
    engines = _engines(POOLED, 4, pool)
    alerts = []
    at = 0
    step = 500
    # go on in chunks until some partition holds outcome counts it has not published yet
    while at < len(sparse_records) // 2 or not any(e.env.counts_delta for e in engines):
        assert at < len(sparse_records), "no pending outcome counts at any cut"
        alerts += run_partitioned(sparse_records[at : at + step], 4, POOLED, engines=engines)
        at += step
    restored = []
    for p, e in enumerate(engines):
        r = Engine.restore(POOLED, e.parcel_blobs(), e.export_models())
        assert r.env.counts_delta == e.env.counts_delta
        r.attach_pool(pool, p)
        restored.append(r)
    alerts += run_partitioned(sparse_records[at:], 4, POOLED, engines=restored)
    assert _alerts(alerts) == reference


def test_count_tables_add_up_and_read_blobs_without_them() -> None:
    from logiwatch.detectors.pool import apply_delta, decode_delta, encode_delta, total_of
    from logiwatch.detectors.state import Env

    env = Env(Engine(EngineConfig()).env.calendar, 5, 0, tables=("outcomes",))
    env.pooled = True
    env.add_counts("outcomes", "ZTO", (1, 1))
    env.add_counts("outcomes", "ZTO", (1, 0))
    assert env.table("outcomes") == {"ZTO": [2, 1]} and env.counts_delta == {"outcomes": {"ZTO": [2, 1]}}

    def blob(**counts: object) -> dict[str, object]:
        return decode_delta(encode_delta({"version": 1, "baselines": {}, "feeds": {}, **counts}))

    mine = blob(counts=env.counts_delta)
    theirs = blob(counts={"outcomes": {"ZTO": [3, 3], "SF": [1, 0]}})
    old = blob()  # written before count tables were pooled
    assert old["counts"] == {}
    everyone = total_of([mine, theirs, old])
    assert everyone["counts"] == {"outcomes": {"ZTO": [5, 4], "SF": [1, 0]}}
    apply_delta(env, everyone)
    apply_delta(env, mine, -1)  # its own were counted already
    assert env.table("outcomes") == {"ZTO": [5, 4], "SF": [1, 0]}
