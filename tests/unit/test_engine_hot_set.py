"""The engine's hot set (``detectors/hot_set.py``): parcels kept decoded between calls change nothing.

``hot_parcels=0`` is the engine before the hot set, by construction: a call
decodes each parcel it touches and encodes every one back at its end. Every
other bound must give the same alerts (compared as JSON, so an int where a
float was fails too), the same checkpoint blobs, the same stats and the same
restores.
"""

from __future__ import annotations

import copy

import msgspec
import pytest

from logiwatch.config import engine_config, load_settings
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.hot_set import as_decoded
from logiwatch.detectors.model import ScanEvent, Tick
from logiwatch.detectors.runner import interleave_ticks
from logiwatch.detectors.testing import DAY, H, Scenario
from logiwatch.errors import ConfigError
from logiwatch.sim.traffic import generate

_decoder = msgspec.msgpack.Decoder()


def _records(scenario: str = "default", parcels: int = 500, seed: int = 7) -> list[ScanEvent | Tick]:
    events, _ = generate(scenario, seed=seed, parcels=parcels)
    return list(interleave_ticks(events, 60_000))


def _run(records: list[ScanEvent | Tick], hot: int, batch: int, every: int) -> list[tuple[bytes, object, object]]:
    """Per batch: the alerts as JSON, the checkpoint (every ``every`` batches) and the stats."""

    engine = Engine(EngineConfig(hot_parcels=hot))
    out: list[tuple[bytes, object, object]] = []
    for n, i in enumerate(range(0, len(records), batch)):
        alerts = engine.process(records[i : i + batch])
        changes = engine.take_changes() if n % every == 0 else None
        checkpoint = None if changes is None else (changes.upserts, changes.deletes)
        out.append((msgspec.json.encode(alerts), checkpoint, engine.stats()))
        assert len(engine._hot) <= hot  # the bound holds between calls
    return out


@pytest.mark.parametrize(("scenario", "every"), [("default", 1), ("default", 3), ("peak", 2), ("mixed", 1)])
def test_alerts_checkpoints_and_stats_do_not_depend_on_the_hot_set(scenario: str, every: int) -> None:
    records = _records(scenario)
    reference = _run(records, hot=0, batch=400, every=every)
    assert sum(len(a) > 2 for a, _, _ in reference) > 10  # alerts to compare, not empty lists
    for hot in (1, 37, 100_000):
        assert _run(records, hot=hot, batch=400, every=every) == reference, hot


def test_a_hot_parcel_has_the_types_of_a_round_trip_when_a_call_takes_it_up_again() -> None:
    records = _records("default")
    engine = Engine(EngineConfig(hot_parcels=100_000))
    changed = 0
    for i in range(0, len(records), 500):
        engine.process(records[i : i + 500])
        for st in engine._hot.values():
            raw = msgspec.msgpack.encode(st)
            mine = copy.deepcopy(st)
            as_decoded(mine)
            tripped = msgspec.msgpack.encode(msgspec.msgpack.decode(raw, type=type(st)))
            assert msgspec.msgpack.encode(mine) == tripped
            changed += raw != tripped
    assert changed > 0  # some parcels did hold ints in float fields: the case is exercised


def _three_parcels() -> Scenario:
    sc = Scenario()
    sc.parcel("WB1").paid(0).dispatched(1 * H).picked_up(2 * H)
    sc.parcel("WB2").paid(3 * H).dispatched(4 * H)
    return sc


def test_an_evicted_parcel_is_encoded_and_a_later_touch_takes_it_back() -> None:
    sc = _three_parcels()
    events = sorted(sc.events(), key=lambda e: e.event_time)
    engine = Engine(EngineConfig(hot_parcels=1))
    reference = Engine(EngineConfig(hot_parcels=0))
    wb1 = [e for e in events if e.waybill_id == "WB1"]
    wb2 = [e for e in events if e.waybill_id == "WB2"]
    for batch in (wb1[:2], wb2, wb1[2:]):
        assert msgspec.json.encode(engine.process(batch)) == msgspec.json.encode(reference.process(batch))
        assert engine.take_changes() == reference.take_changes()
        assert engine.stats() == reference.stats()
        last = batch[-1].waybill_id
        assert list(engine._hot) == [last]  # only the last touched parcel is hot
        assert engine._cold[last] is None  # decoded only, never beside its blob
        assert {wb for wb, blob in engine._cold.items() if blob is not None} == set(engine._cold) - {last}
        assert set(engine._cold) == ({"WB1", "WB2"} if engine.in_flight == 2 else {"WB1"})
    assert engine.in_flight == 2
    assert [e[0] for e in engine.state_of("WB1").route] == [e.event_time for e in wb1]  # type: ignore[union-attr]
    assert engine.parcel_blobs() == reference.parcel_blobs()


def test_state_of_a_hot_parcel_is_a_copy() -> None:
    engine = Engine(EngineConfig(hot_parcels=10))
    engine.process(_three_parcels().events())
    assert "WB1" in engine._hot
    copy_ = engine.state_of("WB1")
    assert copy_ is not None
    copy_.route.clear()
    assert len(engine.state_of("WB1").route) == 3  # type: ignore[union-attr]


def test_restore_from_a_checkpoint_taken_with_dirty_hot_parcels_gives_the_same_alerts() -> None:
    records = _records("default", parcels=600, seed=11)
    cut = len(records) // 2
    config = EngineConfig(hot_parcels=100_000)
    engine = Engine(config)
    store: dict[str, bytes] = {}
    for i in range(0, cut, 700):
        engine.process(records[i : min(i + 700, cut)])
        changes = engine.take_changes()
        store.update(changes.upserts)
        for wb in changes.deletes:
            store.pop(wb, None)
    hot = set(engine._hot)
    assert hot and hot == set(store)  # every parcel in flight is hot: the checkpoint encoded them
    assert store == engine.parcel_blobs()
    models = engine.export_models()
    for bound in (0, 3, 100_000):
        restored = Engine.restore(EngineConfig(hot_parcels=bound), store, models)
        assert restored.stats() == engine.stats()
        for i in range(cut, len(records), 700):
            batch = records[i : i + 700]
            a, b = engine.process(batch), restored.process(batch)
            assert msgspec.json.encode(a) == msgspec.json.encode(b), bound
            assert restored.take_changes() == engine.take_changes()
            assert restored.stats() == engine.stats()
        engine = Engine.restore(config, store, models)  # the next bound starts from the checkpoint too


def test_forgetting_a_hot_parcel_drops_it_from_the_hot_set_and_the_counters() -> None:
    sc = Scenario()
    sc.parcel("WB1").paid(0).dispatched(1 * H).picked_up(2 * H).arrived("HUB-A", 3 * H).out_for_delivery(
        5 * H
    ).delivered(6 * H)
    sc.parcel("WB2").paid(0).dispatched(1 * H)
    engine = Engine(EngineConfig(hot_parcels=10))
    engine.process(sc.events())
    engine.take_changes()
    assert set(engine._hot) == {"WB1", "WB2"} and engine.in_flight == 2
    before = engine.stats()
    engine.advance(sc.start_ms + 6 * H + 2 * DAY)  # past WB1's retention (1 day after delivery)
    assert "WB1" not in engine._hot and "WB1" not in engine._cold and engine.state_of("WB1") is None
    assert engine.in_flight == 1 and engine.take_changes().deletes == ["WB1"]
    after = engine.stats()
    assert after["in_flight"] == 1 and before["in_flight"] == 2
    by_stage = sum(v for k, v in after.items() if k.startswith("parcels_by_stage_"))
    assert by_stage == 1
    wb2 = engine.state_of("WB2")
    assert wb2 is not None and after["deadlines"] == len(wb2.due)


def test_the_stats_counters_match_the_parcels_whatever_is_hot() -> None:
    records = _records("sparse", parcels=400, seed=3)
    engine = Engine(EngineConfig(hot_parcels=25))
    for i in range(0, len(records), 600):
        engine.process(records[i : i + 600])
        stats = engine.stats()
        states = [msgspec.msgpack.decode(b, type=list) for b in engine.parcel_blobs().values()]
        assert stats["in_flight"] == len(states) == engine.in_flight
        assert sum(v for k, v in stats.items() if k.startswith("parcels_by_stage_")) == len(states)
        assert stats["deadlines"] == sum(len(s[12]) for s in states)  # ParcelState.due, array-like


def test_hot_parcels_is_a_setting_and_a_bad_value_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("LOGIWATCH_")]:
        monkeypatch.delenv(name)
    assert engine_config(load_settings()).hot_parcels == EngineConfig().hot_parcels  # one default
    monkeypatch.setenv("LOGIWATCH_DETECTION__HOT_PARCELS", "17")
    assert engine_config(load_settings()).hot_parcels == 17
    monkeypatch.setenv("LOGIWATCH_DETECTION__HOT_PARCELS", "-1")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("invalid setting detection.hot_parcels in environment:")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="hot_parcels"):
        EngineConfig(hot_parcels=-1)
