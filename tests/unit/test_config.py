"""Settings files: a good one loads whole; each bad one stops with its own one-line message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logiwatch.cli import main
from logiwatch.config import load_settings, redacted_url, redis_url_problem
from logiwatch.errors import ConfigError

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own LOGIWATCH_* variables must not leak into these cases.
    import os

    for name in list(os.environ):
        if name.startswith("LOGIWATCH_"):
            monkeypatch.delenv(name)


BAD = {
    "bad_port.toml": "invalid setting stack.kafka_port in {path}: Input should be less than or equal to 65535",
    "bad_unknown_key.toml": "invalid setting kafka.bootstarp in {path}: Extra inputs are not permitted",
    "bad_type.toml": "invalid setting worker.batch_max_records in {path}: "
    "Input should be a valid integer, unable to parse string as an integer",
    "bad_log_level.toml": "invalid setting log_level in {path}: String should match pattern '^(DEBUG|INFO|WARNING|ERROR)$'",
    "bad_default_token.toml": "invalid setting alerts in {path}: Value error, api_token is the default "
    "'change-me' while api_host '0.0.0.0' is not loopback: set LOGIWATCH_ALERTS__API_TOKEN (or alerts.api_token)",
    "bad_redis_cluster_url.toml": "invalid setting redis in {path}: Value error, redis.url "
    "'redis+cluster://10.0.0.1:7000,10.0.0.2/1': cluster seed '10.0.0.2' is not host:port "
    "(write redis+cluster://host:port[,host:port...])",
    "bad_redis_prefix.toml": "invalid setting redis in {path}: Value error, redis.key_prefix 'lw:{{eu}}:' "
    "contains a brace: use letters, digits, ':', '-' or '_'",
    "bad_syntax.toml": "config file {path} is not valid TOML: "
    "Expected ']' at the end of a table declaration (at line 1, column 7)",
    "bad_not_utf8.toml": "config file {path} is not UTF-8 text (byte 13 is not valid UTF-8)",
    "bad_redis_scheme.toml": "invalid setting redis.url in {path}: Value error, 'http://127.0.0.1:6379/0' is not a Redis URL: "
    "the scheme must be one of redis://, rediss://, unix:// (e.g. redis://127.0.0.1:6379/0)",
    "bad_redis_port.toml": "invalid setting redis.url in {path}: Value error, 'redis://127.0.0.1:637900/0' is not a Redis URL: "
    "the port '637900' is not a number 1..65535",
}


def test_every_bad_config_file_has_a_case() -> None:
    assert sorted(p.name for p in DATA.glob("bad_*.toml")) == sorted(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_file_stops_the_cli_with_one_line_naming_the_setting(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = DATA / name
    assert main(["--config", str(path), "config", "show"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"logiwatch config: error: {BAD[name].format(path=path)}\n"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_the_default_api_token_is_accepted_on_loopback(host: str) -> None:
    assert load_settings(alerts={"api_host": host}).alerts.api_host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "alerts.internal"])
def test_the_default_api_token_is_refused_beyond_loopback_and_a_real_one_is_not(host: str) -> None:
    with pytest.raises(ConfigError, match=r"api_token is the default 'change-me' while api_host"):
        load_settings(alerts={"api_host": host})
    assert load_settings(alerts={"api_host": host, "api_token": "a-real-token"}).alerts.api_host == host


def test_a_config_path_that_is_a_directory_stops_the_cli_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path), "config", "show"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"logiwatch config: error: config file {tmp_path} is a directory: point it at a .toml file\n"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("notaurl", "the scheme must be one of redis://, rediss://, unix://"),
        ("http://127.0.0.1:6379/0", "the scheme must be one of redis://, rediss://, unix://"),
        ("redis://127.0.0.1:70000/0", "the port '70000' is not a number 1..65535"),
        ("redis://127.0.0.1:six/0", "the port 'six' is not a number 1..65535"),
        ("redis://127.0.0.1:0/0", "the port '0' is not a number 1..65535"),
        ("redis://[::1]:port/0", "the port 'port' is not a number 1..65535"),
        ("redis://[cache]:6379/0", "it cannot be parsed"),
        ("redis:///0", "no host"),
        ("redis://127.0.0.1:6379/zero", "the database 'zero' is not a number"),
        ("unix://", "a unix:// URL needs the socket's path"),
    ],
)
def test_config_show_refuses_a_redis_url_that_is_not_one_in_one_line(
    url: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOGIWATCH_REDIS__URL", url)
    assert main(["config", "show"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"logiwatch config: error: invalid setting redis.url in environment: Value error, {url!r} is not a Redis URL: ")
    assert problem in err


def test_a_bad_redis_url_is_shown_without_its_password(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOGIWATCH_REDIS__URL", "redis://app:s3cret@127.0.0.1:99999/0")
    assert main(["config", "show"]) == 1
    err = capsys.readouterr().err
    assert "s3cret" not in err and "'redis://app:***@127.0.0.1:99999/0' is not a Redis URL" in err


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:pw@cache.internal:6380/3",
        "redis://redis",
        "redis://[::1]:6379/1",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_the_redis_url_forms_redis_py_connects_with_are_accepted(url: str) -> None:
    assert load_settings(redis={"url": url}).redis.url == url


def test_missing_config_file_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^config file not found: .*nope\.toml$"):
        load_settings(DATA / "nope.toml")


def test_good_config_file_sets_every_section_and_keeps_the_other_defaults() -> None:
    s = load_settings(DATA / "good.toml")
    assert s.log_level == "DEBUG"
    assert s.kafka.bootstrap == "127.0.0.1:29092"
    assert s.kafka.session_timeout_ms == 12_000
    assert (s.kafka.topics.events, s.kafka.topics.events_partitions) == ("acme.events", 8)
    assert s.kafka.topics.alerts == "logistics.alerts"  # untouched default
    assert (s.redis.url, s.redis.key_prefix) == ("redis://127.0.0.1:6379/3", "acme:")
    assert (str(s.stack.state_dir), s.stack.kafka_port, s.stack.redis_port) == (
        "/tmp/acme-stack",
        29092,
        26379,
    )
    assert s.alerts.api_token.get_secret_value() == "s3cret-token"


def test_environment_wins_over_the_file_and_cli_wins_over_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGIWATCH_KAFKA__BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("LOGIWATCH_LOG_LEVEL", "WARNING")
    s = load_settings(DATA / "good.toml", log_level="ERROR")
    assert s.kafka.bootstrap == "10.0.0.1:9092"
    assert s.kafka.topics.events == "acme.events"  # the file still applies where env is silent
    assert s.log_level == "ERROR"


def test_config_show_masks_the_api_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(DATA / "good.toml"), "config", "show"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-token" not in out
    assert json.loads(out)["alerts"]["api_token"] == "**********"


@given(st.text(max_size=60) | st.builds("redis://{}".format, st.text(max_size=40)))
def test_the_redis_url_check_answers_every_string_without_raising(url: str) -> None:
    problem = redis_url_problem(url)
    assert problem is None or (problem and "\n" not in problem)
    assert isinstance(redacted_url(url), str)


def test_config_knobs_lists_every_knob_with_its_default_and_the_value_in_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.toml"
    path.write_text("[detection.knobs.predicted_late]\nfinal_h = 12.0\n")
    assert main(["--config", str(path), "config", "knobs"]) == 0
    knobs = json.loads(capsys.readouterr().out)
    assert knobs["predicted_late"]["final_h"] == {"default": 24.0, "value": 12.0}
    assert knobs["predicted_late"]["early_confidence_z"] == {"default": 1.0, "value": 1.0}
    assert knobs["stall"] and knobs["lost"]  # every detector, each with its knobs


def test_config_knobs_stops_on_an_unknown_knob_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k.toml"
    path.write_text("[detection.knobs.predicted_late]\nfinal_hh = 12.0\n")
    assert main(["--config", str(path), "config", "knobs"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "detection.knobs.predicted_late.final_hh" in err
