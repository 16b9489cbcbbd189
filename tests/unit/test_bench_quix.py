"""The quixstreams peer's pure parts: reading what its app wrote, the checks on a run,
the ratios against the worker, how a phase that cannot run is reported, and the
virtualenv step failing into a skip with its reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from logiwatch.bench import BenchOptions, derive, render_markdown, render_table
from logiwatch.bench.figures import QUIX_KEYS, PhaseSkipped
from logiwatch.bench.quix import QuixStats, check_run, ensure_quix_python, parse_first, parse_stats
from logiwatch.bench.runner import _Run
from logiwatch.errors import LogiwatchError


def _stateful(**overrides: object) -> str:
    data: dict[str, object] = {"mode": "stateful", "count": 30_000, "first_s": 1.7e9, "new_keys": 3182}
    data["out_of_order"] = 4
    data.update(overrides)
    return json.dumps(data)


# ----------------------------------------------------------------- parsing the app's files


def test_the_stateful_apps_counts_are_read_back() -> None:
    stats = parse_stats(_stateful(), "stateful")
    assert stats == QuixStats("stateful", 30_000, 1.7e9, new_keys=3182, out_of_order=4)


def test_the_bare_apps_counts_need_no_state_figures() -> None:
    stats = parse_stats(json.dumps({"mode": "bare", "count": 12, "first_s": 5}), "bare")
    assert stats == QuixStats("bare", 12, 5.0)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        _stateful(mode="bare"),  # the other app's file
        _stateful(count=-1),
        _stateful(count=2.5),
        _stateful(count=True),
        _stateful(first_s=None),
        _stateful(first_s=0),
        _stateful(new_keys="3182"),
        json.dumps({"mode": "stateful", "count": 3, "first_s": 1.0}),  # no state figures
    ],
)
def test_a_malformed_app_output_is_a_clear_error_not_a_figure(text: str) -> None:
    with pytest.raises(LogiwatchError, match="quix app output"):
        parse_stats(text, "stateful")


def test_the_first_record_time_is_read_and_checked() -> None:
    assert parse_first('{"first_s": 1796191312.25}') == 1796191312.25
    for bad in ("", "{}", '{"first_s": "soon"}', "3"):
        with pytest.raises(LogiwatchError, match="first"):
            parse_first(bad)


# ----------------------------------------------------------------- checks on a run


def test_a_run_that_committed_more_than_it_handled_or_was_produced_fails() -> None:
    stats = QuixStats("bare", 1000, 1.0)
    check_run(stats, committed=1000, expected=1000, parcels=100)
    with pytest.raises(LogiwatchError, match="handled 1,000 records but committed 1,200"):
        check_run(stats, committed=1200, expected=5000, parcels=100)
    with pytest.raises(LogiwatchError, match="more than the 1,000 produced"):
        check_run(QuixStats("bare", 2000, 1.0), committed=1500, expected=1000, parcels=100)


def test_a_stateful_app_that_read_everything_keeps_one_state_per_parcel() -> None:
    check_run(QuixStats("stateful", 1000, 1.0, 100, 0), committed=1000, expected=1000, parcels=100)
    with pytest.raises(LogiwatchError, match="99 keys without state"):
        check_run(QuixStats("stateful", 1000, 1.0, 99, 0), committed=1000, expected=1000, parcels=100)
    # over a budget it has not seen every parcel yet: nothing to compare
    check_run(QuixStats("stateful", 600, 1.0, 70, 0), committed=500, expected=1000, parcels=100)


# ----------------------------------------------------------------- ratios and the report


def test_the_worker_is_reported_against_both_quix_apps_as_ratios_of_one_run() -> None:
    r = derive({"worker_eps": 9_000.0, "quix_bare_eps": 60_000.0, "quix_stateful_eps": 30_000.0})
    assert r["worker_vs_quix_bare_ratio"] == pytest.approx(0.15)
    assert r["worker_vs_quix_stateful_ratio"] == pytest.approx(0.3)
    r["errors"], r["skipped"] = {}, []
    table = render_table(r)
    assert "worker / stateful quixstreams" in table and "0.300" in table
    md = render_markdown(r)
    assert "| worker / bare quixstreams | 0.150 | x |" in md
    assert "| stateful quixstreams app: RocksDB get/set, compare | 30,000 | events/s |" in md


def test_skipped_quix_phases_print_their_keys_as_null_and_say_why() -> None:
    r = derive({"worker_eps": 9_000.0, "errors": {}, "skipped": ["quix_bare", "quix_stateful"]})
    r["skip_reasons"] = {"quix_bare": "could not pip install quixstreams: no network"}
    assert all(key in r and r[key] is None for key in QUIX_KEYS)
    table = render_table(r)
    row = next(x for x in table.splitlines() if x.startswith("worker / bare quixstreams"))
    assert "skipped" in row and "FAILED" not in row
    assert "skipped quix_bare: could not pip install quixstreams: no network" in table
    md = render_markdown(r)
    assert "- `quix_bare`: could not pip install quixstreams: no network" in md
    assert "Skipped on request: quix_stateful." in md  # only the one that was asked for


def test_a_phase_that_cannot_run_is_recorded_as_skipped_with_its_reason_not_as_failed() -> None:
    run = _Run.__new__(_Run)
    lines: list[str] = []
    run.options, run.log = BenchOptions(events=1000), lines.append
    run.results = {"skipped": [], "skip_reasons": {}, "errors": {}}

    def cannot() -> dict[str, object]:
        raise PhaseSkipped("quixstreams does not install here")

    def boom() -> dict[str, object]:
        raise RuntimeError("broker gone")

    run.phase("quix_bare", cannot)
    run.phase("quix_stateful", boom)
    assert run.results["skipped"] == ["quix_bare"]
    assert run.results["skip_reasons"] == {"quix_bare": "quixstreams does not install here"}
    assert run.results["errors"] == {"quix_stateful": "RuntimeError: broker gone"}
    assert "quix_bare_eps" not in run.results


# ----------------------------------------------------------------- the virtualenv


def test_a_virtualenv_that_cannot_be_made_skips_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PhaseSkipped, match="could not create the virtualenv in .*file/venv"):
        ensure_quix_python(blocker / "venv", lambda _line: None)


def test_a_virtualenv_without_quixstreams_is_repaired_by_pip_and_a_failing_pip_is_the_reason(
    tmp_path: Path,
) -> None:
    # A "virtualenv" whose python is a script: it imports nothing and pip fails with a message.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "if sys.argv[1:3] == ['-m', 'pip']:\n"
        "    print('ERROR: No matching distribution found for quixstreams', file=sys.stderr); sys.exit(1)\n"
        "sys.exit(1)\n"
    )
    python.chmod(0o755)
    with pytest.raises(PhaseSkipped, match="pip install quixstreams.*No matching distribution"):
        ensure_quix_python(venv, lambda _line: None)
