"""``logiwatch worker`` / ``ticker`` argument errors: one line, the right exit code."""

from __future__ import annotations

import pytest

from logiwatch.cli import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["worker", "--bootstrap", "no-port-here"], "--bootstrap must be HOST:PORT"),
        (["worker", "--metrics-port", "70000"], "--metrics-port must be 0..65535"),
        (["ticker", "--interval", "0", "--once"], "--interval must be > 0"),
    ],
)
def test_bad_worker_and_ticker_arguments_stop_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_non_numeric_metrics_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["worker", "--metrics-port", "many"])
    assert exc.value.code == 2
    assert "invalid int value" in capsys.readouterr().err
