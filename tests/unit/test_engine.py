"""The detection engine: event time, deadlines, duplicates, resolution, snapshots and the runner."""

from __future__ import annotations

import msgspec
import pytest

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.errors import StateError
from logiwatch.detectors.model import AlertStatus, AnomalyType, ScanEvent, Tick
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.detectors.testing import DAY, H, M, Scenario


def _stuck_scenario() -> Scenario:
    sc = Scenario()
    sc.normal(120, seed=1)
    p = sc.parcel("STUCK").paid(10 * H).dispatched(12 * H).picked_up(14 * H).arrived("HUB-A", 16 * H)
    p.departed(20 * H).arrived("HUB-B", 30 * H)  # then silent for days at HUB-B
    p.departed(30 * H + 6 * DAY).arrived("HUB-C", 30 * H + 6 * DAY + 12 * H)
    return sc


def _key(alerts: list) -> list[tuple[str, str, str, int]]:
    return [(a.alert_id, a.alert_type.value, a.status.value, a.detected_at) for a in alerts]


def test_same_records_give_identical_alerts_and_ids() -> None:
    sc = _stuck_scenario()
    first = sc.run(all_alerts=True)
    second = sc.run(all_alerts=True)
    assert first == second
    assert any(a.alert_type is AnomalyType.STALL and a.waybill_id == "STUCK" for a in first)


def test_deadline_alerts_are_stamped_with_the_deadline_whatever_the_tick_cadence() -> None:
    sc = _stuck_scenario()
    fine = sc.run(tick_every_ms=M, all_alerts=True)
    coarse = sc.run(tick_every_ms=12 * H, all_alerts=True)
    assert sorted(_key(fine)) == sorted(_key(coarse))


def test_a_silent_parcel_fires_before_its_next_scan_even_without_ticks() -> None:
    sc = _stuck_scenario()
    engine = Engine(EngineConfig(detectors=("stall",)))
    alerts = engine.process(sc.events())  # no ticks at all
    stall = [a for a in alerts if a.waybill_id == "STUCK" and a.alert_type is AnomalyType.STALL]
    assert [a.status for a in stall] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    firing, resolved = stall
    assert firing.alert_id == resolved.alert_id
    assert firing.detected_at < resolved.detected_at == sc.start_ms + 30 * H + 6 * DAY


def test_duplicate_event_ids_are_ignored() -> None:
    sc = _stuck_scenario()
    events = sc.events()
    doubled = [e for ev in events for e in (ev, ev)]
    assert sc.run(all_alerts=True, events=doubled) == sc.run(all_alerts=True, events=events)


def test_at_most_one_open_alert_per_parcel_and_type() -> None:
    sc = _stuck_scenario()
    open_: dict[tuple[str | None, str], str] = {}
    for a in sc.run(all_alerts=True):
        key = (a.waybill_id, a.alert_type.value)
        if a.alert_type is AnomalyType.HUB_INCIDENT:
            continue
        if a.status is AlertStatus.FIRING:
            assert key not in open_, f"second open {key}"
            open_[key] = a.alert_id
        else:
            assert open_.pop(key) == a.alert_id


def test_watermark_is_the_largest_record_time_minus_the_lateness() -> None:
    engine = Engine(EngineConfig(allowed_lateness_ms=10 * M))
    assert engine.watermark_ms is None
    sc = Scenario()
    sc.parcel("WB1").paid(0).dispatched(2 * H)
    engine.process(sc.events())
    assert engine.watermark_ms == sc.start_ms + 2 * H - 10 * M
    engine.process([Tick(tick_time=sc.start_ms + 5 * H)])
    assert engine.watermark_ms == sc.start_ms + 5 * H - 10 * M
    engine.advance(sc.start_ms)  # time never goes back
    assert engine.watermark_ms == sc.start_ms + 5 * H - 10 * M


def test_delivered_parcels_are_forgotten_after_the_retention_period() -> None:
    sc = Scenario()
    sc.normal(3, seed=2)
    engine = Engine(EngineConfig(retention_ms=DAY))
    engine.process(sc.events())
    assert engine.in_flight == 3
    changes = engine.take_changes()
    assert len(changes.upserts) == 3 and changes.deletes == []
    last = max(e.event_time for e in sc.events())
    engine.advance(last + DAY + 11 * M)
    assert engine.in_flight == 0
    assert sorted(engine.take_changes().deletes) == sorted(p.waybill for p in sc.parcels)


def test_snapshot_restore_and_replay_give_the_same_alerts() -> None:
    sc = _stuck_scenario()
    records = list(interleave_ticks(sc.events(), H))
    config = EngineConfig()
    full = Engine(config).process(records)
    for cut in (len(records) // 3, len(records) // 2, len(records) - 5):
        engine = Engine(config)
        before = engine.process(records[:cut])
        changes = engine.take_changes()
        restored = Engine.restore(config, changes.upserts, engine.export_models())
        after = restored.process(records[cut:])
        assert before + after == full, f"cut at {cut}"


def test_replay_from_an_older_snapshot_re_emits_alerts_with_the_same_ids_and_content() -> None:
    sc = _stuck_scenario()
    records = list(interleave_ticks(sc.events(), H))
    config = EngineConfig()
    engine = Engine(config)
    cut = len(records) // 2
    engine.process(records[:cut])
    snapshot = (dict(engine.take_changes().upserts), engine.export_models())
    live_rest = engine.process(records[cut:])  # the crashed worker had emitted these
    replayed = Engine.restore(config, snapshot[0], snapshot[1]).process(records[cut:])
    assert replayed == live_rest


def test_incremental_model_checkpoints_restore_the_same_models_and_alerts() -> None:
    """Checkpoints that write only changed baseline keys add up to the whole models."""

    sc = _stuck_scenario()
    records = list(interleave_ticks(sc.events(), H))
    config = EngineConfig()
    full = Engine(config).process(records)
    engine = Engine(config)
    parcels: dict[str, bytes] = {}
    core, fields = b"", {}  # what Redis would hold: the last core, every field ever written
    emitted, written = [], []
    step = 40
    for start in range(0, len(records), step):
        emitted += engine.process(records[start : start + step])
        changes = engine.take_changes()
        parcels.update(changes.upserts)
        for wb in changes.deletes:
            parcels.pop(wb, None)
        models = engine.take_model_changes()
        core = models.core
        fields.update(models.baselines)
        written.append(len(models.baselines))
        restored = Engine.restore(config, parcels, core, fields)
        assert msgspec.msgpack.decode(restored.export_models()) == msgspec.msgpack.decode(engine.export_models())
        if start == (len(records) // 2) // step * step:
            assert emitted + restored.process(records[start + step :]) == full
    keys = sum(len(b.hist) for b in engine.env.baselines().values())
    assert max(written) <= keys and min(written[len(written) // 2 :]) < keys // 2, (written, keys)
    assert engine.take_model_changes().baselines == {}  # nothing learned since the last one


def test_an_engine_restored_from_a_whole_models_blob_writes_every_baseline_key_at_its_first_checkpoint() -> None:
    """Upgrading from whole-blob snapshots: the first split checkpoint must not drop the baselines."""

    sc = _stuck_scenario()
    records = list(interleave_ticks(sc.events(), H))
    config = EngineConfig()
    engine = Engine(config)
    engine.process(records)
    changes = engine.take_changes()
    whole = engine.export_models()
    upgraded = Engine.restore(config, changes.upserts, whole)
    models = upgraded.take_model_changes()  # the first checkpoint after the upgrade
    again = Engine.restore(config, changes.upserts, models.core, models.baselines)
    assert msgspec.msgpack.decode(again.export_models()) == msgspec.msgpack.decode(whole)


def test_restore_rejects_corrupt_baseline_fields() -> None:
    with pytest.raises(StateError, match="corrupt"):
        Engine.restore(EngineConfig(), {}, None, {"dwell:HUB-A": b"\xc1"})
    with pytest.raises(StateError, match="corrupt"):
        Engine.restore(EngineConfig(), {}, None, {b"dwell:HUB-A": msgspec.msgpack.encode([[1, 2], None])})


def test_restore_rejects_a_corrupt_or_foreign_models_blob() -> None:
    with pytest.raises(StateError, match="corrupt"):
        Engine.restore(EngineConfig(), {}, b"\xc1not msgpack")
    with pytest.raises(StateError, match="version"):
        Engine.restore(EngineConfig(), {}, msgspec.msgpack.encode({"version": 99}))


def test_unknown_detector_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        EngineConfig(detectors=("stall", "nope"))


def test_parcel_state_stays_under_a_kilobyte() -> None:
    sc = _stuck_scenario()
    engine = Engine(EngineConfig())
    worst = 0
    for rec in interleave_ticks(sc.events(), H):
        engine.process([rec])
        for blob in engine.take_changes().upserts.values():
            worst = max(worst, len(blob))
    assert 0 < worst <= 1024


def test_stats_report_parcels_by_stage_and_learned_keys() -> None:
    sc = _stuck_scenario()
    engine = Engine(EngineConfig())
    engine.process(sc.events())
    stats = engine.stats()
    # the normal parcels were delivered days before the stuck one moved on: forgotten
    assert stats["in_flight"] == engine.in_flight == 1
    assert stats["parcels_by_stage_HUB_ARRIVED"] == 1
    assert sum(v for k, v in stats.items() if k.startswith("parcels_by_stage_")) == 1
    assert stats["learned_keys"] > 0 and stats["cold_keys"] > 0


def test_interleave_ticks_puts_a_tick_before_the_event_that_crosses_each_multiple() -> None:
    sc = Scenario(start_ms=0)
    sc.parcel("WB1").paid(10 * M).dispatched(50 * M).picked_up(3 * H + 5 * M)
    out = list(interleave_ticks(sc.events(), H, final_tick_ms=10 * H))
    kinds = [(type(r).__name__, r.tick_time if isinstance(r, Tick) else r.event_time) for r in out]
    assert kinds == [
        ("ScanEvent", 10 * M),
        ("ScanEvent", 50 * M),
        ("Tick", 3 * H),
        ("ScanEvent", 3 * H + 5 * M),
        ("Tick", 10 * H),
    ]
    default_final = list(interleave_ticks(sc.events(), H))[-1]
    assert isinstance(default_final, Tick) and default_final.tick_time == 3 * H + 5 * M + 400 * DAY


def test_run_partitioned_equals_one_engine_per_kafka_partition() -> None:
    sc = _stuck_scenario()
    records = list(interleave_ticks(sc.events(), H))
    config = EngineConfig()
    expected = []
    for p in range(3):
        mine = [r for r in records if not isinstance(r, ScanEvent) or partition_for(r.waybill_id, 3) == p]
        expected.extend(Engine(config).process(mine))
    got = run_partitioned(records, 3, config)
    assert sorted(_key(got)) == sorted(_key(expected))


def test_restore_accepts_bytes_keys_as_read_from_redis() -> None:
    sc = _stuck_scenario()
    records = list(interleave_ticks(sc.events(), H))
    config = EngineConfig()
    engine = Engine(config)
    cut = len(records) // 2
    head = engine.process(records[:cut])
    as_redis = {wb.encode(): blob for wb, blob in engine.take_changes().upserts.items()}
    restored = Engine.restore(config, as_redis, engine.export_models())
    assert set(restored.parcel_blobs()) == set(engine.parcel_blobs())
    assert head + restored.process(records[cut:]) == Engine(config).process(records)


def test_restore_rejects_a_corrupt_parcel_state() -> None:
    with pytest.raises(StateError, match="corrupt"):
        Engine.restore(EngineConfig(), {"WB1": b"\x93garbage"}, None)


def test_alerts_and_parcel_blobs_do_not_depend_on_how_the_records_are_batched() -> None:
    records = list(interleave_ticks(_stuck_scenario().events(), H))
    whole, one_by_one = Engine(EngineConfig()), Engine(EngineConfig())
    alerts = whole.process(records)
    singles = [a for r in records for a in one_by_one.process([r])]
    assert msgspec.to_builtins(alerts) == msgspec.to_builtins(singles)
    assert whole.take_changes() == one_by_one.take_changes()
