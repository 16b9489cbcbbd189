"""Before the carrier has the parcel (paid, dispatched), a new carrier's parcel borrows every carrier's model.

The remaining time after the payment and after the dispatch is mostly the merchant's wait plus
the transit, in units of the promise's whole span; until the carrier's own keys for those stages
are trusted, the stage's key over all carriers (``*|<type>``) decides, moved to the carrier's and
the lane's own few parcels. A parcel of a carrier with no history, paid and never dispatched,
was warned only when its promise passed (no key of its carrier was trusted); now the other
carriers' parcels say it is late long before that. Stages after the hand-over keep the carrier's
own keys only: the feeds of different carriers differ there.
"""

from __future__ import annotations

import random

from logiwatch.detectors.engine import EngineConfig
from logiwatch.detectors.model import AnomalyType
from logiwatch.detectors.predicted_late import remaining_keys
from logiwatch.detectors.state import DISPATCHED, HUB_ARRIVED, PAID, ParcelState
from logiwatch.detectors.testing import H, Scenario

CFG = EngineConfig(min_count=10)


def _traffic(sc: Scenario, n: int = 40) -> None:
    """Carrier C1: dispatched within ~8 h of the payment, delivered ~60 h later, on 108 h promises."""

    rng = random.Random(3)
    for i in range(n):
        paid = i * H
        dispatched = paid + int(8 * H * rng.lognormvariate(0.0, 0.2))
        sc.parcel(f"N{i}", deliver_within=108 * H).paid(paid).dispatched(dispatched).delivered(dispatched + 60 * H)


def test_a_new_carriers_parcel_never_dispatched_is_warned_before_its_promise() -> None:
    sc = Scenario()
    _traffic(sc)
    t = 150 * H
    # a new merchant too (its warehouse node has no key either)
    sc.parcel("STUCK", carrier="NEW", deliver_within=108 * H).scan("ORDER_PAID", t, node="M-9")
    alerts = sc.run(config=CFG, detectors=("predicted_late",))
    warn = next(a for a in alerts if a.alert_type is AnomalyType.PREDICTED_LATE and a.waybill_id == "STUCK")
    assert warn.evidence["baseline_key"] == "*|0"
    assert float(str(warn.evidence["lead_s"])) >= 24 * 3600


def test_only_the_stages_before_the_hand_over_have_the_key_over_all_carriers() -> None:
    state = ParcelState("W", "O", "M", "C9", "books", 1.0, "east", "north", 0, 0)
    assert remaining_keys(state, "WH-1", PAID)[-1] == "*|0"
    assert remaining_keys(state, "WH-1", DISPATCHED)[-1] == "*|1"
    assert remaining_keys(state, "HUB-A", HUB_ARRIVED) == ("HUB-A|3|north", "C9|3|east>north", "C9|3")
