"""The compensation-liability rules engine.

Pure: given an alert, the parcel's active charges and the versioned rule
set, :func:`evaluate` returns the ledger entries to append (charges and
reversals). Amounts are integer fen (1/100 yuan) so totals add up exactly.
Every entry has an idempotency key built from the parcel, the rule and the
exemption, never from time or order of arrival, so replaying the same alerts
appends nothing new (see :mod:`logiwatch.alerts.ledger`).

When charges are made (documented in ``docs/liability.md``):

* ``late_dispatch`` (merchant), ``likely_lost`` and ``suspicious_delivery``
  (carrier): on firing, the breach is the alert itself;
* delay types (``pickup_timeout``, ``stall``, ``abnormal_segment``,
  ``misroute``): only once the delivery promise is broken, i.e. the alert
  (or a later revision) has ``detected_at >= promised_delivery_by``;
* ``predicted_late`` and ``contradiction``: never (warnings, data quality).

One charge per (parcel, rule). An exemption (a declared hub incident, a
promotion window, force majeure) cuts the liable party's share and may
transfer it to another party (the platform); when the incident is declared
after the charge, the engine re-attributes: a reversal of the cut share and
a new entry for the receiving party, with both alerts as evidence.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from logiwatch.config import read_toml
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType
from logiwatch.errors import ConfigError

PARTIES = ("merchant", "carrier", "platform")
DEFAULT_RULES = Path(__file__).with_name("rules") / "liability-v1.toml"


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    alert_types: tuple[AnomalyType, ...]
    party: str
    percent: float
    min_yuan: float = 0.0
    cap_yuan: float = 1e9
    requires_broken_promise: bool = False
    source: str = ""

    def amount_fen(self, order_amount: float | None) -> int:
        """``percent`` of the order amount, at least ``min_yuan``, at most ``cap_yuan``, in fen.

        >>> Rule(id="r", alert_types=(), party="carrier", percent=10, min_yuan=5, cap_yuan=100).amount_fen(20.0)
        500
        """

        raw = (order_amount or 0.0) * self.percent / 100.0
        return round(min(max(raw, self.min_yuan), self.cap_yuan) * 100)


class Exemption(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    when: str  # incident | window
    parties: tuple[str, ...]
    share_cut: float = 1.0
    transfer_to: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    regions: tuple[str, ...] = ()
    alert_types: tuple[AnomalyType, ...] = ()
    reason: str = ""

    def window_ms(self) -> tuple[int, int]:
        assert self.starts_at is not None and self.ends_at is not None
        return int(self.starts_at.timestamp() * 1000), int(self.ends_at.timestamp() * 1000)


class RuleVersion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: str
    effective_from: datetime
    rules: tuple[Rule, ...]
    exemptions: tuple[Exemption, ...] = ()

    @property
    def effective_ms(self) -> int:
        return int(self.effective_from.timestamp() * 1000)

    def rule_for(self, alert_type: AnomalyType) -> Rule | None:
        for rule in self.rules:
            if alert_type in rule.alert_types:
                return rule
        return None


class RuleSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    versions: tuple[RuleVersion, ...]
    currency: str = "CNY"

    def at(self, t_ms: int) -> RuleVersion | None:
        """The version in force at event time ``t_ms`` (the last one effective by then)."""

        current = None
        for v in sorted(self.versions, key=lambda v: v.effective_ms):
            if v.effective_ms <= t_ms:
                current = v
        return current


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rules file; ``ConfigError`` with one line on any problem."""

    p = Path(path) if path else DEFAULT_RULES
    return parse_rules(read_toml(p, "liability rules file"), p)


def parse_rules(data: dict[str, Any], source: Path | str = "<rules>") -> RuleSet:
    try:
        rs = msgspec.convert(data, RuleSet, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"liability rules file {source}: {exc}") from None
    if not rs.versions:
        raise ConfigError(f"liability rules file {source}: at least one [[versions]] is required")
    seen_versions: set[str] = set()
    for v in rs.versions:
        if v.effective_from.tzinfo is None:
            raise ConfigError(
                f"liability rules file {source}: version {v.version}: effective_from needs a UTC offset"
            )
        if v.version in seen_versions:
            raise ConfigError(f"liability rules file {source}: duplicate version {v.version!r}")
        seen_versions.add(v.version)
        types: set[AnomalyType] = set()
        for r in v.rules:
            where = f"version {v.version} rule {r.id}"
            if r.party not in PARTIES:
                raise ConfigError(
                    f"liability rules file {source}: {where}: party must be one of {', '.join(PARTIES)}"
                )
            if not 0 <= r.percent <= 100 or r.min_yuan < 0 or r.cap_yuan < r.min_yuan:
                raise ConfigError(
                    f"liability rules file {source}: {where}: need 0 <= percent <= 100 and 0 <= min_yuan <= cap_yuan"
                )
            clash = types & set(r.alert_types)
            if clash:
                raise ConfigError(
                    f"liability rules file {source}: {where}: alert type {sorted(clash)[0].value} has two rules"
                )
            types |= set(r.alert_types)
        for e in v.exemptions:
            where = f"version {v.version} exemption {e.id}"
            if e.when not in ("incident", "window"):
                raise ConfigError(
                    f"liability rules file {source}: {where}: when must be 'incident' or 'window'"
                )
            if not 0 < e.share_cut <= 1 or any(p not in PARTIES for p in e.parties):
                raise ConfigError(
                    f"liability rules file {source}: {where}: need 0 < share_cut <= 1 and known parties"
                )
            if e.transfer_to is not None and e.transfer_to not in PARTIES:
                raise ConfigError(
                    f"liability rules file {source}: {where}: transfer_to must be one of {', '.join(PARTIES)}"
                )
            if e.when == "window":
                if (
                    e.starts_at is None
                    or e.ends_at is None
                    or e.starts_at.tzinfo is None
                    or e.ends_at <= e.starts_at
                ):
                    raise ConfigError(
                        f"liability rules file {source}: {where}: a window needs starts_at < ends_at with UTC offsets"
                    )
    return rs


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One ledger line. ``amount_fen`` is negative for a reversal."""

    key: str  # idempotency key
    entry_id: str
    kind: str  # charge | reversal
    waybill_id: str
    party: str
    amount_fen: int
    currency: str
    rule_id: str
    rule_version: str
    evidence: tuple[str, ...]
    reason: str
    at_ms: int  # event time of the evidence that caused it
    charge_key: str  # the (parcel, rule) charge this entry belongs to
    order_id: str | None = None
    merchant_id: str | None = None
    carrier_id: str | None = None


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    """A parcel's standing charge for one rule (what re-attribution works on)."""

    charge_key: str
    party: str
    amount_fen: int  # the full charge before any exemption
    rule_id: str
    rule_version: str
    evidence: tuple[str, ...]
    exempted_by: str | None = None


def _entry(key: str, **fields: Any) -> Entry:
    eid = hashlib.blake2b(key.encode(), digest_size=10).hexdigest()
    return Entry(key=key, entry_id=eid, **fields)


def _window_exemption(version: RuleVersion, alert: Alert, party: str) -> Exemption | None:
    for e in version.exemptions:
        if e.when != "window" or party not in e.parties:
            continue
        if e.alert_types and alert.alert_type not in e.alert_types:
            continue
        if e.regions and (alert.region not in e.regions and alert.dest_region not in e.regions):
            continue
        lo, hi = e.window_ms()
        if lo <= alert.detected_at < hi:
            return e
    return None


def _incident_exemption(version: RuleVersion, party: str) -> Exemption | None:
    for e in version.exemptions:
        if e.when == "incident" and party in e.parties:
            return e
    return None


def _split(
    charge: Charge,
    exemption: Exemption,
    evidence: tuple[str, ...],
    at_ms: int,
    base: dict[str, Any],
    currency: str,
    late: bool,
) -> list[Entry]:
    """Entries that move ``share_cut`` of a charge away from its party (and maybe to another)."""

    cut = round(charge.amount_fen * exemption.share_cut)
    out: list[Entry] = []
    if late:
        out.append(
            _entry(
                f"reversal|{charge.charge_key}|{exemption.id}",
                kind="reversal",
                party=charge.party,
                amount_fen=-cut,
                rule_id=charge.rule_id,
                rule_version=charge.rule_version,
                evidence=evidence,
                reason=f"re-attributed: {exemption.reason or exemption.id}",
                at_ms=at_ms,
                charge_key=charge.charge_key,
                currency=currency,
                **base,
            )
        )
    if exemption.transfer_to and cut:
        out.append(
            _entry(
                f"charge|{charge.charge_key}|{exemption.id}",
                kind="charge",
                party=exemption.transfer_to,
                amount_fen=cut,
                rule_id=exemption.id,
                rule_version=charge.rule_version,
                evidence=evidence,
                reason=exemption.reason or exemption.id,
                at_ms=at_ms,
                charge_key=charge.charge_key,
                currency=currency,
                **base,
            )
        )
    return out


def evaluate(
    alert: Alert, charges: dict[str, Charge], rules: RuleSet, incident_of: str | None = None
) -> tuple[list[Entry], list[Charge]]:
    """Entries to append for ``alert`` and the parcel charges as they stand afterwards.

    ``charges`` are the parcel's standing charges by charge key (for a hub
    incident: those of every affected parcel); ``incident_of`` is a declared
    incident already known to cover the parcel (the incident may arrive
    before a parcel alert that does not name it). Deterministic in its inputs.
    """

    if alert.status != AlertStatus.FIRING:
        return [], []
    version = rules.at(alert.detected_at)
    if version is None:
        return [], []
    if alert.alert_type == AnomalyType.HUB_INCIDENT:
        return _reattribute(alert, alert.alert_id, charges.values(), version, rules.currency)
    rule = version.rule_for(alert.alert_type)
    if rule is None or not alert.waybill_id:
        return [], []
    incident_id = alert.incident_id or incident_of
    charge_key = f"{alert.waybill_id}|{rule.id}"
    existing = charges.get(charge_key)
    if existing is not None:
        if incident_id and existing.exempted_by is None:
            return _reattribute(alert, incident_id, [existing], version, rules.currency)
        return [], []  # one charge per (parcel, rule)
    if rule.requires_broken_promise and (
        alert.promised_delivery_by is None or alert.detected_at < alert.promised_delivery_by
    ):
        return [], []
    base = {
        "waybill_id": alert.waybill_id,
        "order_id": alert.order_id,
        "merchant_id": alert.merchant_id,
        "carrier_id": alert.carrier_id,
    }
    full = rule.amount_fen(alert.order_amount)
    exemption = _incident_exemption(version, rule.party) if incident_id else None
    exemption = exemption or _window_exemption(version, alert, rule.party)
    evidence = (alert.alert_id,) + ((incident_id,) if incident_id else ())
    charge = Charge(
        charge_key=charge_key,
        party=rule.party,
        amount_fen=full,
        rule_id=rule.id,
        rule_version=version.version,
        evidence=evidence,
        exempted_by=exemption.id if exemption else None,
    )
    payable = full - (round(full * exemption.share_cut) if exemption else 0)
    entries = [
        _entry(
            f"charge|{charge_key}",
            kind="charge",
            party=rule.party,
            amount_fen=payable,
            rule_id=rule.id,
            rule_version=version.version,
            evidence=evidence,
            reason=f"{alert.alert_type.value}: {alert.summary}"[:200],
            at_ms=alert.detected_at,
            charge_key=charge_key,
            currency=rules.currency,
            **base,
        )
    ]
    if exemption:
        entries += _split(charge, exemption, evidence, alert.detected_at, base, rules.currency, late=False)
    return entries, [charge]


def _reattribute(
    alert: Alert, incident_id: str, charges: Any, version: RuleVersion, currency: str
) -> tuple[list[Entry], list[Charge]]:
    entries: list[Entry] = []
    updated: list[Charge] = []
    for charge in sorted(charges, key=lambda c: c.charge_key):
        if charge.exempted_by is not None:
            continue
        exemption = _incident_exemption(version, charge.party)
        if exemption is None:
            continue
        waybill = charge.charge_key.split("|", 1)[0]
        evidence = tuple(dict.fromkeys((*charge.evidence, incident_id, alert.alert_id)))
        base = {"waybill_id": waybill, "order_id": None, "merchant_id": None, "carrier_id": None}
        if alert.waybill_id == waybill:
            base.update(order_id=alert.order_id, merchant_id=alert.merchant_id, carrier_id=alert.carrier_id)
        entries += _split(charge, exemption, evidence, alert.detected_at, base, currency, late=True)
        updated.append(msgspec.structs.replace(charge, exempted_by=exemption.id))
    return entries, updated


def false_alarm_reversals(
    alert_id: str, charges: dict[str, Charge], entries: list[Entry], note: str, at_ms: int
) -> tuple[list[Entry], list[Charge]]:
    """Entries that undo what a false alarm charged, and the charges as they stand afterwards.

    A charge belongs to the alert that caused it (the first id of its evidence). For each such
    charge the net booked per (party, rule) over the parcel's ``entries`` is reversed (a
    re-attribution to the platform is undone too), with the mark as evidence. The keys name the
    charge and the mark, so marking twice, or replaying, appends nothing new; the charge is then
    closed (``exempted_by``) so a later incident does not re-attribute it.

    >>> c = Charge(charge_key="WB1|r", party="carrier", amount_fen=500, rule_id="r", rule_version="v1", evidence=("a1",))
    >>> e = _entry("charge|WB1|r", kind="charge", waybill_id="WB1", party="carrier", amount_fen=500, currency="CNY",
    ...            rule_id="r", rule_version="v1", evidence=("a1",), reason="", at_ms=1, charge_key="WB1|r")
    >>> [(x.party, x.amount_fen) for x in false_alarm_reversals("a1", {c.charge_key: c}, [e], "scanner", 9)[0]]
    [('carrier', -500)]
    """

    mark = f"false-alarm:{alert_id}"
    out: list[Entry] = []
    updated: list[Charge] = []
    for charge in sorted(charges.values(), key=lambda c: c.charge_key):
        if not charge.evidence or charge.evidence[0] != alert_id or charge.exempted_by == mark:
            continue
        net: dict[tuple[str, str], list[Entry]] = {}
        for e in entries:
            if e.charge_key == charge.charge_key:
                net.setdefault((e.party, e.rule_id), []).append(e)
        for (party, rule_id), booked in sorted(net.items()):
            amount = sum(e.amount_fen for e in booked)
            if amount == 0:
                continue
            first = booked[0]
            out.append(
                _entry(
                    f"false-alarm|{charge.charge_key}|{party}|{rule_id}",
                    kind="reversal",
                    waybill_id=first.waybill_id,
                    party=party,
                    amount_fen=-amount,
                    currency=first.currency,
                    rule_id=rule_id,
                    rule_version=first.rule_version,
                    evidence=(alert_id, mark),
                    reason=f"false alarm: {note}"[:200] if note else "false alarm",
                    at_ms=at_ms,
                    charge_key=charge.charge_key,
                    order_id=first.order_id,
                    merchant_id=first.merchant_id,
                    carrier_id=first.carrier_id,
                )
            )
        updated.append(msgspec.structs.replace(charge, exempted_by=mark))
    return out, updated
