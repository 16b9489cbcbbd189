"""The routes file: receivers, routes, silences and inhibition rules.

Loaded from TOML (``tomllib``) once at start-up and validated completely;
any problem raises :class:`~logiwatch.errors.ConfigError` with one line that
names the file, the entry and the fix. :class:`RoutingConfig` then answers
which receivers get an alert, whether a silence mutes it and whether an
inhibition rule applies. Layout (see ``docs/webhooks.md``)::

    escalate_after_s = 1800      # unacknowledged alerts escalate after this
    group_wait_s = 0             # an incident notification waits this long to collect parcels
    [[receivers]]  name, url, secret, format, timeout_s, rate_per_s, retry_schedule_s, ...
                   (kind = "alertmanager": url of an Alertmanager, no secret, resend_s)
    [[routes]]     receiver, types, severities, merchants, carriers, regions, matchers
    [[silences]]   matchers, starts_at, ends_at (RFC 3339), comment
    [[inhibit_rules]] source_type, target_types, equal
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from logiwatch.alerts.model import (
    InhibitRule,
    Matcher,
    PayloadFormat,
    Receiver,
    ReceiverKind,
    Route,
    Silence,
    alert_labels,
)
from logiwatch.alerts.webhooks import secret_bytes
from logiwatch.config import read_toml
from logiwatch.detectors.model import Alert, AnomalyType, Severity
from logiwatch.errors import ConfigError

_TYPES = {t.value for t in AnomalyType}
_SEVERITIES = {s.value for s in Severity}
#: Standard Webhooks asks for secrets of at least 24 bytes.
MIN_SECRET_BYTES = 24


class _RawSilence(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    matchers: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    comment: str = ""


class _ReceiverEntry(Receiver, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``[[receivers]]`` entry: a :class:`Receiver` whose secret may come from ``secret_env`` instead."""

    secret: str = ""
    secret_env: str | None = None


class _RawInhibit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    source_type: str = "hub_incident"
    target_types: tuple[str, ...] = ("stall",)
    equal: str = "incident_id"


class _RawFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    escalate_after_s: float = 1800.0
    group_wait_s: float = 0.0
    receivers: tuple[_ReceiverEntry, ...] = ()
    routes: tuple[Route, ...] = ()
    silences: tuple[_RawSilence, ...] = ()
    inhibit_rules: tuple[_RawInhibit, ...] | None = None


class RoutingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The validated routes file."""

    receivers: dict[str, Receiver]
    routes: tuple[Route, ...] = ()
    silences: tuple[Silence, ...] = ()
    inhibit_rules: tuple[InhibitRule, ...] = (InhibitRule(),)
    escalate_after_s: float = 1800.0
    group_wait_s: float = 0.0

    def receivers_for(self, alert: Alert) -> list[str]:
        """Names of receivers with at least one matching route, in file order, once each."""

        labels = alert_labels(alert)
        out: list[str] = []
        for route in self.routes:
            if route.receiver not in out and route_matches(route, labels):
                out.append(route.receiver)
        return out

    def silenced_by(self, alert: Alert, now_ms: int, extra: tuple[Silence, ...] = ()) -> Silence | None:
        labels = alert_labels(alert)
        for silence in (*self.silences, *extra):
            if silence.starts_at <= now_ms < silence.ends_at and all(
                Matcher.parse(m).matches(labels) for m in silence.matchers
            ):
                return silence
        return None

    def inhibits(self, alert: Alert) -> InhibitRule | None:
        """The rule that mutes ``alert`` given that its source alert is firing, if any.

        The detector sets ``incident_id`` on a parcel alert only once the
        incident is declared, so the label itself proves the source fired.
        """

        labels = alert_labels(alert)
        for rule in self.inhibit_rules:
            if alert.alert_type in rule.target_types and labels.get(rule.equal):
                return rule
        return None


def route_matches(route: Route, labels: dict[str, str]) -> bool:
    checks = (
        (route.types, "alert_type"),
        (route.severities, "severity"),
        (route.merchants, "merchant_id"),
        (route.carriers, "carrier_id"),
        (route.regions, "region"),
    )
    for allowed, name in checks:
        if allowed and labels[name] not in allowed:
            return False
    return all(Matcher.parse(m).matches(labels) for m in route.matchers)


def _fail(path: Path | str, where: str, message: str) -> ConfigError:
    return ConfigError(f"routes file {path}: {where}: {message}")


def _to_ms(value: datetime, path: Path | str, where: str) -> int:
    if value.tzinfo is None:
        raise _fail(path, where, "time needs a UTC offset, e.g. 2026-11-11T00:00:00Z")
    return int(value.timestamp() * 1000)


def load_routes(path: str | Path) -> RoutingConfig:
    """Read and validate a routes file; raise ``ConfigError`` (one line) on any problem."""

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"routes file {p} is a directory: point alerts.routes_file at a .toml file")
    try:
        return parse_routes(read_toml(p, "routes file"), p)
    except UnicodeDecodeError:
        raise ConfigError(f"routes file {p} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"routes file {p} cannot be read: {exc.strerror or exc}") from None


def parse_routes(data: dict[str, Any], source: Path | str = "<routes>") -> RoutingConfig:
    try:
        raw = msgspec.convert(data, _RawFile, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"routes file {source}: {exc}") from None
    receivers: dict[str, Receiver] = {}
    for i, entry in enumerate(raw.receivers):
        where = f"receivers[{i}] ({entry.name})"
        if entry.name in receivers:
            raise _fail(source, where, "duplicate receiver name")
        receivers[entry.name] = _check_receiver(source, where, entry)
    for i, route in enumerate(raw.routes):
        where = f"routes[{i}]"
        if route.receiver not in receivers:
            known = ", ".join(receivers) or "none defined"
            raise _fail(source, where, f"unknown receiver {route.receiver!r} (known: {known})")
        _check_values(source, where, "types", route.types, _TYPES)
        _check_values(source, where, "severities", route.severities, _SEVERITIES)
        _check_matchers(source, where, route.matchers)
    silences = []
    for i, s in enumerate(raw.silences):
        where = f"silences[{i}]"
        if not s.matchers:
            raise _fail(source, where, "a silence needs at least one matcher")
        _check_matchers(source, where, s.matchers)
        start, end = _to_ms(s.starts_at, source, where), _to_ms(s.ends_at, source, where)
        if end <= start:
            raise _fail(source, where, "ends_at must be after starts_at")
        silences.append(
            Silence(
                silence_id=f"config-{i}", matchers=s.matchers, starts_at=start, ends_at=end, comment=s.comment
            )
        )
    inhibit: tuple[InhibitRule, ...] = (InhibitRule(),)
    if raw.inhibit_rules is not None:
        rules = []
        for i, ir in enumerate(raw.inhibit_rules):
            where = f"inhibit_rules[{i}]"
            _check_values(source, where, "source_type", (ir.source_type,), _TYPES)
            _check_values(source, where, "target_types", ir.target_types, _TYPES)
            rules.append(
                InhibitRule(
                    source_type=AnomalyType(ir.source_type),
                    target_types=tuple(AnomalyType(t) for t in ir.target_types),
                    equal=ir.equal,
                )
            )
        inhibit = tuple(rules)
    if raw.escalate_after_s <= 0 or raw.group_wait_s < 0:
        raise _fail(source, "(top level)", "escalate_after_s must be > 0 and group_wait_s >= 0")
    return RoutingConfig(
        receivers=receivers,
        routes=raw.routes,
        silences=tuple(silences),
        inhibit_rules=inhibit,
        escalate_after_s=raw.escalate_after_s,
        group_wait_s=raw.group_wait_s,
    )


def _check_receiver(source: Path | str, where: str, entry: _ReceiverEntry) -> Receiver:
    """The :class:`Receiver` an entry describes, its secret resolved; ``ConfigError`` on a bad value."""

    parts = urlsplit(entry.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(source, where, f"url must be http(s)://host/..., got {entry.url!r}")
    if entry.kind == ReceiverKind.ALERTMANAGER:
        return _check_alertmanager(source, where, entry)
    secret = entry.secret
    if entry.secret_env:
        secret = os.environ.get(entry.secret_env, "")
        if not secret:
            raise _fail(source, where, f"secret_env {entry.secret_env} is not set")
    if not secret:
        raise _fail(source, where, "a secret (or secret_env) is required to sign webhooks")
    try:
        key = secret_bytes(secret)
    except ValueError as exc:
        raise _fail(source, where, str(exc)) from None
    if len(key) < MIN_SECRET_BYTES:
        raise _fail(source, where, f"secret is shorter than {MIN_SECRET_BYTES} bytes")
    if not 0 < entry.timeout_s <= 60 or not 0 < entry.connect_timeout_s <= entry.timeout_s:
        raise _fail(source, where, "timeouts must satisfy 0 < connect_timeout_s <= timeout_s <= 60")
    if entry.rate_per_s <= 0:
        raise _fail(source, where, "rate_per_s must be > 0")
    if not 256 <= entry.max_payload_bytes <= 1_000_000:
        raise _fail(source, where, "max_payload_bytes must be within 256..1000000")
    if not entry.retry_schedule_s or any(s < 0 for s in entry.retry_schedule_s):
        raise _fail(source, where, "retry_schedule_s must be a non-empty list of seconds >= 0")
    fields = msgspec.structs.asdict(entry)
    del fields["secret_env"]
    return Receiver(**{**fields, "secret": secret})


def _check_alertmanager(source: Path | str, where: str, entry: _ReceiverEntry) -> Receiver:
    """A receiver of kind ``alertmanager``: ``url`` is the Alertmanager's base URL (the API
    path is added here), no secret, the webhook format does not apply."""

    if entry.secret or entry.secret_env:
        raise _fail(source, where, "an alertmanager receiver takes no secret (Alertmanager's API checks none)")
    if entry.format != PayloadFormat.GENERIC:
        raise _fail(source, where, "an alertmanager receiver posts Alertmanager's API v2 alerts: drop 'format'")
    if not 1 <= entry.resend_s <= 3600:
        raise _fail(source, where, "resend_s must be within 1..3600 seconds")
    if not 0 < entry.timeout_s <= 60 or not 0 < entry.connect_timeout_s <= entry.timeout_s:
        raise _fail(source, where, "timeouts must satisfy 0 < connect_timeout_s <= timeout_s <= 60")
    if entry.rate_per_s <= 0 or not entry.retry_schedule_s or any(s < 0 for s in entry.retry_schedule_s):
        raise _fail(source, where, "rate_per_s must be > 0 and retry_schedule_s a non-empty list of seconds >= 0")
    fields = msgspec.structs.asdict(entry)
    del fields["secret_env"]
    base = entry.url.rstrip("/").removesuffix("/api/v2/alerts")
    return Receiver(**{**fields, "url": base + "/api/v2/alerts", "secret": "", "max_payload_bytes": max(entry.max_payload_bytes, 1_000_000)})


def _check_values(
    source: Path | str, where: str, field: str, values: tuple[str, ...], allowed: set[str]
) -> None:
    for v in values:
        if v not in allowed:
            raise _fail(
                source, where, f"{field}: unknown value {v!r} (allowed: {', '.join(sorted(allowed))})"
            )


def _check_matchers(source: Path | str, where: str, matchers: tuple[str, ...]) -> None:
    for m in matchers:
        try:
            Matcher.parse(m)
        except ValueError as exc:
            raise _fail(source, where, str(exc)) from None


EMPTY = RoutingConfig(receivers={})
