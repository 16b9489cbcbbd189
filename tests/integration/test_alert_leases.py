"""Leases and fencing tokens on the real Redis (alerts/lease.py, alerts/ha.py).

Two "instances" here are two :class:`Leases` with different owners on one
prefix; a takeover is forced by letting a short TTL run out, which is what
a SIGKILLed or SIGSTOPped holder looks like to Redis.

The tests run on one Redis and on a 3-master Redis Cluster (where a fenced
write checks the lease inside its one-slot script, alerts/fencing.py), except
the three that drive :meth:`Lease.begin`'s WATCH/MULTI pipeline by hand: that
is the one-Redis mechanism (``single_redis_url``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from logiwatch.alerts.ha import LeaseKeeper, Work
from logiwatch.alerts.lease import FENCED, FRESH, HANDOVER, TAKEOVER, Lease, LeaseLost, Leases
from logiwatch.alerts.ledger import Ledger
from logiwatch.alerts.liability import RuleSet
from logiwatch.alerts.metrics import AlertMetrics, RedisCollector
from logiwatch.alerts.model import FIRING as FIRING_KIND
from logiwatch.alerts.model import AlertRecord, AlertState, Notification
from logiwatch.alerts.pipeline import Pipeline
from logiwatch.alerts.store import AlertStore, now_ms
from logiwatch.redisconn import connect, connect_sync
from tests.integration.test_alert_service_harness import routes, stall

TTL_S = 1.0


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    return redis_url_both


def run(redis_url: str, body: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = connect(redis_url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def expire(lease: Lease) -> None:
    """Wait past the lease's TTL (the holder is 'stopped': it renews nothing)."""

    await asyncio.sleep(lease.ttl_s + 0.2)


def test_tokens_grow_with_every_acquisition_and_only_one_instance_holds_a_lease(redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        a, b = Leases(r, redis_prefix, "a", TTL_S), Leases(r, redis_prefix, "b", TTL_S)
        got = await a.acquire("escalate")
        assert got is not None and got[0].token == 1 and got[1] == FRESH
        assert await b.acquire("escalate") is None
        again = await a.acquire("escalate")
        assert again is not None and again[0].token == 1 and again[1] == 0  # already ours: renewed
        assert await a.renew(got[0])
        await a.release(got[0])
        handed = await b.acquire("escalate")
        assert handed is not None and handed[0].token == 2 and handed[1] == HANDOVER
        await expire(handed[0])
        taken = await a.acquire("escalate")
        assert taken is not None and taken[0].token == 3 and taken[1] == TAKEOVER
        assert not await b.renew(handed[0]) and handed[0].lost
        assert await a.holders(["escalate", "liability"]) == {"escalate": (3, "a")}

    run(redis_url, body)


def test_a_write_started_before_a_takeover_is_refused_and_changes_nothing(single_redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        a, b = Leases(r, redis_prefix, "a", TTL_S), Leases(r, redis_prefix, "b", TTL_S)
        got = await a.acquire("liability")
        assert got is not None
        old = got[0]
        pipe = await old.begin(r)  # token checked, MULTI open: then the holder pauses
        pipe.set(redis_prefix + "cursor", "from-a")
        await expire(old)
        assert await b.acquire("liability") is not None
        with pytest.raises(FENCED):
            await pipe.execute()
        assert await r.get(redis_prefix + "cursor") is None
        with pytest.raises(LeaseLost):
            await old.begin(r)
        assert old.lost and not old.valid()

    run(single_redis_url, body)


def test_renewing_a_lease_does_not_abort_its_holders_own_write_in_progress(single_redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        a = Leases(r, redis_prefix, "a", TTL_S)
        got = await a.acquire("deliver:cs")
        assert got is not None
        pipe = await got[0].begin(r)
        pipe.set(redis_prefix + "booked", "yes")
        assert await a.renew(got[0])  # the keeper renews while a booking is in flight
        await pipe.execute()
        assert await r.get(redis_prefix + "booked") == b"yes"

    run(single_redis_url, body)


def test_an_expired_lease_nobody_took_still_refuses_its_old_holder(single_redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        got = await Leases(r, redis_prefix, "a", TTL_S).acquire("escalate")
        assert got is not None
        await expire(got[0])
        with pytest.raises(LeaseLost):
            await got[0].begin(r)

    run(single_redis_url, body)


def test_the_publication_cursor_moved_by_an_ex_publisher_is_refused_and_unchanged(redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        ledger = Ledger(r, redis_prefix, RuleSet(versions=()))
        a, b = Leases(r, redis_prefix, "a", TTL_S), Leases(r, redis_prefix, "b", TTL_S)
        old = await a.acquire("liability")
        assert old is not None
        await ledger.advance("1-0", old[0])
        await expire(old[0])
        new = await b.acquire("liability")
        assert new is not None
        with pytest.raises(FENCED):
            await ledger.advance("0-1", old[0])  # a paused ex-publisher would move the cursor back
        assert await r.get(ledger.key("published")) == b"1-0"
        await ledger.advance("2-0", new[0])
        assert await r.get(ledger.key("published")) == b"2-0"

    run(redis_url, body)


def test_delivery_bookings_of_an_ex_holder_are_refused_and_the_id_stays_queued(redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        store = AlertStore(r, redis_prefix)
        a, b = Leases(r, redis_prefix, "a", TTL_S), Leases(r, redis_prefix, "b", TTL_S)
        notif = Notification(nid="msg_1", receiver="cs", alert_id="stall-1", kind=FIRING_KIND, created_ms=now_ms())
        rec = AlertRecord(alert=stall(1), state=AlertState.OPEN, first_seen_ms=1, updated_ms=1)
        await store.commit(rec, None, [(notif, 0)])
        got = await a.acquire("deliver:cs")
        assert got is not None
        await expire(got[0])
        mine = await b.acquire("deliver:cs")
        assert mine is not None
        notif.delivered_ms = now_ms()
        with pytest.raises(FENCED):
            await store.delivered(notif, got[0])
        assert await store.due("cs", now_ms()) == ["msg_1"]
        await store.delivered(notif, mine[0])
        assert await store.due("cs", now_ms()) == []

    run(redis_url, body)


def test_an_escalation_fires_once_even_when_its_ex_owner_runs_it_after_a_takeover(redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        store = AlertStore(r, redis_prefix)
        pipeline = Pipeline(store, routes({"cs": ("http://127.0.0.1:9/hook", "generic")}, escalate_after_s=60))
        t0 = now_ms()
        await pipeline.process(stall(1), t0)  # warning: escalates to critical when due
        a, b = Leases(r, redis_prefix, "a", TTL_S), Leases(r, redis_prefix, "b", TTL_S)
        old = await a.acquire("escalate")
        assert old is not None
        await expire(old[0])
        new = await b.acquire("escalate")
        assert new is not None
        due = t0 + 61_000
        with pytest.raises(FENCED):
            await pipeline.escalate_due(due, old[0])
        assert (await store.get("stall-1")).escalations == 0  # type: ignore[union-attr]
        fired = await pipeline.escalate_due(due, new[0])
        assert [n.kind.key for n in fired] == ["escalated-critical"]
        assert await pipeline.escalate_due(due + 61_000, new[0]) == []
        rec = await store.get("stall-1")
        assert rec is not None and rec.escalations == 1 and rec.alert.severity.value == "critical"
        assert await store.due_escalations(due + 10**9) == []

    run(redis_url, body)


def _keeper(r: aioredis.Redis, prefix: str, owner: str, ran: dict[str, list[str]]) -> tuple[LeaseKeeper, AlertMetrics, CollectorRegistry]:
    def work(name: str) -> Work:
        async def go(lease: Lease) -> None:
            ran.setdefault(name, []).append(owner)
            while not lease.lost:
                await asyncio.sleep(0.05)

        return go

    registry = CollectorRegistry()
    metrics = AlertMetrics(registry)
    names = ("deliver:cs", "escalate", "liability")
    return LeaseKeeper(Leases(r, prefix, owner, TTL_S), {n: work(n) for n in names}, metrics), metrics, registry


def test_keepers_share_the_leases_and_a_survivor_takes_a_dead_ones_within_the_ttl(redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        ran: dict[str, list[str]] = {}
        ka, _, reg_a = _keeper(r, redis_prefix, "a", ran)
        kb, _, reg_b = _keeper(r, redis_prefix, "b", ran)
        await ka.tick()
        assert sorted(ka.held) == ["deliver:cs", "escalate", "liability"]  # alone: everything
        await kb.tick()  # b is seen: a's share is now 2 of 3
        await ka.tick()
        await kb.tick()
        assert len(ka.held) == 2 and len(kb.held) == 1 and not set(ka.held) & set(kb.held)
        # a "dies": it stops renewing. b must hold everything within TTL + one tick.
        dead_at = time.monotonic()
        while len(kb.held) < 3:
            assert time.monotonic() - dead_at < TTL_S + kb.renew_s + 1.0, kb.held
            await asyncio.sleep(kb.renew_s)
            await kb.tick()
        took = sum(reg_b.get_sample_value("logiwatch_alerts_lease_takeovers_total", {"lease": n}) or 0 for n in ka.held)
        assert took == 2
        # a comes back (SIGCONT): its renewals fail, its tasks stop, and it writes nothing
        stale = dict(ka.held)
        await ka.tick()
        assert all(lease.lost for lease in stale.values())
        assert not set(ka.held) & set(stale)
        assert sum(reg_a.get_sample_value("logiwatch_alerts_lease_lost_total", {"lease": n}) or 0 for n in stale) == 2
        await asyncio.sleep(0.1)
        assert all(ka.tasks.get(n) is None or ka.tasks[n].done() for n in stale)
        for n in list(ka.held):
            await ka._drop(n, release=True)
        for n in list(kb.held):
            await kb._drop(n, release=True)

    run(redis_url, body)


def test_a_batch_decided_on_a_record_that_changed_before_its_write_is_decided_again(redis_url: str, redis_prefix: str) -> None:
    """A consumer paused between reading and writing (its partition moved meanwhile) must not
    overwrite what happened in between: here, an acknowledgement."""

    class Interleaved(Pipeline):
        calls = 0

        async def silences(self, now: int) -> Any:
            Interleaved.calls += 1
            if Interleaved.calls == 2:  # the first decision of the second batch: CS acks meanwhile
                await Pipeline(self.store, self.routing).set_state("stall-1", AlertState.ACKNOWLEDGED, "cs-lead", now)
            return await super().silences(now)

    async def body(r: aioredis.Redis) -> None:
        store = AlertStore(r, redis_prefix)
        pipeline = Interleaved(store, routes({"cs": ("http://127.0.0.1:9/hook", "generic")}))
        await pipeline.process(stall(1), now_ms())
        decision, _ = await pipeline.process(stall(1, revision=1, summary="still stalled"), now_ms())
        assert Interleaved.calls == 3  # decided twice: the first EXEC was refused
        rec = await store.get("stall-1")
        assert rec is not None and rec.state == AlertState.ACKNOWLEDGED and rec.acknowledged_by == "cs-lead"
        assert rec.alert.revision == 1 and decision.outcome.value == "update"

    run(redis_url, body)


def test_the_scrape_shows_each_leases_owner_and_token_from_its_slot_tagged_keys(redis_url: str, redis_prefix: str) -> None:
    async def body(r: aioredis.Redis) -> None:
        a, b = Leases(r, redis_prefix, "a", TTL_S), Leases(r, redis_prefix, "b", TTL_S)
        assert await a.acquire("deliver:cs") is not None and await a.acquire("escalate") is not None
        released = await b.acquire("liability")
        assert released is not None
        await b.release(released[0])
        again = await b.acquire("liability")  # a handover: token 2
        assert again is not None and again[0].token == 2
        await a.heartbeat()  # the members set shares the key space and must not show up as a lease

    run(redis_url, body)
    registry = CollectorRegistry()
    client = connect_sync(redis_url)
    try:
        registry.register(RedisCollector(client, redis_prefix))
        owners = {(s.labels["lease"], s.labels["owner"]) for m in registry.collect() for s in m.samples if s.name == "logiwatch_alerts_lease_owner"}
        tokens = {s.labels["lease"]: s.value for m in registry.collect() for s in m.samples if s.name == "logiwatch_alerts_lease_token"}
    finally:
        client.close()
    assert owners == {("deliver:cs", "a"), ("escalate", "a"), ("liability", "b")}
    assert tokens == {"deliver:cs": 1, "escalate": 1, "liability": 2}
