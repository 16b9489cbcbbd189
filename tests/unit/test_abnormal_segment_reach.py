"""In transit, no leg is abnormal before the carrier's usual longest line haul.

The next hop is not known while a parcel is on the road: from HUB-A this carrier's parcels
usually take a one-hour hop to HUB-B, but its trucks also run 20 h hauls (HUB-B to HUB-C). A
parcel 8 h out of HUB-A may be on either kind (a misrouted parcel on a long truck looks exactly
like that), so the in-transit check waits for the carrier's p99 leg; past it, it still fires.
"""

from __future__ import annotations

import random

from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import AnomalyType
from logiwatch.detectors.testing import H, Scenario

CFG = EngineConfig(min_count=10)


def _traffic(sc: Scenario) -> None:
    rng = random.Random(5)
    for i in range(40):
        t = i * H
        a = t + 3 * H
        b = a + 2 * H + int(H * rng.uniform(0.8, 1.2))  # the short hop
        c = b + 2 * H + int(20 * H * rng.uniform(0.9, 1.1))  # the long haul
        p = sc.parcel(f"N{i}", deliver_within=150 * H).paid(t).dispatched(t + H).picked_up(t + 2 * H)
        p.arrived("HUB-A", a).departed(a + H).arrived("HUB-B", b).departed(b + H).arrived("HUB-C", c)
        p.delivered(c + 5 * H)


def _departed_at_hour_104() -> tuple[Scenario, int]:
    """The traffic, and a parcel "OUT" that leaves HUB-A at hour 104 and is not seen again."""

    sc = Scenario()
    _traffic(sc)
    t = 100 * H
    sc.parcel("OUT", deliver_within=150 * H).paid(t).dispatched(t + H).picked_up(t + 2 * H).arrived(
        "HUB-A", t + 3 * H
    ).departed(t + 4 * H)
    return sc, t


def _in_transit(sc: Scenario, until: int) -> list[dict[str, float | int | str | bool | None]]:
    alerts = sc.run(config=CFG, detectors=("abnormal_segment",), until=until)
    return [a.evidence for a in alerts if a.alert_type is AnomalyType.ABNORMAL_SEGMENT and a.waybill_id == "OUT"]


def test_a_parcel_out_longer_than_the_hop_but_not_than_the_carriers_hauls_is_not_abnormal_yet() -> None:
    sc, t = _departed_at_hour_104()
    assert _in_transit(sc, t + 4 * H + 15 * H) == []  # the hop's own limit (~5 h) alone would have fired


def test_past_the_carriers_longest_haul_the_in_transit_check_fires() -> None:
    sc, t = _departed_at_hour_104()
    got = _in_transit(sc, t + 4 * H + 40 * H)
    assert len(got) == 1 and got[0]["in_transit"] is True
    limit_s = got[0]["limit_s"]
    assert isinstance(limit_s, float)
    assert 20 * 3600 < limit_s < 26 * 3600  # the carrier's p99 leg, not the hop's
