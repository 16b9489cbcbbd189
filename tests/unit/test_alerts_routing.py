"""Routes file validation (one-line errors) and which receivers, silences and inhibitions apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from logiwatch.alerts.model import Matcher
from logiwatch.alerts.routing import load_routes, parse_routes
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Severity
from logiwatch.errors import ConfigError

DATA = Path(__file__).parent.parent / "data"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def alert(**over: object) -> Alert:
    base: dict[str, object] = {
        "alert_id": "a1",
        "alert_type": AnomalyType.STALL,
        "status": AlertStatus.FIRING,
        "severity": Severity.WARNING,
        "detected_at": T0,
        "summary": "parcel stalled at HUB-1",
        "waybill_id": "WB1",
        "carrier_id": "C1",
        "merchant_id": "M1",
        "region": "east",
    }
    base.update(over)
    return Alert(**base)  # type: ignore[arg-type]


BAD_FILES = {
    "routes_bad_syntax.toml": "is not valid TOML",
    "routes_bad_unknown_receiver.toml": "routes[0]: unknown receiver 'nobody' (known: cs)",
    "routes_bad_url.toml": "receivers[0] (cs): url must be http(s)://host/..., got 'ftp://hooks.example.com/x'",
    "routes_bad_secret.toml": "receivers[0] (cs): secret is shorter than 24 bytes",
    "routes_bad_type.toml": "routes[0]: types: unknown value 'stalled'",
    "routes_bad_matcher.toml": "routes[0]: matcher 'carrier=C1': unknown label 'carrier'",
    "routes_bad_format.toml": "Invalid enum value 'slack' - at `$.receivers[0].format`",
    "routes_bad_silence.toml": "silences[0]: ends_at must be after starts_at",
    "routes_bad_alertmanager_secret.toml": "receivers[0] (ops-am): an alertmanager receiver takes no secret",
    "routes_bad_alertmanager_resend.toml": "receivers[0] (ops-am): resend_s must be within 1..3600 seconds",
}


@pytest.mark.parametrize("name, message", sorted(BAD_FILES.items()))
def test_bad_routes_file_fails_with_one_line_naming_file_and_problem(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_routes(DATA / name)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("routes file ")
    assert name in text
    assert message in text


def test_every_bad_routes_file_in_tests_data_is_covered() -> None:
    assert {p.name for p in DATA.glob("routes_bad_*.toml")} == set(BAD_FILES)


def test_missing_routes_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="routes file not found"):
        load_routes(DATA / "does-not-exist.toml")


def test_routes_send_an_alert_to_each_matching_receiver_once() -> None:
    cfg = load_routes(DATA / "routes_good.toml")
    assert cfg.receivers_for(alert()) == ["cs-east"]
    assert cfg.receivers_for(alert(severity=Severity.CRITICAL)) == ["cs-east", "oncall-am"]
    assert cfg.receivers_for(alert(region="west")) == []
    assert cfg.receivers_for(alert(region="west", severity=Severity.CRITICAL, carrier_id="DHL")) == []


def test_silence_mutes_matching_alerts_only_inside_its_time_range() -> None:
    cfg = load_routes(DATA / "routes_good.toml")
    assert cfg.silenced_by(alert(carrier_id="C9"), T0 + 1000) is not None
    assert cfg.silenced_by(alert(carrier_id="C9"), T0 + 86_400_000) is None
    assert cfg.silenced_by(alert(carrier_id="C1"), T0 + 1000) is None


def test_default_inhibition_mutes_stall_explained_by_an_incident_but_not_other_types() -> None:
    cfg = load_routes(DATA / "routes_good.toml")
    assert cfg.inhibits(alert(incident_id="inc1")) is not None
    assert cfg.inhibits(alert()) is None
    assert cfg.inhibits(alert(alert_type=AnomalyType.LIKELY_LOST, incident_id="inc1")) is None


def test_secret_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LW_TEST_SECRET", "x" * 32)
    cfg = parse_routes({"receivers": [{"name": "r", "url": "https://h/x", "secret_env": "LW_TEST_SECRET"}]})
    assert cfg.receivers["r"].secret == "x" * 32
    monkeypatch.delenv("LW_TEST_SECRET")
    with pytest.raises(ConfigError, match="secret_env LW_TEST_SECRET is not set"):
        parse_routes({"receivers": [{"name": "r", "url": "https://h/x", "secret_env": "LW_TEST_SECRET"}]})


@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ("carrier_id=C1", {"carrier_id": "C1"}, True),
        ("carrier_id!=C1", {"carrier_id": "C1"}, False),
        ("alert_type=~stall|misroute", {"alert_type": "misroute"}, True),
        ("alert_type=~stall", {"alert_type": "stall_x"}, False),  # full match, as Alertmanager
        ("region!~east.*", {"region": "west"}, True),
    ],
)
def test_matchers_follow_alertmanager_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


def test_matcher_with_bad_regex_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad regular expression"):
        Matcher.parse("region=~(")


def test_an_alertmanager_receiver_needs_no_secret_and_posts_to_its_api_v2() -> None:
    cfg = parse_routes(
        {"receivers": [{"name": "ops-am", "kind": "alertmanager", "url": "http://am.example:9093/"}], "routes": [{"receiver": "ops-am", "types": ["stall"]}]}
    )
    am = cfg.receivers["ops-am"]
    assert (am.kind.value, am.url, am.secret, am.resend_s) == ("alertmanager", "http://am.example:9093/api/v2/alerts", "", 60.0)
    assert cfg.receivers_for(alert()) == ["ops-am"] and cfg.receivers_for(alert(alert_type=AnomalyType.LIKELY_LOST)) == []
