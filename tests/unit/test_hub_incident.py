"""Hub incidents: the river-backed per-hub scorer in the hub stage, the same over any partitioning, restore.

The scenario is a small network around one hub, HUB-B: a parcel arrives
every 15 minutes and leaves on the next of the hub's departure waves (every
4 hours, a few minutes apart), like the simulator's line-haul schedules.
From ``OUTAGE_AT`` the hub stops for 10 hours: nothing leaves until the
first wave after the outage.
"""

from __future__ import annotations

import pytest

from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.hub_incident import HubFact, HubSummary, overdue_tail
from logiwatch.detectors.hub_stage import HubStage, link_incident
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, ScanEvent, Tick, make_alert_id
from logiwatch.detectors.partitioning import partition_for
from logiwatch.detectors.runner import interleave_ticks, run_partitioned
from logiwatch.detectors.testing import DAY, DEFAULT_START_MS, H, M, Scenario

DETECTORS = ("contradiction", "stall", "hub_incident")
CONFIG = EngineConfig(detectors=DETECTORS)
OUTAGE_AT = 60 * H + 20 * M
OUTAGE_S = 10 * H


def _next_wave(t: int) -> int:
    # waves at 02:00, 06:00, ... of the scenario clock, parcels of one wave leaving over ~10 minutes
    return t - t % (4 * H) + 4 * H + 2 * H


def hub_scenario(*, outage: bool, parcels: int = 360, exceptions: bool = False) -> Scenario:
    sc = Scenario()
    for i in range(parcels):
        arrive = 2 * H + i * 15 * M
        leave = _next_wave(arrive + H) + (i % 10) * M
        if outage and arrive < OUTAGE_AT + OUTAGE_S and leave >= OUTAGE_AT:
            leave = _next_wave(OUTAGE_AT + OUTAGE_S) + (i % 10) * M
        p = sc.parcel(f"WB{i:04d}", deliver_within=20 * DAY).paid(arrive - 8 * H).dispatched(arrive - 7 * H)
        p.picked_up(arrive - 6 * H).arrived("HUB-A", arrive - 4 * H).departed(arrive - 3 * H).arrived(
            "HUB-B", arrive
        )
        if outage and exceptions and i % 2 == 0 and arrive < OUTAGE_AT + OUTAGE_S and leave > arrive + 3 * H:
            p.scan("EXCEPTION", arrive + 2 * H, node="HUB-B")
        p.departed(leave).arrived("HUB-C", leave + 5 * H).departed(leave + 7 * H).out_for_delivery(
            leave + 9 * H
        )
        p.delivered(leave + 11 * H)
    return sc


def _time(r: ScanEvent | Tick) -> int:
    return r.event_time if isinstance(r, ScanEvent) else r.tick_time


def incidents(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.alert_type is AnomalyType.HUB_INCIDENT]


def test_overdue_tail_is_a_probability_that_falls_as_more_parcels_stay() -> None:
    tails = [overdue_tail(k, 10, 1, 19) for k in range(12)]
    assert tails[0] == 1.0 and tails[11] == 0.0
    assert all(a > b for a, b in zip(tails[:11], tails[1:12], strict=True))
    # the same stragglers are more surprising at a hub known to be punctual
    assert overdue_tail(4, 6, 2, 200) < overdue_tail(4, 6, 1, 19)


def test_a_punctual_hub_raises_no_incident() -> None:
    assert incidents(hub_scenario(outage=False).run(config=CONFIG, all_alerts=True)) == []


def test_an_outage_opens_one_incident_that_names_the_hub_window_and_parcels() -> None:
    alerts = incidents(hub_scenario(outage=True).run(config=CONFIG, all_alerts=True))
    assert alerts, "the outage was not detected"
    first = alerts[0]
    assert first.status is AlertStatus.FIRING and first.revision == 0 and first.node_id == "HUB-B"
    assert first.window_start is not None and first.window_start <= DEFAULT_START_MS + OUTAGE_AT
    assert DEFAULT_START_MS + OUTAGE_AT < first.detected_at < DEFAULT_START_MS + OUTAGE_AT + OUTAGE_S
    assert len({a.alert_id for a in alerts}) == 1  # one outage, one id (revisions and resolution share it)
    assert alerts[-1].status is AlertStatus.RESOLVED
    assert first.evidence["p_value"] is not None and float(first.evidence["p_value"]) <= 0.001
    # parcels that arrived before the tick that opened it (one arriving at the tick is in the next summary)
    stuck = {
        f"WB{i:04d}"
        for i in range(360)
        if OUTAGE_AT - 2 * H <= 2 * H + i * 15 * M < first.detected_at - DEFAULT_START_MS
    }
    assert stuck and stuck <= set(first.affected_waybills)


def test_the_incident_id_is_the_hub_and_the_hour_of_its_last_departure_wave() -> None:
    alerts = incidents(hub_scenario(outage=True).run(config=CONFIG))
    # the last wave before the outage left at 58:00-58:10 of the scenario clock
    onset = DEFAULT_START_MS + 58 * H
    assert alerts[0].alert_id == make_alert_id(AnomalyType.HUB_INCIDENT, "HUB-B", onset)
    assert alerts[0].window_start == onset


@pytest.mark.parametrize("partitions", [2, 4, 16])
def test_the_same_incidents_whatever_the_partitioning(partitions: int) -> None:
    records = list(interleave_ticks(hub_scenario(outage=True).events(), H))
    one = incidents(run_partitioned(records, 1, CONFIG))
    many = incidents(run_partitioned(records, partitions, CONFIG))
    assert one and many == one  # same ids, revisions and affected parcels
    assert len([a for a in many if a.revision == 0 and a.status is AlertStatus.FIRING]) == 1


def test_hub_delay_exception_scans_keep_the_parcel_at_the_hub() -> None:
    plain = incidents(hub_scenario(outage=True).run(config=CONFIG))
    with_exceptions = incidents(hub_scenario(outage=True, exceptions=True).run(config=CONFIG))
    assert with_exceptions and with_exceptions[0].alert_id == plain[0].alert_id
    assert with_exceptions[0].detected_at <= plain[0].detected_at


def test_stall_alerts_at_the_hub_during_the_incident_are_linked_to_it() -> None:
    sc = hub_scenario(outage=True)
    # one parcel stuck far longer than the outage: its stall fires while the incident is open
    p = sc.parcel("STUCK", deliver_within=20 * DAY).paid(OUTAGE_AT - 8 * H).dispatched(OUTAGE_AT - 7 * H)
    p.picked_up(OUTAGE_AT - 6 * H).arrived("HUB-B", OUTAGE_AT - H)
    alerts = sc.run(config=CONFIG, all_alerts=True)
    incs = incidents(alerts)
    stalls = [a for a in alerts if a.alert_type is AnomalyType.STALL and a.waybill_id == "STUCK"]
    assert stalls and stalls[0].incident_id is None  # the parcel engine does not know the incident
    open_then = [a for a in incs if a.detected_at <= stalls[0].detected_at]
    assert link_incident(stalls[0], open_then[-1:]).incident_id == incs[0].alert_id


def _stage_run(records: list[ScanEvent | Tick], partitions: int = 1) -> tuple[list[Alert], HubStage]:
    stage = HubStage(partitions, CONFIG.min_count)
    return run_partitioned(records, partitions, CONFIG, stage=stage), stage


def test_the_hub_learns_its_overdue_rate_only_from_normal_buckets() -> None:
    _, stage = _stage_run(list(interleave_ticks(hub_scenario(outage=True).events(), H)))
    score = stage.env.scores["HUB-B"]
    assert score.alpha is not None and score.beta is not None
    learned = score.beta + score.alpha
    assert learned > 20  # it learned
    # stuck parcels were not learned as normal: the hub's overdue rate stays small
    assert stage.scorer.scorer("HUB-B").alpha / learned < 0.1


@pytest.mark.parametrize("partitions", [1, 3])
def test_restoring_engines_and_stage_mid_incident_gives_the_same_alerts(partitions: int) -> None:
    records: list[ScanEvent | Tick] = list(
        interleave_ticks(hub_scenario(outage=True, exceptions=True).events(), H)
    )
    whole, _ = _stage_run(records, partitions)
    fired = next(a for a in incidents(whole) if a.status is AlertStatus.FIRING)
    # cut while the incident is open (just after it fired) and while the hub is only suspect
    cuts = [
        next(i for i, r in enumerate(records) if _time(r) > fired.detected_at),
        next(i for i, r in enumerate(records) if _time(r) > fired.detected_at - 40 * M),
    ]
    for cut in cuts:
        engines = [Engine(CONFIG) for _ in range(partitions)]
        stage = HubStage(partitions, CONFIG.min_count)
        before = run_partitioned(records[:cut], partitions, CONFIG, engines=engines, stage=stage)
        restored = [Engine.restore(CONFIG, e.take_changes().upserts, e.export_models()) for e in engines]
        stage = HubStage.restore(partitions, CONFIG.min_count, None, stage.export())
        after = run_partitioned(records[cut:], partitions, CONFIG, engines=restored, stage=stage)
        assert incidents(before + after) == incidents(whole)


def test_the_stage_waits_for_every_partition_and_ignores_duplicate_summaries() -> None:
    stage = HubStage(2, 30)
    fact = HubFact(1_000, "WB1", 1, "HUB-A", "east")
    assert stage.offer(HubSummary(source=0, tick_ms=60_000, facts=(fact,))) == []
    assert "HUB-A" not in stage.env.present  # partition 1 has not reached the tick yet
    stage.offer(
        HubSummary(source=0, tick_ms=60_000, facts=(HubFact(2_000, "WB2", 1, "HUB-A"),))
    )  # a re-emission
    stage.offer(HubSummary(source=1, tick_ms=120_000))
    assert stage.watermark_ms == 60_000 and list(stage.env.present["HUB-A"]) == ["WB1"]
    stage.offer(HubSummary(source=0, tick_ms=120_000, facts=(HubFact(61_000, "WB1", 0, "HUB-A"),)))
    assert stage.watermark_ms == 120_000 and stage.env.present["HUB-A"] == {}


def test_summaries_in_any_arrival_order_give_the_same_incidents() -> None:
    records = list(interleave_ticks(hub_scenario(outage=True).events(), H))
    engines = [Engine(CONFIG) for _ in range(3)]
    run_partitioned(records, 3, CONFIG, engines=engines, stage=HubStage(3, CONFIG.min_count))
    # the same summaries again, re-collected, offered partition by partition (the slowest last)
    engines = [Engine(CONFIG) for _ in range(3)]
    for p, e in enumerate(engines):
        e.hub_source = p
    summaries: list[list[HubSummary]] = [[], [], []]
    for r in records:
        targets = range(3) if isinstance(r, Tick) else [partition_for(r.waybill_id, 3)]
        for p in targets:
            engines[p].process([r])
            summaries[p].extend(engines[p].take_hub_summaries())
    stage = HubStage(3, CONFIG.min_count)
    late = [a for p in (2, 0, 1) for a in stage.offer_all(summaries[p])]
    assert late == incidents(run_partitioned(records, 1, CONFIG))


@pytest.mark.parametrize("knob", [{"eval_every_s": 0}, {"prior_alpha": 0}])
def test_bad_knobs_are_rejected(knob: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="hub_incident"):
        HubStage(1, 30, knob)
