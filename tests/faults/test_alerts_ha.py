"""Two ``logiwatch alerts serve`` on one prefix and one consumer group survive losing one.

Real processes on the real broker and Redis, delivering to a real aiohttp
receiver on loopback that answers slowly (so deliveries are always in
flight). Instance ``ha-a`` starts first and keeps the leases
``deliver:cs`` and ``escalate``; ``ha-b`` joins and is handed ``liability``
(fair share: 2 and 1). Every alert is an ``info`` stall past its promise: it
is notified (``firing``), escalates twice (``escalated-warning`` after 4 s,
``escalated-critical`` after 8 s) and is charged once in the ledger.

* SIGKILL of ``ha-a`` mid-delivery: ``ha-b`` takes its partition (group) and
  its leases (expiry), and delivers the rest;
* SIGSTOP of ``ha-a`` for twice the lease TTL, then SIGCONT: ``ha-b`` takes
  over meanwhile; the resumed ``ha-a`` finds its leases gone, its late
  bookings are refused by the fencing token, and it sends nothing new.

Both must end with every webhook-id delivered (three per alert, none other),
repeats only of ids that were on the wire when the instance died or
stopped, each escalation step recorded once, and the ledger balanced:
totals equal the sum of the entries, one entry per idempotency key, every
entry published to Kafka.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer

from logiwatch import stack
from logiwatch.alerts.ledger import ledger_key
from logiwatch.alerts.model import FIRING, NotificationEvent, NotificationKind, notification_id
from logiwatch.alerts.store import AlertKeys
from logiwatch.detectors.model import Alert, Severity
from logiwatch.redisconn import connect_sync
from tests.faults.test_alerts_faults import AlertsServe, FaultReceiver, figures, receiver_toml
from tests.helpers import wait_until
from tests.integration.test_alert_service_harness import HOUR, T0, produce, stall

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_url(redis_url_both: str) -> str:
    """Both faults on one Redis and on a 3-master Redis Cluster (leases fenced inside each slot's script)."""

    return redis_url_both

LEASE_TTL_S = 3.0
ESCALATE_S = 4
N_ALERTS = 40
LEASES = {"deliver:cs", "escalate", "liability"}


def redis_kind(url: str) -> str:
    return "cluster" if url.startswith("redis+cluster") else "single"


def alerts() -> list[Alert]:
    return [stall(i, severity=Severity.INFO, promised_delivery_by=T0 - HOUR) for i in range(N_ALERTS)]


def expected_ids(alert_ids: list[str]) -> dict[str, str]:
    """webhook-id -> alert id: one firing and two escalations per alert."""

    kinds = [FIRING] + [NotificationKind(NotificationEvent.ESCALATED, severity=s) for s in (Severity.WARNING, Severity.CRITICAL)]
    return {notification_id("cs", aid, k): aid for aid in alert_ids for k in kinds}


def twin(first: AlertsServe, tmp: Path, instance: str) -> AlertsServe:
    """A second instance on the first one's topic, group and prefix, with its own API port."""

    other = copy.copy(first)
    other.port = stack.free_port()
    other.log_path = tmp / f"alerts-{other.port}.log"
    other.config = tmp / f"alerts-{other.port}.toml"
    text = first.config.read_text().replace(f"api_port = {first.port}", f"api_port = {other.port}")
    other.config.write_text(re.sub(r'instance_id = "[^"]*"', f'instance_id = "{instance}"', text))
    other.proc, other.starts = None, 0
    return other


def leases_of(svc: AlertsServe) -> set[str]:
    health = svc.get("/healthz")
    return set(health.get("leases", {})) if health else set()


def metric(svc: AlertsServe, name: str, lease: str) -> float:
    """One lease's sample from the instance's /metrics (what Prometheus scrapes)."""

    with urllib.request.urlopen(f"http://127.0.0.1:{svc.port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf'^{name}\{{lease="{re.escape(lease)}"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


class Pair:
    """``ha-a`` (started first: delivery and escalation) and ``ha-b`` (the liability publisher)."""

    def __init__(self, tmp: Path, bootstrap: str, redis_url: str, prefix: str, receiver: FaultReceiver) -> None:
        routes = f"escalate_after_s = {ESCALATE_S}\n" + receiver_toml(receiver)
        self.a = AlertsServe(tmp, bootstrap, redis_url, prefix, routes)
        self.a.config.write_text(
            self.a.config.read_text().replace("[alerts]\n", f'[alerts]\nlease_ttl_s = {LEASE_TTL_S}\ninstance_id = "ha-a"\n')
        )
        self.b = twin(self.a, tmp, "ha-b")
        self.bootstrap, self.redis_url, self.prefix = bootstrap, redis_url, prefix

    def start(self) -> None:
        self.a.start()
        wait_until(lambda: leases_of(self.a) == LEASES, 40, what=f"ha-a holds every lease: {self.a.log_tail()}")
        self.b.start()
        wait_until(
            lambda: leases_of(self.a) == {"deliver:cs", "escalate"} and leases_of(self.b) == {"liability"},
            40,
            what=f"leases shared: a={leases_of(self.a)} b={leases_of(self.b)} {self.b.log_tail()}",
        )
        # both in the group before any alert: each consumes one partition
        wait_until(lambda: all((s.get("/healthz") or {}).get("consumer") == "assigned" for s in (self.a, self.b)), 40, what="both assigned")

    def close(self) -> None:
        for svc in (self.b, self.a):
            if svc.proc is not None and svc.proc.poll() is None:
                os.kill(svc.proc.pid, signal.SIGCONT)
            svc.stop()
        self.a.close()

    def wait_takeover(self, since: float, timeout: float) -> tuple[float, float]:
        """(when ``ha-b`` was first seen holding ``deliver:cs``, seconds from ``since`` until it holds every lease)."""

        wait_until(lambda: "deliver:cs" in leases_of(self.b), timeout, interval=0.1, what=f"ha-b takes deliver:cs: {self.b.log_tail()}")
        delivering_from = time.monotonic()
        wait_until(lambda: leases_of(self.b) == LEASES, timeout, interval=0.1, what=f"ha-b takes every lease: {self.b.log_tail()}")
        return delivering_from, time.monotonic() - since


def check_outcome(pair: Pair, receiver: FaultReceiver, sent: list[Alert], fault_at: float, taken_at: float) -> dict[str, Any]:
    """Everything the issue asks after a fault; returns the figures.

    Until ``taken_at`` (``ha-b`` seen holding ``deliver:cs``) only ``ha-a`` can have sent
    anything; a request it sent just before the fault may reach the receiver a moment after
    it, so "in flight at the fault" is "first arrived before the takeover". After that, a
    resumed ``ha-a`` sending anything again shows up as a repeat and fails the test.
    """

    want = expected_ids([a.alert_id for a in sent])
    wait_until(lambda: {h.webhook_id for h in receiver.ok_hits()} >= set(want), 90, interval=0.5, what="every webhook-id delivered")
    hits = receiver.ok_hits()
    got = {h.webhook_id for h in hits}
    assert got == set(want), f"unexpected webhook-ids {got - set(want)}"
    per_alert: dict[str, set[str]] = {}
    for h in hits:
        per_alert.setdefault(h.alert_id, set()).add(h.webhook_id)
    assert all(len(ids) == 3 for ids in per_alert.values()) and len(per_alert) == len(sent)
    repeats = {wid: n for wid, n in Counter(h.webhook_id for h in hits).items() if n > 1}
    before_cut = {h.webhook_id for h in receiver.hits if h.arrived < taken_at}
    # at-least-once across a takeover: only ids already on the wire at the fault come again
    assert set(repeats) <= before_cut, f"re-sent ids that were not in flight at the fault: {set(repeats) - before_cut}"
    r = connect_sync(pair.redis_url)
    try:
        k = AlertKeys(pair.prefix).key
        for a in sent:
            severities = [json.loads(x)["severity"] for x in r.lrange(k("revisions", a.alert_id), 0, -1)]
            assert severities == ["info", "warning", "critical"], f"{a.alert_id} escalations recorded as {severities}"
            rec = json.loads(r.get(k("alert", a.alert_id)) or b"{}")
            assert rec.get("escalations") == 2, f"{a.alert_id}: {rec.get('escalations')} escalations"
        assert r.zcard(k("queue", "cs")) == 0 and r.llen(k("dead", "cs")) == 0
        ledger = check_ledger(r, pair)
    finally:
        r.close()
    first_after = min(h.arrived for h in hits if h.arrived >= taken_at) - fault_at
    return {
        "webhook_ids": len(want),
        "redelivered_same_id": sum(n - 1 for n in repeats.values()),
        "first_delivery_after_fault_s": round(first_after, 2),
        **ledger,
    }


def check_ledger(r: Any, pair: Pair) -> dict[str, Any]:
    def lk(name: str) -> str:
        return ledger_key(pair.prefix, name)

    stream = r.xrange(lk("ledger"))
    entries = [msgspec.json.decode(fields[b"entry"]) for _sid, fields in stream]
    sums: Counter[str] = Counter()
    for e in entries:
        sums[f"{e['party']}|{e['rule_id']}"] += e["amount_fen"]
    totals = {k.decode(): int(v) for k, v in r.hgetall(lk("totals")).items()}
    assert totals == dict(sums), f"ledger unbalanced: totals {totals} != entries {dict(sums)}"
    assert len(entries) == N_ALERTS == r.hlen(lk("keys")) == len({e["key"] for e in entries}), "an entry appended twice or missing"
    last = stream[-1][0]
    wait_until(lambda: r.get(lk("published")) == last, 30, what="the publisher's cursor reaches the end of the ledger")
    consumer = KafkaConsumer(pair.a.ltopic, bootstrap_servers=pair.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    published: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    try:
        want = {e["entry_id"] for e in entries}
        while set(published) != want and time.monotonic() < deadline:
            for rec in consumer.poll(timeout_ms=500).values():
                for m in rec:
                    published[msgspec.json.decode(m.value)["entry_id"]] += 1
    finally:
        consumer.close()
    assert set(published) == want, f"entries not published: {len(want - set(published))}"
    return {"ledger_entries": len(entries), "entries_republished": sum(n - 1 for n in published.values())}


def test_sigkill_of_the_delivering_instance_mid_delivery_loses_nothing_and_fires_nothing_twice(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with FaultReceiver("cs") as receiver:
        receiver.up()
        receiver.mode, receiver.delay_s = "slow", 0.15
        pair = Pair(tmp_path, kafka_bootstrap, redis_url, redis_prefix, receiver)
        try:
            pair.start()
            sent = alerts()
            produce(kafka_bootstrap, pair.a.topic, sent)
            wait_until(lambda: len(receiver.ok_hits()) >= 10, 30, interval=0.05, what="deliveries under way")
            assert pair.a.proc is not None
            killed_at = time.monotonic()
            pair.a.proc.send_signal(signal.SIGKILL)
            pair.a.proc.wait(10)
            delivered_at_kill = len(receiver.ok_hits())
            taken_at, takeover_s = pair.wait_takeover(killed_at, LEASE_TTL_S * 2 + 5)
            out = check_outcome(pair, receiver, sent, killed_at, taken_at)
            assert pair.b.alive(), pair.b.log_tail()
            took = metric(pair.b, "logiwatch_alerts_lease_takeovers_total", "deliver:cs")
            assert took == 1.0, took
        finally:
            pair.close()
    assert 0 < delivered_at_kill < 3 * N_ALERTS, "the kill did not fall mid-delivery"
    assert takeover_s <= LEASE_TTL_S * 4 / 3 + 1.0, f"takeover took {takeover_s:.1f} s"
    figures("alerts_ha_sigkill", redis=redis_kind(redis_url), lease_ttl_s=LEASE_TTL_S, takeover_s=round(takeover_s, 2), delivered_at_kill=delivered_at_kill, **out)


def test_an_instance_paused_past_its_lease_writes_nothing_after_the_takeover(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with FaultReceiver("cs") as receiver:
        receiver.up()
        receiver.mode, receiver.delay_s = "slow", 0.3  # four requests always in flight at the pause
        pair = Pair(tmp_path, kafka_bootstrap, redis_url, redis_prefix, receiver)
        try:
            pair.start()
            sent = alerts()
            produce(kafka_bootstrap, pair.a.topic, sent)
            wait_until(lambda: len(receiver.ok_hits()) >= 10, 30, interval=0.05, what="deliveries under way")
            assert pair.a.proc is not None
            paused_at = time.monotonic()
            os.kill(pair.a.proc.pid, signal.SIGSTOP)
            delivered_at_pause = len(receiver.ok_hits())
            taken_at, takeover_s = pair.wait_takeover(paused_at, LEASE_TTL_S * 2 + 5)
            wait_until(lambda: time.monotonic() - paused_at >= 2 * LEASE_TTL_S, 10, interval=0.1)
            os.kill(pair.a.proc.pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            out = check_outcome(pair, receiver, sent, paused_at, taken_at)
            wait_until(lambda: metric(pair.a, "logiwatch_alerts_lease_lost_total", "deliver:cs") >= 1, 20, what="ha-a saw its lease gone")
            fenced = metric(pair.a, "logiwatch_alerts_fenced_writes_total", "deliver:cs")
            # the resumed ex-owner started no new delivery: every hit after the resume came from ha-b,
            # and any id ha-a had on the wire was already counted as in flight at the pause
            assert pair.a.alive() and pair.b.alive(), pair.a.log_tail()
            # after the resume ha-a rejoins and is handed a lease back (fair share)
            wait_until(lambda: len(leases_of(pair.a)) == 1 and len(leases_of(pair.b)) == 2, 30, what="leases shared again")
        finally:
            pair.close()
    assert 0 < delivered_at_pause < 3 * N_ALERTS, "the pause did not fall mid-delivery"
    figures(
        "alerts_ha_sigstop",
        redis=redis_kind(redis_url),
        lease_ttl_s=LEASE_TTL_S,
        paused_s=round(resumed_at - paused_at, 1),
        takeover_s=round(takeover_s, 2),
        delivered_at_pause=delivered_at_pause,
        fenced_bookings_after_resume=fenced,
        **out,
    )
