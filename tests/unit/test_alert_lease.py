"""The pure parts of the HA leases: shares, key names, local deadlines, settings (no I/O)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from logiwatch.alerts.fencing import slot
from logiwatch.alerts.ha import LeaseKeeper
from logiwatch.alerts.lease import Lease, Leases, fair_share, lease_key
from logiwatch.alerts.ledger import ledger_key
from logiwatch.alerts.metrics import AlertMetrics
from logiwatch.alerts.store import AlertKeys
from logiwatch.config import Settings


@pytest.mark.parametrize(("leases", "members", "share"), [(3, 1, 3), (3, 2, 2), (3, 3, 1), (4, 3, 2), (1, 4, 1), (3, 0, 3)])
def test_every_lease_has_room_in_the_fair_shares(leases: int, members: int, share: int) -> None:
    assert fair_share(leases, members) == share
    assert fair_share(leases, members) * max(1, members) >= leases


def test_a_lease_key_and_its_fence_counter_share_one_hash_tag() -> None:
    key = lease_key("lw:", "deliver:cs")
    fence = key + ":fence"
    tag = key[key.index("{") + 1 : key.index("}")]
    assert tag == fence[fence.index("{") + 1 : fence.index("}")] == "lw:r:cs"
    assert lease_key("lw:", "escalate") != lease_key("lw:", "liability") != lease_key("other:", "liability")
    with pytest.raises(ValueError, match="braces"):
        lease_key("lw:", "deliver:{cs}")


def test_each_lease_lives_in_the_cluster_slot_of_what_it_guards() -> None:
    # so that each fenced write is one script in one slot (alerts/fencing.py)
    keys = AlertKeys("lw:")
    assert slot(lease_key("lw:", "deliver:cs")) == slot(keys.key("queue", "cs")) == slot(keys.key("nlog", "cs"))
    assert slot(lease_key("lw:", "deliver:cs")) != slot(lease_key("lw:", "deliver:ops"))
    assert slot(lease_key("lw:", "escalate")) == slot(keys.key("escalation")) == slot(keys.key("state", "open"))
    assert slot(lease_key("lw:", "liability")) == slot(ledger_key("lw:", "published"))
    assert slot(lease_key("lw:", "alertmanager")) == slot(lease_key("lw:", "alertmanager") + ":fence")


def test_a_lease_is_valid_locally_only_until_its_deadline_and_never_once_lost() -> None:
    lease = Lease("escalate", "k", 7, "a", ttl_s=10.0)
    assert not lease.valid()  # never renewed
    lease.extend(time.monotonic())
    assert lease.valid() and lease.value == "7|a"
    lease.extend(time.monotonic() - 9.5)  # renewed 9.5 s ago: past the 10% margin
    assert not lease.valid()
    lease.extend(time.monotonic())
    lease.lost = True
    assert not lease.valid()


def test_an_instance_id_with_the_value_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        Leases(aioredis.Redis(), "lw:", "a|b", 10.0)


def test_lease_settings_are_validated() -> None:
    assert Settings().alerts.lease_ttl_s == 10.0
    assert Settings(alerts={"lease_ttl_s": 3, "instance_id": "ha-a"}).alerts.instance_id == "ha-a"  # type: ignore[arg-type]
    for bad in ({"lease_ttl_s": 0.5}, {"lease_ttl_s": 301}, {"instance_id": "a|b"}, {"instance_id": "{a}"}, {"instance_id": ""}):
        with pytest.raises(ValidationError):
            Settings(alerts=bad)  # type: ignore[arg-type]


def test_instances_start_on_different_leases() -> None:
    async def nothing(lease: Lease) -> None:
        return None

    names = {"deliver:cs": nothing, "escalate": nothing, "liability": nothing}
    orders = []
    for owner in ("a", "b", "c"):
        keeper = LeaseKeeper(Leases(aioredis.Redis(), "lw:", owner, 3.0), dict(names), AlertMetrics(CollectorRegistry()))
        orders.append(keeper._order(["a", "b", "c"])[0])
    assert sorted(orders) == sorted(names)
    assert keeper.renew_s == 1.0
