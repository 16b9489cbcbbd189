"""Prometheus metrics of the alert service.

Counters and histograms are built on a ``registry`` argument so tests use a
fresh one. Values that live in Redis (open alerts, open incidents, liability
totals) are read at scrape time by :class:`RedisCollector` with a plain
synchronous client, so they are right after a restart without replaying
anything. Names follow ``logiwatch_<subsystem>_<thing>_<unit>``; labels are
bounded (types, severities, receivers from the routes file, parties, rules).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from logiwatch.redisconn import scan_keys


class AlertMetrics:
    """The service's own counters (one instance per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "logiwatch_alerts_received_total",
            "Alerts consumed, by type and status.",
            ["type", "status"],
            registry=registry,
        )
        self.decisions = Counter(
            "logiwatch_alerts_decisions_total",
            "Pipeline outcomes: new, update, duplicate, inhibited, grouped, silenced; linked_later (stored before their incident).",
            ["outcome"],
            registry=registry,
        )
        self.bad_records = Counter(
            "logiwatch_alerts_bad_records_total",
            "Alert records that failed to decode (kept in the bad-records list), by reason.",
            ["reason"],
            registry=registry,
        )
        self.notifications = Counter(
            "logiwatch_alerts_notifications_total",
            "Webhook attempts by receiver and outcome (ok, retry, give_up, disable).",
            ["receiver", "outcome"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "logiwatch_alerts_delivery_seconds",
            "Duration of one webhook attempt.",
            ["receiver"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.retries = Counter("logiwatch_alerts_retries_total", "Attempts scheduled for retry.", ["receiver"], registry=registry)
        self.dead_letters = Counter(
            "logiwatch_alerts_dead_letters_total", "Notifications moved to the dead-letter list.", ["receiver"], registry=registry
        )
        self.false_alarms = Counter(
            "logiwatch_alerts_false_alarms_total", "Alerts marked as false alarms by customer service.", ["type"], registry=registry
        )
        self.ledger_entries = Counter(
            "logiwatch_liability_entries_total", "Ledger entries appended, by kind and party.", ["kind", "party"], registry=registry
        )
        # Leases (alerts/lease.py): label values are the lease names (deliver:<receiver>, escalate, liability).
        self.lease_held = Gauge(
            "logiwatch_alerts_lease_held", "1 while this instance holds the lease, else 0.", ["lease"], registry=registry
        )
        self.lease_acquired = Counter(
            "logiwatch_alerts_lease_acquired_total", "Leases this instance acquired.", ["lease"], registry=registry
        )
        self.lease_takeovers = Counter(
            "logiwatch_alerts_lease_takeovers_total",
            "Leases this instance took over after their holder stopped renewing them (expired, not released).",
            ["lease"],
            registry=registry,
        )
        self.lease_lost = Counter(
            "logiwatch_alerts_lease_lost_total", "Leases this instance found taken by another at renewal.", ["lease"], registry=registry
        )
        self.fenced_writes = Counter(
            "logiwatch_alerts_fenced_writes_total",
            "Writes under a lease that Redis refused because another instance holds it now (fencing).",
            ["lease"],
            registry=registry,
        )


class RedisCollector(Collector):
    """Scrape-time gauges for values kept in Redis."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        from logiwatch.alerts.ledger import ledger_key
        from logiwatch.alerts.store import AlertKeys

        self.r = client
        self.keys = AlertKeys(key_prefix)
        self.totals_key = ledger_key(key_prefix, "totals")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import msgspec

        from logiwatch.alerts.model import AlertRecord  # local: keeps the import graph of metrics small

        dec = msgspec.json.Decoder(AlertRecord)
        open_g = GaugeMetricFamily("logiwatch_alerts_open", "Open or acknowledged alerts.", labels=["type", "severity"])
        k = self.keys.key
        ids = set(self.r.smembers(k("state", "open"))) | set(self.r.smembers(k("state", "acknowledged")))
        per: dict[tuple[str, str], int] = {}
        # CS leads slice open alerts by region and carrier (logistics dashboard);
        # both label sets are bounded by the network, never by parcels.
        per_region: dict[str, int] = {}
        per_carrier: dict[str, int] = {}
        keys = [k("alert", i.decode() if isinstance(i, bytes) else i) for i in ids]
        # the alerts live in many slots: the cluster client's MGET goes node by node
        mget = getattr(self.r, "mget_nonatomic", self.r.mget)
        for raw in mget(keys) if keys else []:
            if raw:
                a = dec.decode(raw).alert
                per[(a.alert_type.value, a.severity.value)] = per.get((a.alert_type.value, a.severity.value), 0) + 1
                region = a.region or a.dest_region or "unknown"
                per_region[region] = per_region.get(region, 0) + 1
                carrier = a.carrier_id or "unknown"
                per_carrier[carrier] = per_carrier.get(carrier, 0) + 1
        for (t, s), n in sorted(per.items()):
            open_g.add_metric([t, s], n)
        yield open_g
        by_region = GaugeMetricFamily("logiwatch_alerts_open_by_region", "Open or acknowledged alerts by region.", labels=["region"])
        for region, n in sorted(per_region.items()):
            by_region.add_metric([region], n)
        yield by_region
        by_carrier = GaugeMetricFamily(
            "logiwatch_alerts_open_by_carrier", "Open or acknowledged alerts by carrier.", labels=["carrier"]
        )
        for carrier, n in sorted(per_carrier.items()):
            by_carrier.add_metric([carrier], n)
        yield by_carrier
        inc = GaugeMetricFamily("logiwatch_alerts_incidents_open", "Open hub incidents.")
        inc.add_metric([], int(self.r.scard(k("incidents:open"))))
        yield inc
        amount = GaugeMetricFamily(
            "logiwatch_liability_amount_yuan", "Net liability in the ledger, by party and rule.", labels=["party", "rule"]
        )
        for field, v in sorted(self.r.hgetall(self.totals_key).items()):
            key = field.decode() if isinstance(field, bytes) else field
            party, _, rule = key.partition("|")
            amount.add_metric([party, rule], int(v) / 100)  # stored in fen
        yield amount
        queue = GaugeMetricFamily("logiwatch_alerts_queue_depth", "Notifications waiting per receiver.", labels=["receiver"])
        for found in scan_keys(self.r, k("queue", "*"), count=100):  # per node on a cluster
            key = found.decode() if isinstance(found, bytes) else found
            queue.add_metric([self.keys.receiver_of_queue(key)], int(self.r.zcard(key)))
        yield queue
        yield from self._leases()

    def _leases(self) -> Iterator[GaugeMetricFamily]:
        """Who holds each lease and its fencing token (the token counts acquisitions ever made)."""

        owner = GaugeMetricFamily("logiwatch_alerts_lease_owner", "1 for the instance holding each lease.", labels=["lease", "owner"])
        token = GaugeMetricFamily("logiwatch_alerts_lease_token", "Fencing token of each lease's last acquisition.", labels=["lease"])
        # keys are <P>alerts:lease:<tag><name> and ...:fence (lease.lease_key); the name has no brace
        for k in scan_keys(self.r, self.keys.p + "lease:{*", count=100):  # per node on a cluster
            key = k.decode() if isinstance(k, bytes) else k
            name = key.rpartition("}")[2]
            if not name or name.startswith(":"):  # the members set
                continue
            raw = self.r.get(key)
            if name.endswith(":fence"):
                token.add_metric([name.removesuffix(":fence")], int(raw or 0))
                continue
            tok, _, who = (raw.decode() if isinstance(raw, bytes) else str(raw or "")).partition("|")
            if tok not in ("", "0"):
                owner.add_metric([name, who], 1)
        yield owner
        yield token
