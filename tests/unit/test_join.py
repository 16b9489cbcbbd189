"""Contract v2 join: registrations + slim scans become the engine's v1 scan events."""

from __future__ import annotations

import msgspec
import pytest

from logiwatch.detectors.codec import decode_record, decode_registration, encode_record
from logiwatch.detectors.engine import Engine, EngineConfig
from logiwatch.detectors.errors import DecodeError
from logiwatch.detectors.model import (
    UNREGISTERED_MERCHANT,
    EventType,
    NodeType,
    Scan,
    ScanEvent,
    ShipmentRegistration,
    Tick,
)
from logiwatch.streams.ingest.locations import location_node_id
from logiwatch.streams.join import JoinConfig, JoinEngine, RegistrationTable

T0 = 1_790_000_000_000
MIN = 60_000
H = 3_600_000


class Recorder:
    """An inner engine that records what the join hands it (the real engine is used below too)."""

    def __init__(self) -> None:
        self.seen: list[ScanEvent | Tick] = []

    @property
    def watermark_ms(self) -> int | None:
        return None

    def process(self, records: list[ScanEvent | Tick]) -> list:  # type: ignore[type-arg]
        self.seen.extend(records)
        return []

    def take_changes(self) -> msgspec.Struct:
        class C(msgspec.Struct):
            upserts: dict[str, bytes] = {}
            deletes: list[str] = []

        return C()

    def take_model_changes(self) -> None:
        return None

    def stats(self) -> dict[str, float]:
        return {}


def scan(i: int, t: int, etype: EventType = EventType.HUB_ARRIVED, wb: str = "WB1", **kw: object) -> Scan:
    return Scan(
        schema_version=2,
        event_id=f"{wb}-{i}",
        waybill_id=wb,
        event_time=t,
        event_type=etype,
        source="test",
        city="Shenzhen",
        admin_area="440300",
        country="CN",
        location="Bao'an hub",
        **kw,  # type: ignore[arg-type]
    )


def reg(wb: str = "WB1", at: int = T0, **kw: object) -> ShipmentRegistration:
    fields: dict[str, object] = {
        "order_id": "O1",
        "merchant_id": "M1",
        "carrier_id": "C1",
        "promised_dispatch_by": T0 + 24 * H,
        "promised_delivery_by": T0 + 72 * H,
        "order_amount": 99.5,
        "category": "books",
        "origin_region": "CN-440300",
        "dest_region": "CN-110000",
    }
    fields.update(kw)
    return ShipmentRegistration(waybill_id=wb, registered_at=at, **fields)  # type: ignore[arg-type]


def make(table: RegistrationTable | None, wait_ms: int = 10 * MIN) -> tuple[JoinEngine, Recorder]:
    inner = Recorder()
    return JoinEngine(inner, lambda: table, JoinConfig(wait_ms=wait_ms)), inner


def test_a_scan_of_a_registered_parcel_becomes_a_v1_event_with_the_registration() -> None:
    table = RegistrationTable()
    table.put(reg())
    join, inner = make(table)
    join.process([scan(1, T0 + H)])
    (ev,) = inner.seen
    assert isinstance(ev, ScanEvent)
    assert (ev.order_id, ev.merchant_id, ev.carrier_id, ev.order_amount, ev.category) == ("O1", "M1", "C1", 99.5, "books")
    assert ev.promised_delivery_by == T0 + 72 * H and ev.dest_region == "CN-110000"
    assert ev.node_id == location_node_id(country="CN", admin_area="440300", city="Shenzhen", location="Bao'an hub")
    assert ev.node_type is NodeType.HUB and ev.region == "CN-440300"
    assert ev.registration is None


def test_a_scan_before_its_registration_waits_and_is_joined_when_it_arrives() -> None:
    table = RegistrationTable()
    join, inner = make(table)
    join.process([scan(1, T0), scan(2, T0 + MIN, EventType.HUB_DEPARTED)])
    assert inner.seen == []
    table.put(reg())
    join.process([Tick(tick_time=T0 + 2 * MIN)])
    joined = [r for r in inner.seen if isinstance(r, ScanEvent)]
    assert [e.event_id for e in joined] == ["WB1-1", "WB1-2"]
    assert all(e.merchant_id == "M1" and e.registration is None for e in joined)
    assert join.waiting == {}


def test_without_a_registration_the_scan_goes_on_with_defaults_after_the_wait() -> None:
    join, inner = make(RegistrationTable(), wait_ms=10 * MIN)
    join.process([scan(1, T0)])
    join.process([Tick(tick_time=T0 + 10 * MIN - 1)])
    assert not [r for r in inner.seen if isinstance(r, ScanEvent)]
    join.process([Tick(tick_time=T0 + 10 * MIN)])
    (ev,) = [r for r in inner.seen if isinstance(r, ScanEvent)]
    assert ev.registration == "missing" and ev.merchant_id == UNREGISTERED_MERCHANT
    assert ev.promised_delivery_by == T0 + JoinConfig().default_delivery_ms
    # the parcel's later scans no longer wait
    join.process([scan(2, T0 + 11 * MIN, EventType.HUB_DEPARTED)])
    assert [r.event_id for r in inner.seen if isinstance(r, ScanEvent)] == ["WB1-1", "WB1-2"]


def test_the_waiting_scans_survive_a_snapshot_and_restore() -> None:
    table = RegistrationTable()
    join, _ = make(table)
    join.process([scan(1, T0), scan(2, T0 + MIN)])
    changes = join.take_changes()
    rest, waiting = JoinEngine.split_snapshot(dict(changes.upserts))
    assert rest == {} and [s.event_id for s in waiting["WB1"].scans] == ["WB1-1", "WB1-2"]
    table.put(reg())
    inner = Recorder()
    restored = JoinEngine(inner, lambda: table, JoinConfig(), waiting)
    restored.process([Tick(tick_time=T0 + 2 * MIN)])
    assert [e.merchant_id for e in inner.seen if isinstance(e, ScanEvent)] == ["M1", "M1"]
    # the join's hash field goes away with the release
    assert restored.take_changes().deletes == ["\x00join:WB1"]


def test_a_later_registration_supersedes_and_an_older_one_does_not() -> None:
    table = RegistrationTable()
    assert table.put(reg(at=T0, promised_delivery_by=T0 + 72 * H))
    assert table.put(reg(at=T0, updated_at=T0 + H, promised_delivery_by=T0 + 96 * H, carrier_id="C2"))
    assert not table.put(reg(at=T0, promised_delivery_by=T0 + 10 * H))
    got = table.get("WB1")
    assert got is not None and got.promised_delivery_by == T0 + 96 * H and got.carrier_id == "C2"
    restored = RegistrationTable.restore(dict(table.take_changes().upserts), 5)
    assert restored.get("WB1") == got and restored.loaded_offset == 5


def test_alerts_of_a_parcel_without_registration_say_so_in_their_evidence() -> None:
    engine = Engine(EngineConfig())
    join = JoinEngine(engine, lambda: None, JoinConfig(wait_ms=0))
    join.process([scan(1, T0, EventType.PICKED_UP), scan(2, T0 + H, EventType.HUB_ARRIVED)])
    alerts = join.process([Tick(tick_time=T0 + 30 * 24 * H)])
    assert alerts, "a parcel silent for 30 days must alert"
    assert all(a.evidence.get("registration") == "missing" for a in alerts if a.waybill_id == "WB1")

    registered = RegistrationTable()
    registered.put(reg())
    engine2 = Engine(EngineConfig())
    join2 = JoinEngine(engine2, lambda: registered, JoinConfig(wait_ms=0))
    join2.process([scan(1, T0, EventType.PICKED_UP), scan(2, T0 + H, EventType.HUB_ARRIVED)])
    alerts2 = join2.process([Tick(tick_time=T0 + 30 * 24 * H)])
    assert alerts2 and all("registration" not in a.evidence for a in alerts2)


def test_the_decoder_tells_v1_from_v2_and_gives_reasons() -> None:
    v2 = encode_record(scan(1, T0))
    assert isinstance(decode_record(v2, key=b"WB1"), Scan)
    v1 = ScanEvent(
        event_id="e", waybill_id="WB1", order_id="O", merchant_id="M", carrier_id="C",
        event_type=EventType.PICKED_UP, node_id="N", node_type=NodeType.OUTLET, region="R",
        origin_region="R", dest_region="R", event_time=T0, promised_dispatch_by=T0,
        promised_delivery_by=T0, category="", order_amount=1.0,
    )  # fmt: skip
    assert isinstance(decode_record(encode_record(v1)), ScanEvent)
    cases = {
        b'{"schema_version":2,"event_id":"e","waybill_id":"W","event_time":1790000000000}': "missing_field",
        b'{"schema_version":2,"event_id":"e","waybill_id":"W","event_time":1790000000000,"event_type":"X"}': "bad_enum",
        b'{"schema_version":2,"event_id":"e","waybill_id":"W","event_time":5,"event_type":"DELIVERED"}': "time_out_of_range",
        b'{"schema_version":9,"event_id":"e"}': "unsupported_version",
        b'{"event_id":"e"}': "missing_field",
    }
    for raw, reason in cases.items():
        with pytest.raises(DecodeError) as exc:
            decode_record(raw)
        assert exc.value.reason == reason, raw
    with pytest.raises(DecodeError) as exc:
        decode_record(v2, key=b"OTHER")
    assert exc.value.reason == "key_mismatch"
    good = encode_record(reg())
    assert decode_registration(good, key=b"WB1") == reg()
    for raw, reason in {
        b"[1]": "not_object",
        b'{"waybill_id":"W"}': "missing_field",
        b'{"waybill_id":"W","registered_at":1790000000000,"schema_version":1}': "unsupported_version",
        b'{"waybill_id":"W","registered_at":3}': "time_out_of_range",
        b"{": "bad_json",
    }.items():
        with pytest.raises(DecodeError) as exc:
            decode_registration(raw)
        assert exc.value.reason == reason, raw


def v1(t: int, wb: str = "WB9", i: int = 0) -> ScanEvent:
    return ScanEvent(
        event_id=f"{wb}-v1-{i}", waybill_id=wb, order_id="O", merchant_id="M", carrier_id="C",
        event_type=EventType.PICKED_UP, node_id="N", node_type=NodeType.OUTLET, region="R",
        origin_region="R", dest_region="R", event_time=t, promised_dispatch_by=t,
        promised_delivery_by=t, category="", order_amount=1.0,
    )  # fmt: skip


def test_a_resent_history_of_days_waits_on_event_time_from_where_the_partition_clock_stands() -> None:
    # the partition is live at `now` (another parcel's scan); one feed push then delivers three
    # days of old checkpoints at once: they wait wait_ms of event time from `now`
    now = T0 + 90 * 24 * H
    table = RegistrationTable()
    join, inner = make(table, wait_ms=10 * MIN)
    join.process([v1(now)])
    burst = [scan(1, T0, EventType.PICKED_UP), scan(2, T0 + 24 * H), scan(3, T0 + 72 * H, EventType.HUB_DEPARTED)]
    join.process(burst)
    assert [r for r in inner.seen if isinstance(r, ScanEvent) and r.waybill_id == "WB1"] == []
    table.put(reg())
    join.process([Tick(tick_time=now + MIN)])
    joined = [r for r in inner.seen if isinstance(r, ScanEvent) and r.waybill_id == "WB1"]
    assert [e.event_id for e in joined] == ["WB1-1", "WB1-2", "WB1-3"] and all(e.merchant_id == "M1" for e in joined)
    # without a registration the burst goes on once the event clock is wait_ms past `now`
    join2, inner2 = make(RegistrationTable(), wait_ms=10 * MIN)
    join2.process([v1(now), scan(1, T0), scan(2, T0 + 72 * H)])
    join2.process([Tick(tick_time=now + 10 * MIN - 1)])
    assert [r.event_id for r in inner2.seen if isinstance(r, ScanEvent)] == ["WB9-v1-0"]
    join2.process([Tick(tick_time=now + 10 * MIN)])
    assert [r.registration for r in inner2.seen if isinstance(r, ScanEvent)] == [None, "missing", "missing"]


def test_a_parcel_due_within_its_first_batch_sees_the_registrations_of_the_next_one_first() -> None:
    # the worker handles the shipments and events topics in separate batches, and one events batch
    # can span more than the wait: the registration produced before the scan must still join it
    table = RegistrationTable()
    join, inner = make(table, wait_ms=10 * MIN)
    join.process([scan(1, T0, EventType.PICKED_UP), v1(T0 + H)])  # WB1 falls due inside this batch
    assert [r.event_id for r in inner.seen if isinstance(r, ScanEvent)] == ["WB9-v1-0"]
    table.put(reg())  # the shipments batch, handled in between
    join.process([v1(T0 + 2 * H, i=1)])
    got = [(r.event_id, r.merchant_id) for r in inner.seen if isinstance(r, ScanEvent)]
    assert got == [("WB9-v1-0", "M"), ("WB1-1", "M1"), ("WB9-v1-1", "M")]
    # without a registration it goes on with defaults at the next batch's start, before its records
    join2, inner2 = make(RegistrationTable(), wait_ms=10 * MIN)
    join2.process([scan(1, T0, EventType.PICKED_UP), v1(T0 + H)])
    join2.process([v1(T0 + 2 * H, i=1)])
    got2 = [(r.event_id, r.registration) for r in inner2.seen if isinstance(r, ScanEvent)]
    assert got2 == [("WB9-v1-0", None), ("WB1-1", "missing"), ("WB9-v1-1", None)]


def test_a_parcel_waiting_since_an_earlier_batch_goes_on_where_the_clock_passes_its_due() -> None:
    join, inner = make(RegistrationTable(), wait_ms=10 * MIN)
    join.process([v1(T0), scan(1, T0 - H)])  # due at T0 + 10 min (the clock when it came)
    join.process([v1(T0 + 5 * MIN, i=1), v1(T0 + 10 * MIN, i=2), v1(T0 + 20 * MIN, i=3)])
    order = [r.event_id for r in inner.seen if isinstance(r, ScanEvent)]
    assert order == ["WB9-v1-0", "WB9-v1-1", "WB1-1", "WB9-v1-2", "WB9-v1-3"]


def test_v1_records_pass_through_untouched_and_still_move_the_join_clock() -> None:
    join, inner = make(RegistrationTable(), wait_ms=10 * MIN)
    batch = [v1(T0), Tick(tick_time=T0 + 6 * MIN)]
    join.process(batch)
    assert inner.seen == batch and join.clock_ms == T0 + 6 * MIN
    # a slim scan arriving now waits wait_ms from the clock, not from its old event time
    join.process([scan(1, T0 - 24 * H)])
    join.process([Tick(tick_time=T0 + 16 * MIN - 1)])
    assert len(inner.seen) == 3  # the tick only
    join.process([Tick(tick_time=T0 + 16 * MIN)])
    assert [r.registration for r in inner.seen if isinstance(r, ScanEvent) and r.event_id == "WB1-1"] == ["missing"]


def test_a_registration_after_the_defaults_reaches_the_parcel_with_its_next_scan() -> None:
    table = RegistrationTable()
    engine = Engine(EngineConfig())
    join = JoinEngine(engine, lambda: table, JoinConfig(wait_ms=10 * MIN))
    join.process([scan(1, T0, EventType.PICKED_UP)])
    join.process([Tick(tick_time=T0 + 10 * MIN)])
    st = engine.state_of("WB1")
    assert st is not None and st.merchant == UNREGISTERED_MERCHANT
    assert st.deliver_by == T0 + JoinConfig().default_delivery_ms
    table.put(reg(promised_delivery_by=T0 + 96 * H))
    join.process([scan(2, T0 + H)])
    st = engine.state_of("WB1")
    assert st is not None
    assert (st.order, st.merchant, st.carrier, st.amount, st.category) == ("O1", "M1", "C1", 99.5, "books")
    assert (st.dest, st.deliver_by, st.dispatch_by) == ("CN-110000", T0 + 96 * H, T0 + 24 * H)


def test_a_registration_update_changes_the_promise_and_carrier_of_the_parcel_and_its_alerts() -> None:
    table = RegistrationTable()
    table.put(reg(promised_delivery_by=T0 + 72 * H))
    engine = Engine(EngineConfig())
    join = JoinEngine(engine, lambda: table, JoinConfig(wait_ms=0))
    join.process([scan(1, T0, EventType.PICKED_UP), scan(2, T0 + H)])
    table.put(reg(updated_at=T0 + 2 * H, promised_delivery_by=T0 + 120 * H, carrier_id="C2"))
    join.process([scan(3, T0 + 3 * H, EventType.HUB_DEPARTED)])
    st = engine.state_of("WB1")
    assert st is not None and (st.carrier, st.deliver_by) == ("C2", T0 + 120 * H)
    alerts = join.process([Tick(tick_time=T0 + 30 * 24 * H)])
    mine = [a for a in alerts if a.waybill_id == "WB1"]
    assert mine and all(a.carrier_id == "C2" and a.promised_delivery_by == T0 + 120 * H for a in mine)
    # only the newest scan carries the order fields: an older scan resent late changes nothing
    table.put(reg(updated_at=T0 + 4 * H, promised_delivery_by=T0 + 150 * H))
    join.process([scan(0, T0 - H, EventType.PICKED_UP)])
    st = engine.state_of("WB1")
    assert st is not None and st.deliver_by == T0 + 120 * H
