"""The liability rules engine: who pays how much, exemptions, re-attribution, rule versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logiwatch.alerts.liability import Charge, Entry, RuleSet, evaluate, load_rules, parse_rules
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity
from logiwatch.errors import ConfigError

T0 = 1_790_000_000_000  # 2026-09-21, outside the packaged promotion window
HOUR = 3_600_000
RULES = load_rules()


def alert(**over: object) -> Alert:
    base: dict[str, object] = {
        "alert_id": "a-late",
        "alert_type": AnomalyType.LATE_DISPATCH,
        "status": AlertStatus.FIRING,
        "severity": Severity.WARNING,
        "detected_at": T0,
        "summary": "not dispatched by the promise",
        "waybill_id": "WB1",
        "order_id": "O1",
        "merchant_id": "M1",
        "carrier_id": "C1",
        "order_amount": 200.0,
        "promised_delivery_by": T0 + 48 * HOUR,
    }
    base.update(over)
    return Alert(**base)  # type: ignore[arg-type]


class Book:
    """A tiny in-memory ledger with the same idempotency rule as the Redis one."""

    def __init__(self, rules: RuleSet = RULES) -> None:
        self.rules = rules
        self.entries: list[Entry] = []
        self.keys: set[str] = set()
        self.charges: dict[str, Charge] = {}
        self.incident_of: dict[str, str] = {}

    def apply(self, a: Alert) -> list[Entry]:
        wbs = a.affected_waybills if a.alert_type == AnomalyType.HUB_INCIDENT else (a.waybill_id,)
        mine = {k: c for k, c in self.charges.items() if k.split("|")[0] in wbs}
        entries, charges = evaluate(a, mine, self.rules, self.incident_of.get(a.waybill_id or ""))
        if a.alert_type == AnomalyType.HUB_INCIDENT:
            self.incident_of.update({wb: a.alert_id for wb in a.affected_waybills})
        new = [e for e in entries if e.key not in self.keys]
        self.keys |= {e.key for e in new}
        self.entries += new
        self.charges.update({c.charge_key: c for c in charges})
        return new

    def net(self, party: str) -> int:
        return sum(e.amount_fen for e in self.entries if e.party == party)


def test_late_dispatch_charges_merchant_30_percent_capped_at_500() -> None:
    book = Book()
    [e] = book.apply(alert(order_amount=200.0))
    assert (e.party, e.amount_fen, e.rule_id, e.rule_version, e.kind) == ("merchant", 6000, "merchant-late-dispatch", "v1", "charge")
    [big] = Book().apply(alert(order_amount=10_000.0))
    assert big.amount_fen == 50_000


def test_delay_is_charged_to_carrier_only_once_the_delivery_promise_is_broken() -> None:
    book = Book()
    stall = alert(alert_id="a-stall", alert_type=AnomalyType.STALL, order_amount=30.0)
    assert book.apply(stall) == []
    [e] = book.apply(msgspec.structs.replace(stall, revision=1, detected_at=T0 + 49 * HOUR))
    assert (e.party, e.amount_fen, e.rule_id) == ("carrier", 500, "carrier-delay")  # 10% of 30 is below the 5 yuan minimum


def test_predicted_late_and_contradiction_never_charge() -> None:
    for t in (AnomalyType.PREDICTED_LATE, AnomalyType.CONTRADICTION):
        assert Book().apply(alert(alert_type=t, detected_at=T0 + 100 * HOUR)) == []


def test_one_charge_per_parcel_and_rule_and_replay_adds_nothing() -> None:
    book = Book()
    alerts = [alert(), alert(alert_id="other-episode"), alert(alert_type=AnomalyType.LIKELY_LOST, alert_id="lost")]
    for a in alerts:
        book.apply(a)
    before = list(book.entries)
    for a in alerts:
        assert book.apply(a) == []
    assert book.entries == before and len(before) == 2


def test_parcel_in_declared_incident_is_charged_to_platform_not_carrier() -> None:
    book = Book()
    lost = alert(alert_type=AnomalyType.LIKELY_LOST, incident_id="inc1", order_amount=80.0)
    entries = book.apply(lost)
    assert [(e.party, e.amount_fen) for e in entries] == [("carrier", 0), ("platform", 8000)]
    assert entries[1].rule_id == "platform-hub-incident" and "inc1" in entries[1].evidence


def test_late_incident_reattributes_with_a_reversal_and_a_new_entry_and_totals_balance() -> None:
    book = Book()
    [charge] = book.apply(alert(order_amount=200.0))
    incident = alert(
        alert_id="inc1", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, node_id="HUB-1", affected_waybills=("WB1", "WB9"), detected_at=T0 + HOUR
    )
    reversal, moved = book.apply(incident)
    assert reversal.kind == "reversal" and reversal.party == "merchant" and reversal.amount_fen == -charge.amount_fen
    assert moved.kind == "charge" and moved.party == "platform" and moved.amount_fen == charge.amount_fen
    assert set(moved.evidence) >= {"a-late", "inc1"}
    assert book.net("merchant") == 0 and book.net("platform") == 6000
    assert sum(e.amount_fen for e in book.entries) == charge.amount_fen
    # the parcel's own alert, re-emitted with the incident id, changes nothing more
    assert book.apply(alert(revision=1, incident_id="inc1")) == []
    assert book.apply(incident) == []


def test_promotion_window_waives_the_merchant_late_dispatch_charge() -> None:
    in_window = 1_794_500_000_000  # 2026-11-11 around 16:00 UTC
    [e] = Book().apply(alert(detected_at=in_window))
    assert e.party == "merchant" and e.amount_fen == 0


def version_change_rules() -> RuleSet:
    data: dict[str, Any] = {
        "versions": [
            {"version": "v1", "effective_from": "2020-01-01T00:00:00Z", "rules": [{"id": "late", "alert_types": ["late_dispatch"], "party": "merchant", "percent": 30, "cap_yuan": 500}]},
            {"version": "v2", "effective_from": "2026-10-01T00:00:00Z", "rules": [{"id": "late", "alert_types": ["late_dispatch"], "party": "merchant", "percent": 10, "cap_yuan": 500}]},
        ]
    }
    return parse_rules(data)


def test_rule_version_change_applies_from_its_effective_time_by_event_time() -> None:
    rules = version_change_rules()
    book = Book(rules)
    [before] = book.apply(alert(waybill_id="WB1", detected_at=T0))  # 2026-09-21
    [after] = book.apply(alert(waybill_id="WB2", detected_at=T0 + 30 * 24 * HOUR))  # 2026-10-21
    assert (before.rule_version, before.amount_fen) == ("v1", 6000)
    assert (after.rule_version, after.amount_fen) == ("v2", 2000)
    replay = Book(rules)
    for a in (alert(waybill_id="WB2", detected_at=T0 + 30 * 24 * HOUR), alert(waybill_id="WB1", detected_at=T0)):
        replay.apply(a)
    assert sorted(replay.entries, key=lambda e: e.key) == sorted(book.entries, key=lambda e: e.key)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"versions": []}, "at least one [[versions]]"),
        ({"versions": [{"version": "v", "effective_from": "2020-01-01T00:00:00Z", "rules": [{"id": "r", "alert_types": ["late_dispatch"], "party": "buyer", "percent": 1}]}]}, "party must be one of"),
        ({"versions": [{"version": "v", "effective_from": "2020-01-01T00:00:00Z", "rules": [{"id": "r", "alert_types": ["late_dispatch"], "party": "merchant", "percent": 130}]}]}, "percent <= 100"),
        ({"versions": [{"version": "v", "effective_from": "2020-01-01T00:00:00Z", "rules": [{"id": "r", "alert_types": ["late"], "party": "merchant", "percent": 1}]}]}, "Invalid enum value 'late'"),
    ],
)
def test_bad_rules_are_one_line_config_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_rules(tmp_path / "nope.toml")


_types = st.sampled_from([AnomalyType.LATE_DISPATCH, AnomalyType.STALL, AnomalyType.LIKELY_LOST, AnomalyType.SUSPICIOUS_DELIVERY, AnomalyType.MISROUTE])


@settings(max_examples=150, deadline=None)
@given(
    parcels=st.lists(
        st.tuples(_types, st.floats(min_value=0, max_value=20_000, allow_nan=False), st.integers(0, 96), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    incident_at=st.integers(0, 12),
)
def test_ledger_arithmetic_balances_whatever_the_alerts(parcels: list[tuple[AnomalyType, float, int, bool]], incident_at: int) -> None:
    """Charges are bounded by their rule, re-attribution moves money without creating or losing it."""

    book = Book()
    alerts = [
        alert(alert_id=f"a{i}", alert_type=t, waybill_id=f"WB{i}", order_amount=amount, detected_at=T0 + hours * HOUR)
        for i, (t, amount, hours, _) in enumerate(parcels)
    ]
    affected = tuple(f"WB{i}" for i, p in enumerate(parcels) if p[3])
    incident = alert(alert_id="inc", alert_type=AnomalyType.HUB_INCIDENT, waybill_id=None, affected_waybills=affected, detected_at=T0 + 97 * HOUR)
    sequence = alerts[:incident_at] + [incident] + alerts[incident_at:]
    for a in sequence:
        book.apply(a)
    total_before_exemption = 0
    for e in book.entries:
        assert e.currency == "CNY"
        if e.kind == "charge" and e.party != "platform":
            assert 0 <= e.amount_fen <= 500_000
    charged = {c.charge_key: c for c in book.charges.values()}
    total_before_exemption = sum(c.amount_fen for c in charged.values())
    # every charge's full amount is accounted for exactly once across parties
    assert sum(e.amount_fen for e in book.entries) == total_before_exemption
    for c in charged.values():
        if c.exempted_by:
            assert sum(e.amount_fen for e in book.entries if e.charge_key == c.charge_key and e.party == c.party) == 0
    # replaying everything adds nothing
    n = len(book.entries)
    for a in sequence:
        book.apply(a)
    assert len(book.entries) == n
