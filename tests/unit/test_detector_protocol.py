"""The detector protocol is the contract: declarations decide the order, the lifecycle and the models.

Each test fails if the engine goes back to a hard-wired list: an order that ignores ``needs``,
policy sets that ignore ``emits``, models the engine has to be edited for, or a detector
reaching into the parcel's note map or another detector's values without declaring it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Sequence

import pytest

from logiwatch.detectors.baselines import DurationBaseline
from logiwatch.detectors.engine import DETECTORS, Engine, EngineConfig
from logiwatch.detectors.lost import LostDetector
from logiwatch.detectors.model import AlertStatus, AnomalyType, ScanEvent
from logiwatch.detectors.protocol import (
    NO_FINDINGS,
    Contract,
    ContractError,
    DetectorBase,
    Emits,
    Lifecycle,
    ScanContext,
    Slot,
    check_contract,
    evaluation_order,
)
from logiwatch.detectors.registry import BUILT_IN, Registry
from logiwatch.detectors.stall import StallDetector
from logiwatch.detectors.state import DISPATCHED, PAID, Env, Finding, ParcelState
from logiwatch.detectors.testing import H, Scenario
from logiwatch.detectors.values import SILENCE_LIMIT_S

_PAID_AT = Slot("toy_paid_at", int)


def _toy_baseline(min_count: int) -> DurationBaseline:
    return DurationBaseline((60, 120, 300, 600, 900, 1200), min_count=min_count)


class ToyDispatchWait(DetectorBase):
    """A detector the engine has never seen: one module's worth, registered with one call."""

    name = "toy_dispatch_wait"
    contract = Contract(
        handles=frozenset({PAID, DISPATCHED}),
        emits=(Emits(AnomalyType.LATE_DISPATCH, Lifecycle.RESOLVE_ON_MOVE),),
        owns=(_PAID_AT,),
        baselines={"toy_wait": _toy_baseline},
    )

    def __init__(self, env: Env, *, limit_s: float = 3600.0) -> None:
        self.wait = env.baseline("toy_wait")
        self.limit_ms = int(limit_s * 1000)

    def on_event(self, state: ParcelState, event: ScanEvent, scan: ScanContext) -> Sequence[Finding]:
        if scan.code == PAID:
            _PAID_AT.set(state, event.event_time)
            self.set_due(state, event.event_time + self.limit_ms)
            return NO_FINDINGS
        paid = _PAID_AT.get(state)
        if paid is not None:
            self.wait.learn(("all",), (event.event_time - paid) / 1000)
        self.set_due(state, None)
        return NO_FINDINGS

    def on_deadline(self, state: ParcelState, now_ms: int) -> Sequence[Finding]:
        paid = _PAID_AT.value(state, now_ms)
        return (Finding(alert_type=AnomalyType.LATE_DISPATCH, at_ms=now_ms, onset_ms=paid, summary="toy: not dispatched"),)


def _toy_config() -> EngineConfig:
    others = tuple(c for c in BUILT_IN.parcel if c.name != "late_dispatch")  # the toy emits its type
    registry = Registry(others, BUILT_IN.aggregate).with_detector(ToyDispatchWait)
    return EngineConfig(registry=registry, detectors=("toy_dispatch_wait",))


def test_a_new_detector_runs_with_its_own_model_and_lifecycle() -> None:
    sc = Scenario(start_ms=0)
    for i in range(5):
        _ = sc.parcel(f"N{i}").paid(0).dispatched(10 * 60_000)
    _ = sc.parcel("SLOW").paid(0).dispatched(3 * H)
    alerts = sc.run(config=_toy_config(), until=4 * H, all_alerts=True)
    slow = [(a.alert_type.value, a.status) for a in alerts if a.waybill_id == "SLOW"]
    # fired at its deadline, resolved by the next scan (the lifecycle it declared, not the engine's list)
    assert slow == [("late_dispatch", AlertStatus.FIRING), ("late_dispatch", AlertStatus.RESOLVED)]
    assert {a.waybill_id for a in alerts} == {"SLOW"}


def test_a_new_detectors_model_is_exported_and_restored_without_engine_edits() -> None:
    cfg = _toy_config()
    sc = Scenario(start_ms=0)
    for i in range(7):
        _ = sc.parcel(f"N{i}").paid(0).dispatched((5 + i) * 60_000)
    engine = Engine(cfg)
    engine.process(sc.events())
    learned = engine.env.baseline("toy_wait").hist["all"]
    assert learned[0] == 7
    restored = Engine.restore(cfg, engine.take_changes().upserts, engine.export_models())
    assert restored.env.baseline("toy_wait").hist["all"] == learned


def test_the_order_follows_the_declarations_not_the_registration() -> None:
    # likely-lost reads the silence stall provides: registered first, it still runs after stall
    order = evaluation_order([LostDetector, StallDetector])
    assert [c.name for c in order] == ["stall", "lost"]
    reordered = Registry((LostDetector, *[c for c in BUILT_IN.parcel if c is not LostDetector]), BUILT_IN.aggregate)
    engine = Engine(EngineConfig(registry=reordered))
    order_names = engine.detector_order
    assert order_names.index("lost") > order_names.index("stall")
    assert order_names.index("lost") > order_names.index("abnormal_segment")
    assert order_names == Engine(EngineConfig()).detector_order


def test_the_derived_order_gives_the_same_alerts_whatever_the_registration_order() -> None:
    sc = Scenario()
    for i in range(40):
        _ = sc.parcel(f"N{i}").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H).departed(5 * H)
    _ = sc.parcel("WB1").paid(0).dispatched(H).picked_up(2 * H).arrived("HUB-A", 3 * H)
    reordered = Registry(tuple(reversed(BUILT_IN.parcel)), BUILT_IN.aggregate)
    a = sc.run(config=EngineConfig(), until=30 * 24 * H, all_alerts=True)
    b = sc.run(config=EngineConfig(registry=reordered), until=30 * 24 * H, all_alerts=True)
    assert {"stall", "likely_lost"} <= {x.alert_type.value for x in a if x.waybill_id == "WB1"}
    # the same alerts, ids and content; the order may differ only among alerts of one moment
    key = lambda x: (x.detected_at, x.alert_id, x.status.value)  # noqa: E731
    assert sorted(a, key=key) == sorted(b, key=key)


class _Reader(DetectorBase):
    name = "reader"
    contract = Contract(needs=(Slot("nobody_writes_this", float),))


class _Owner(DetectorBase):
    name = "owner"
    contract = Contract(owns=(Slot("stall_anchor", int),))


class _SecondStallEmitter(DetectorBase):
    name = "second_stall"
    contract = Contract(emits=(Emits(AnomalyType.STALL, Lifecycle.SELF),))


class _Cycle1(DetectorBase):
    name = "cycle1"
    contract = Contract(provides=(Slot("c1", int),), needs=(Slot("c2", int),))


class _Cycle2(DetectorBase):
    name = "cycle2"
    contract = Contract(provides=(Slot("c2", int),), needs=(Slot("c1", int),))


class _TableClash(DetectorBase):
    name = "table_clash"
    contract = Contract(tables=("feeds",))


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (_Reader, "needs 'nobody_writes_this'"),
        (_Owner, "already owned by stall"),
        (_SecondStallEmitter, "both emit stall"),
        (_TableClash, "engine's own models"),
    ],
)
def test_contradicting_declarations_fail_at_registration(extra: type, match: str) -> None:
    with pytest.raises(ContractError, match=match):
        BUILT_IN.with_detector(extra)


def test_a_cycle_of_reads_fails() -> None:
    check_contract((_Cycle1, _Cycle2))  # each value has a provider: the contract alone is fine
    with pytest.raises(ContractError, match="cycle"):
        evaluation_order([_Cycle1, _Cycle2])


def _slot_uses(cls: type) -> tuple[set[str], set[str]]:
    """(slot keys the class's module reads, keys it writes), from its source."""

    module = importlib.import_module(cls.__module__)
    tree = ast.parse(inspect.getsource(module))
    reads: set[str] = set()
    writes: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        if not isinstance(target, ast.Name):
            continue
        slot = getattr(module, target.id, None)
        if not isinstance(slot, Slot):
            continue
        if node.func.attr in ("set", "clear", "take"):
            writes.add(slot.key)
        else:
            reads.add(slot.key)
    return reads, writes


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_uses_only_the_values_it_declares(name: str) -> None:
    cls = DETECTORS[name]
    c = cls.contract
    mine = {s.key for s in (*c.owns, *c.provides)}
    reads, writes = _slot_uses(cls)
    assert writes <= mine, f"{name} writes {sorted(writes - mine)} without owning or providing them"
    assert reads <= mine | {s.key for s in c.needs}, f"{name} reads {sorted(reads - mine)} undeclared"
    # ... and never the parcel's note map itself, nor the engine's per-scan context through Env
    source = inspect.getsource(importlib.import_module(cls.__module__))
    assert ".note" not in source
    assert "env.prev" not in source and "env.latest" not in source


def test_slot_keys_are_the_names_checkpoints_carry() -> None:
    # a slot's key is part of the checkpoint format: parcels checkpointed before the protocol
    # (or by an older release) carry these names, and a renamed key would silently drop a value
    declared = {s.key for c in DETECTORS.values() for s in (*c.contract.owns, *c.contract.provides)}
    assert declared == {
        "teleport_at", "silence_ref_s", "silence_cold", "stall_thr_s", "stall_anchor", "stall_hit",
        "segment_hit", "segment_limit_s", "late_censored", "detour_from", "detour_at",
        "left_h_stall", "left_h_misroute", "left_h_abnormal_segment",  # added 2026-12-03
        "early_left_h",  # added 2026-12-04
        "final_p",  # added 2026-12-07
    }
    assert SILENCE_LIMIT_S.key == "silence_ref_s"
