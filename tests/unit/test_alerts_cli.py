"""``logiwatch alerts`` and ``logiwatch liability``: bad config and arguments stop with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from logiwatch.cli import main

DATA = Path(__file__).parent.parent / "data"


def config(tmp_path: Path, routes: Path | None = None, rules: Path | None = None) -> Path:
    cfg = tmp_path / "cfg.toml"
    lines = ["[redis]", 'url = "redis://127.0.0.1:1/0"', "[alerts]"]
    if routes:
        lines.append(f'routes_file = "{routes}"')
    if rules:
        lines.append(f'liability_rules_file = "{rules}"')
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("routes_bad_*.toml")))
def test_serve_with_bad_routes_file_exits_1_with_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(config(tmp_path, DATA / name)), "alerts", "serve"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("logiwatch alerts: error: routes file ") and name in err


def test_serve_with_bad_rules_file_exits_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[versions]]\nversion = "v1"\neffective_from = 2026-01-01T00:00:00\nrules = []\n')
    code = main(["--config", str(config(tmp_path, DATA / "routes_good.toml", rules)), "alerts", "serve"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "effective_from needs a UTC offset" in err


def test_serve_without_redis_exits_1_naming_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(config(tmp_path, DATA / "routes_good.toml")), "alerts", "serve"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "cannot reach Redis" in err and "logiwatch stack up" in err


def test_check_accepts_the_good_routes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config(tmp_path, DATA / "routes_good.toml")), "alerts", "check"]) == 0
    assert "2 receivers, 2 routes" in capsys.readouterr().out


def test_redrive_of_unknown_receiver_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(config(tmp_path, DATA / "routes_good.toml")), "alerts", "redrive", "--receiver", "nobody"])
    assert code == 1 and "unknown receiver 'nobody'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "last week"], "--since: not an ISO 8601 time"),
        (["--until", "2026-01-01T00:00:00"], "--until: time '2026-01-01T00:00:00' needs a UTC offset"),
        (["--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"], "--until must be after --since"),
    ],
)
def test_liability_report_rejects_bad_times_with_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["liability", "report", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_alerts_without_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["alerts"])
    assert info.value.code == 2
