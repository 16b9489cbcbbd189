"""The simulator is the ground truth of every backtest, so its labels are checked here
against the events it wrote, with independent code: each rule is recomputed from
the scans alone (times, nodes, coordinates), never from the simulator's tables.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest

from logiwatch.detectors.codec import decode_event, encode_event, write_jsonl
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import AnomalyType, EventType, Label, ScanEvent
from logiwatch.errors import ConfigError
from logiwatch.sim.traffic import generate, incidents, malformed_lines

A = AnomalyType
E = EventType
H = 3_600_000
SEED = 11
PARCELS = 2000


def km(a: ScanEvent, b: ScanEvent) -> float:
    assert a.lat is not None and a.lon is not None and b.lat is not None and b.lon is not None
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


class World:
    """Events regrouped per parcel (duplicates removed) and labels per parcel and type."""

    def __init__(self, events: list[ScanEvent], labels: list[Label]) -> None:
        self.events = events
        self.labels = labels
        seen: dict[str, ScanEvent] = {}
        self.scans: dict[str, list[ScanEvent]] = defaultdict(list)
        for ev in events:
            if ev.event_id in seen:
                assert seen[ev.event_id] == ev, "a duplicate must be the same record re-sent"
                continue
            seen[ev.event_id] = ev
            self.scans[ev.waybill_id].append(ev)
        for wb in self.scans:
            self.scans[wb].sort(key=lambda e: (e.event_time, e.event_id))
        self.by: dict[str, dict[AnomalyType, list[Label]]] = defaultdict(lambda: defaultdict(list))
        for lb in labels:
            assert lb.waybill_id is not None
            self.by[lb.waybill_id][lb.anomaly_type].append(lb)

    def has(self, wb: str, kind: AnomalyType) -> bool:
        return kind in self.by[wb]

    def of(self, wb: str, etype: EventType) -> list[ScanEvent]:
        return [e for e in self.scans[wb] if e.event_type is etype]

    def visits(self, wb: str) -> list[tuple[str, int, int | None]]:
        """(hub, arrived, departed) of real hub stays: an arrival followed by a departure
        at the same hub, or an arrival that is the parcel's last scan (lost there)."""

        out: list[tuple[str, int, int | None]] = []
        scans = self.scans[wb]
        for i, ev in enumerate(scans):
            if ev.event_type is not E.HUB_ARRIVED:
                continue
            rest = [e for e in scans[i + 1 :] if e.event_type is not E.EXCEPTION]
            if not rest:
                out.append((ev.node_id, ev.event_time, None))
            elif rest[0].event_type is E.HUB_DEPARTED and rest[0].node_id == ev.node_id:
                out.append((ev.node_id, ev.event_time, rest[0].event_time))
        return out


@pytest.fixture(scope="module")
def world() -> World:
    return World(*generate("default", SEED, PARCELS))


@pytest.fixture(scope="module")
def peak_world() -> World:
    return World(*generate("peak", SEED, PARCELS))


def test_same_seed_and_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    for run in ("a", "b"):
        events, labels = generate("default", 5, 300)
        write_jsonl(tmp_path / f"events-{run}.jsonl", events)
        write_jsonl(tmp_path / f"labels-{run}.jsonl", labels)
    assert (tmp_path / "events-a.jsonl").read_bytes() == (tmp_path / "events-b.jsonl").read_bytes()
    assert (tmp_path / "labels-a.jsonl").read_bytes() == (tmp_path / "labels-b.jsonl").read_bytes()


def test_a_different_seed_gives_different_traffic() -> None:
    a, _ = generate("default", 5, 300)
    b, _ = generate("default", 6, 300)
    assert [encode_event(e) for e in a[:200]] != [encode_event(e) for e in b[:200]]


def test_bad_scenario_or_start_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown scenario"):
        generate("summer", 1, 10)
    with pytest.raises(ConfigError, match="ISO 8601"):
        generate("default", 1, 10, "next tuesday")


def test_every_event_survives_the_edge_decoder(world: World) -> None:
    for ev in world.events:
        assert decode_event(encode_event(ev)) == ev


def test_file_order_is_arrival_order_with_bounded_noise(world: World) -> None:
    # arrival = event time + noise: most events are in order; disorder is bounded to about an hour
    running_max = 0
    behind: list[tuple[str, int]] = []
    for ev in world.events:
        if ev.event_time < running_max:
            behind.append((ev.waybill_id, running_max - ev.event_time))
        running_max = max(running_max, ev.event_time)
    stamped_early = {lb.waybill_id for lb in world.labels if lb.detail == "PICKED_UP stamped before ORDER_PAID"}
    real_behind = [d for wb, d in behind if wb not in stamped_early]
    assert 0.005 < len(behind) / len(world.events) < 0.1
    assert max(real_behind) > 10 * 60_000  # some events arrive beyond a 10-minute lateness
    assert max(real_behind) < 2 * H
    duplicates = len(world.events) - sum(len(s) for s in world.scans.values())
    assert 0.003 < duplicates / len(world.events) < 0.03


def test_every_anomaly_type_is_labelled_in_a_few_percent_of_parcels(world: World) -> None:
    parcels = len(world.scans)
    for kind in AnomalyType:
        share = sum(1 for wb in world.scans if world.has(wb, kind)) / parcels
        assert share > 0.004, kind
        assert share < 0.15, kind


def test_peak_has_about_three_times_the_volume(world: World, peak_world: World) -> None:
    ratio = len(peak_world.scans) / len(world.scans)
    assert 2.8 < ratio < 3.2
    assert 2.5 < len(peak_world.events) / len(world.events) < 3.5


def test_malformed_lines_all_fail_decoding_with_varied_reasons(world: World) -> None:
    reasons = set()
    for raw in malformed_lines(3, 45, world.events[:100]):
        with pytest.raises(DecodeError) as err:
            decode_event(raw)
        reasons.add(err.value.reason)
    assert {"bad_json", "not_object", "missing_field", "wrong_type", "bad_enum", "time_out_of_range"} <= reasons
    assert {"oversize", "unsupported_version", "bad_value"} <= reasons


# -- labels recomputed from the events ------------------------------------------------


def check_late_dispatch(w: World) -> None:
    for wb in w.scans:
        paid = w.of(wb, E.ORDER_PAID)[0]
        dispatched = w.of(wb, E.DISPATCHED)[0]
        late = dispatched.event_time > paid.promised_dispatch_by
        assert late == w.has(wb, A.LATE_DISPATCH), wb
        if late:
            assert w.by[wb][A.LATE_DISPATCH][0].onset_at == paid.promised_dispatch_by


def check_pickup_timeout(w: World) -> None:
    for wb in w.scans:
        dispatched = w.of(wb, E.DISPATCHED)[0]
        picked = w.of(wb, E.PICKED_UP)[0]
        slow = picked.event_time - dispatched.event_time > 60 * H
        assert slow == w.has(wb, A.PICKUP_TIMEOUT), wb
        if slow:
            assert w.by[wb][A.PICKUP_TIMEOUT][0].onset_at == dispatched.event_time


def hub_dwell_p95(w: World) -> dict[str, float]:
    normal: dict[str, list[int]] = defaultdict(list)
    for wb in w.scans:
        if w.by[wb].keys() - {A.PREDICTED_LATE}:
            continue
        for hub, arrived, departed in w.visits(wb):
            if departed is not None:
                normal[hub].append(departed - arrived)
    return {hub: sorted(v)[int(0.95 * (len(v) - 1))] for hub, v in normal.items() if len(v) >= 20}


def check_stall_and_lost(w: World) -> None:
    p95 = hub_dwell_p95(w)
    for wb in w.scans:
        finals = w.of(wb, E.DELIVERED) + w.of(wb, E.RETURNED)
        lost = not finals
        assert lost == w.has(wb, A.LIKELY_LOST), wb
        visits = w.visits(wb)
        if lost:
            last = w.scans[wb][-1]
            assert last.event_type is E.HUB_ARRIVED
            (label,) = w.by[wb][A.LIKELY_LOST]
            (stall,) = w.by[wb][A.STALL]
            assert label.onset_at == stall.onset_at == last.event_time
            assert label.node_id == stall.node_id == last.node_id
            continue
        stalls = w.by[wb].get(A.STALL, [])
        for hub, arrived, departed in visits:
            assert departed is not None
            ratio = (departed - arrived) / p95[hub] if hub in p95 else None
            at_this_stay = [lb for lb in stalls if lb.node_id == hub and lb.onset_at == arrived]
            if at_this_stay:
                assert ratio is None or ratio >= 5.5, (wb, hub, ratio)
            elif ratio is not None and not w.has(wb, A.HUB_INCIDENT):
                assert ratio < 3.0, (wb, hub, ratio)
        assert len(stalls) <= 1


def check_abnormal_segment(w: World) -> None:
    legs: dict[tuple[str, str, str], list[tuple[int, str, int]]] = defaultdict(list)
    for wb, scans in w.scans.items():
        hubs = [e for e in scans if e.event_type in (E.HUB_ARRIVED, E.HUB_DEPARTED)]
        for dep, arr in zip(hubs, hubs[1:], strict=False):
            if dep.event_type is E.HUB_DEPARTED and arr.event_type is E.HUB_ARRIVED and w.visits(wb):
                legs[(dep.node_id, arr.node_id, dep.carrier_id)].append((arr.event_time - dep.event_time, wb, dep.event_time))
    labelled = {(wb, lb.onset_at) for wb in w.scans for lb in w.by[wb].get(A.ABNORMAL_SEGMENT, [])}
    found = set()
    for group in legs.values():
        median = statistics.median(d for d, _, _ in group)
        for duration, wb, departed in group:
            if (wb, departed) in labelled:
                found.add((wb, departed))
                assert duration >= 2.2 * median or len(group) < 5, (wb, duration / H, median / H)
            elif len(group) >= 5 and not w.has(wb, A.CONTRADICTION):
                assert duration < 2.2 * median, (wb, duration / H, median / H)
    assert found == labelled


def check_misroute(w: World) -> None:
    for wb, scans in w.scans.items():
        dest_lat_lon = None
        for e in reversed(scans):
            if e.event_type is E.HUB_ARRIVED and e.region == e.dest_region:
                dest_lat_lon = e
                break
        real = [v[0] for v in w.visits(wb)]
        revisit = len(real) != len(set(real))
        hub_scans = {e.node_id: e for e in scans if e.event_type is E.HUB_ARRIVED and e.node_id in real}
        away = False
        if dest_lat_lon is not None:
            for a, b in zip(real, real[1:], strict=False):
                if a != b and km(hub_scans[b], dest_lat_lon) > km(hub_scans[a], dest_lat_lon) + 300:
                    away = True
        assert (revisit or away) == w.has(wb, A.MISROUTE), (wb, real)


def check_contradiction(w: World) -> None:
    for wb, scans in w.scans.items():
        paid = w.of(wb, E.ORDER_PAID)[0]
        picked = w.of(wb, E.PICKED_UP)[0]
        delivered = w.of(wb, E.DELIVERED)
        ofd_after = bool(delivered) and any(
            e.event_time > delivered[0].event_time for e in w.of(wb, E.OUT_FOR_DELIVERY)
        )
        located = [e for e in scans if e.lat is not None]
        teleport = any(
            km(a, b) > 100 and km(a, b) / max((b.event_time - a.event_time) / H, 1 / 60) > 300
            for a, b in zip(located, located[1:], strict=False)
        )
        backdated = picked.event_time < paid.event_time
        assert (teleport or ofd_after or backdated) == w.has(wb, A.CONTRADICTION), wb


def check_suspicious_delivery(w: World) -> None:
    for wb in w.scans:
        delivered = w.of(wb, E.DELIVERED)
        if not delivered:
            assert not w.has(wb, A.SUSPICIOUS_DELIVERY)
            continue
        d = delivered[0]
        no_ofd = not any(e.event_time < d.event_time for e in w.of(wb, E.OUT_FOR_DELIVERY))
        wrong_region = d.region != d.dest_region
        assert (no_ofd or wrong_region) == w.has(wb, A.SUSPICIOUS_DELIVERY), wb
        if no_ofd or wrong_region:
            assert w.by[wb][A.SUSPICIOUS_DELIVERY][0].onset_at == d.event_time


def check_hub_incident(w: World, scenario: str) -> None:
    windows = {inc.incident_id: inc for inc in incidents(scenario, SEED)}
    assert windows
    for wb in w.scans:
        expected = set()
        for hub, arrived, departed in w.visits(wb):
            for inc in windows.values():
                if inc.hub_id == hub and arrived < inc.end_ms and (departed is None or departed >= inc.start_ms):
                    expected.add((inc.incident_id, hub, max(arrived, inc.start_ms)))
        got = {(lb.incident_id, lb.node_id, lb.onset_at) for lb in w.by[wb].get(A.HUB_INCIDENT, [])}
        assert got == expected, wb
    affected = sum(1 for wb in w.scans if w.has(wb, A.HUB_INCIDENT))
    assert affected >= 20


def check_predicted_late(w: World) -> None:
    for wb, scans in w.scans.items():
        promise = scans[0].promised_delivery_by
        finals = [e.event_time for e in scans if e.event_type in (E.DELIVERED, E.RETURNED)]
        broken = not finals or min(finals) > promise
        assert broken == w.has(wb, A.PREDICTED_LATE), wb
        for kind, rows in w.by[wb].items():
            for lb in rows:
                assert lb.promise_broken_at == (promise if broken else None), (wb, kind)
        if broken:
            (late,) = w.by[wb][A.PREDICTED_LATE]
            causes = [lb.onset_at for k, rows in w.by[wb].items() if k is not A.PREDICTED_LATE for lb in rows]
            on_time = [c for c in causes if c <= promise]
            if on_time:
                assert late.onset_at == min(on_time)
            else:
                assert late.onset_at == max(e.event_time for e in scans if e.event_time <= promise)


CHECKS = {
    "late_dispatch": check_late_dispatch,
    "pickup_timeout": check_pickup_timeout,
    "stall_and_likely_lost": check_stall_and_lost,
    "abnormal_segment": check_abnormal_segment,
    "misroute": check_misroute,
    "contradiction": check_contradiction,
    "suspicious_delivery": check_suspicious_delivery,
    "predicted_late": check_predicted_late,
}


@pytest.mark.parametrize("rule", sorted(CHECKS))
def test_labels_match_what_the_default_events_show(world: World, rule: str) -> None:
    CHECKS[rule](world)


@pytest.mark.parametrize("rule", sorted(CHECKS))
def test_labels_match_what_the_peak_events_show(peak_world: World, rule: str) -> None:
    CHECKS[rule](peak_world)


def test_hub_incident_labels_are_exactly_the_parcels_at_the_hub_during_the_window(
    world: World, peak_world: World
) -> None:
    check_hub_incident(world, "default")
    check_hub_incident(peak_world, "peak")


def test_most_normal_parcels_arrive_on_time_with_margin(world: World) -> None:
    normal = [wb for wb in world.scans if not world.by[wb]]
    assert len(normal) > 0.7 * len(world.scans)
    margins = sorted(
        world.scans[wb][0].promised_delivery_by - world.of(wb, E.DELIVERED)[0].event_time
        for wb in normal
        if world.of(wb, E.DELIVERED)
    )
    assert margins[len(margins) // 2] > 12 * H


def test_labels_round_trip_through_jsonl(world: World, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "labels.jsonl", world.labels)
    decoded = [msgspec.json.decode(line, type=Label) for line in (tmp_path / "labels.jsonl").read_bytes().splitlines()]
    assert decoded == world.labels


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        (A.STALL, "stall_and_likely_lost"),
        (A.LATE_DISPATCH, "late_dispatch"),
        (A.MISROUTE, "misroute"),
        (A.CONTRADICTION, "contradiction"),
        (A.PREDICTED_LATE, "predicted_late"),
        (A.ABNORMAL_SEGMENT, "abnormal_segment"),
    ],
)
def test_the_label_checks_catch_a_missing_label(world: World, kind: AnomalyType, rule: str) -> None:
    victim = next(lb for lb in world.labels if lb.anomaly_type is kind)
    broken = World(world.events, [lb for lb in world.labels if lb is not victim])
    with pytest.raises((AssertionError, ValueError)):  # ValueError: a one-label unpacking found none
        CHECKS[rule](broken)
