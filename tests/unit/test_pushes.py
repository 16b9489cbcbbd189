"""The vendor-style push builders (demo, bench) speak what the real adapters accept.

Simulated journeys are turned into signed AfterShip- and Kuaidi100-style
history resends, then parsed by the receiver's own adapters and joined to
the builders' registration: every carrier scan comes back once with its
type and time, a resend gives the same ids, and the joined events carry the
registration's order fields.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from logiwatch.detectors.model import FINAL_EVENT_TYPES, ScanEvent
from logiwatch.sim.traffic import generate
from logiwatch.streams.ingest.aftership import AfterShipAdapter
from logiwatch.streams.ingest.feeds import FeedError
from logiwatch.streams.ingest.kuaidi100 import Kuaidi100Adapter
from logiwatch.streams.ingest.pushes import aftership_push, kuaidi100_push, pushed, registration_of
from logiwatch.streams.join import JoinConfig, to_scan_event

SECRET, SALT = "as-secret", "kd-salt"


def journeys(parcels: int = 40) -> dict[str, list[ScanEvent]]:
    events, _ = generate("default", seed=5, parcels=parcels)
    out: dict[str, list[ScanEvent]] = defaultdict(list)
    for ev in sorted(events, key=lambda e: e.event_time):
        out[ev.waybill_id].append(ev)
    return out


@pytest.mark.parametrize("feed", ["aftership", "kuaidi100"])
def test_each_resend_parses_to_the_carrier_scans_so_far_with_stable_ids(feed: str) -> None:
    aftership, kuaidi = AfterShipAdapter(SECRET, 900), Kuaidi100Adapter(SALT)
    checked = 0
    for wb, history in journeys().items():
        carrier = pushed(history)
        if not carrier:
            continue
        ids_before: list[str] = []
        for k in range(1, len(carrier) + 1):
            if feed == "aftership":
                body, headers = aftership_push(carrier[:k], SECRET, time.time())
                aftership.verify(headers, body, time.time())
                scans = aftership.parse(body, headers).scans
            else:
                body, headers = kuaidi100_push(carrier[:k], SALT)
                kuaidi.verify(headers, body, time.time())
                scans = kuaidi.parse(body, headers).scans
            scans = sorted(scans, key=lambda s: s.event_time)
            assert [s.event_type for s in scans] == [e.event_type for e in carrier[:k]], wb
            # local times at whole seconds, with or without an offset: the UTC instant comes back
            assert [s.event_time // 1000 for s in scans] == [e.event_time // 1000 for e in carrier[:k]]
            ids = [s.event_id for s in scans]
            assert ids[: len(ids_before)] == ids_before and len(set(ids)) == len(ids)  # a resend: same ids
            ids_before = ids
        checked += 1
    assert checked >= 20


def test_a_joined_push_carries_the_registration_and_consistent_regions() -> None:
    adapter = AfterShipAdapter(SECRET, 900)
    for history in list(journeys().values())[:20]:
        reg = registration_of(history[0])
        carrier = pushed(history)
        if not carrier:
            continue
        body, headers = aftership_push(carrier, SECRET, time.time())
        for s in adapter.parse(body, headers).scans:
            ev = to_scan_event(s, reg, s.event_time, JoinConfig())
            assert (ev.order_id, ev.merchant_id, ev.carrier_id) == (history[0].order_id, history[0].merchant_id,
                                                                    history[0].carrier_id)  # fmt: skip
            assert ev.promised_delivery_by == history[0].promised_delivery_by
            assert ev.region.startswith("CN-") and reg.origin_region.startswith("CN-")  # type: ignore[union-attr]
        if carrier[-1].event_type in FINAL_EVENT_TYPES:
            assert ev.event_type is carrier[-1].event_type


def test_a_push_signed_with_another_secret_is_refused() -> None:
    history = pushed(next(iter(journeys(5).values())))
    body, headers = aftership_push(history, "other", time.time())
    with pytest.raises(FeedError):
        AfterShipAdapter(SECRET, 900).verify(headers, body, time.time())
    body, headers = kuaidi100_push(history, "other")
    with pytest.raises(FeedError):
        Kuaidi100Adapter(SALT).verify(headers, body, time.time())
