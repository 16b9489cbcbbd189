"""Backtest scoring rules and the ``logiwatch backtest`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logiwatch.backtest import score
from logiwatch.cli import main
from logiwatch.detectors.codec import write_jsonl
from logiwatch.detectors.model import Alert, AlertStatus, AnomalyType, Label, Severity
from logiwatch.detectors.testing import H, Scenario
from logiwatch.sim.traffic import generate


def _alert(kind: AnomalyType, wb: str | None, at: int, **kw: object) -> Alert:
    return Alert(
        alert_id=f"{kind.value}-{wb}-{at}",
        alert_type=kind,
        status=kw.pop("status", AlertStatus.FIRING),  # type: ignore[arg-type]
        severity=Severity.WARNING,
        detected_at=at,
        summary="x",
        waybill_id=wb,
        **kw,  # type: ignore[arg-type]
    )


def _events(*waybills: str) -> list:
    sc = Scenario(start_ms=0)
    for wb in waybills:
        sc.parcel(wb).paid(0)
    return sc.events()


def test_precision_counts_every_firing_alert_and_recall_every_labelled_parcel() -> None:
    labels = [
        Label(anomaly_type=AnomalyType.STALL, onset_at=0, waybill_id="A", promise_broken_at=10 * H),
        Label(anomaly_type=AnomalyType.STALL, onset_at=0, waybill_id="B"),
    ]
    alerts = [
        _alert(AnomalyType.STALL, "A", 2 * H),
        _alert(AnomalyType.STALL, "A", 5 * H),  # a second episode on a labelled parcel: still true
        _alert(AnomalyType.STALL, "N", 3 * H),  # no stall label: false
        _alert(AnomalyType.STALL, "A", 6 * H, status=AlertStatus.RESOLVED),  # resolutions are not counted
    ]
    r = score(alerts, labels, _events("A", "B", "N"), scenario="t")
    m = r["types"]["stall"]
    assert (m["labelled"], m["alerted"], m["precision"], m["recall"]) == (2, 3, round(2 / 3, 4), 0.5)
    assert m["delay_p50_s"] == 2 * 3600 and m["lead_p50_s"] == 8 * 3600
    assert r["normal_parcels"] == 1 and r["false_alerts_per_1000_normal"] == 1000.0


def test_hub_incidents_match_by_hub_and_overlapping_window() -> None:
    labels = [
        Label(anomaly_type=AnomalyType.HUB_INCIDENT, onset_at=10 * H, waybill_id="A", node_id="HUB-X", incident_id="I1"),
        Label(anomaly_type=AnomalyType.HUB_INCIDENT, onset_at=14 * H, waybill_id="B", node_id="HUB-X", incident_id="I1"),
        Label(anomaly_type=AnomalyType.HUB_INCIDENT, onset_at=50 * H, waybill_id="C", node_id="HUB-Y", incident_id="I2"),
    ]
    alerts = [
        _alert(AnomalyType.HUB_INCIDENT, None, 18 * H, node_id="HUB-X", window_start=12 * H, window_end=18 * H),
        _alert(AnomalyType.HUB_INCIDENT, None, 30 * H, node_id="HUB-Y", window_start=20 * H, window_end=30 * H),
    ]
    m = score(alerts, labels, _events("A", "B", "C"))["types"]["hub_incident"]
    assert (m["labelled"], m["alerted"], m["precision"], m["recall"]) == (2, 2, 0.5, 0.5)
    assert m["delay_p50_s"] == 8 * 3600


def test_stalls_linked_to_a_hub_incident_are_explained_not_false() -> None:
    labels = [Label(anomaly_type=AnomalyType.HUB_INCIDENT, onset_at=0, waybill_id="A", node_id="H", incident_id="I")]
    alerts = [
        _alert(AnomalyType.HUB_INCIDENT, None, H, node_id="H", window_start=0, window_end=H, affected_waybills=("A",)),
        _alert(AnomalyType.STALL, "A", 2 * H),
    ]
    m = score(alerts, labels, _events("A"))["types"]["stall"]
    assert (m["alerted"], m["false_alerts"], m["explained_by_incident"]) == (0, 0, 1)
    unlinked = score(alerts[1:], labels, _events("A"))["types"]["stall"]
    assert unlinked["false_alerts"] == 1


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    events, labels = generate("default", seed=5, parcels=1500)
    write_jsonl(out / "events.jsonl", events)
    write_jsonl(out / "labels.jsonl", labels)
    return out


def test_backtest_json_has_the_issue_shape_and_finds_anomalies(simulated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["backtest", "--events", str(simulated / "events.jsonl"), "--labels", str(simulated / "labels.jsonl"), "--json",
         "--partitions", "2"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert {"scenario", "parcels", "normal_parcels", "false_alerts_per_1000_normal", "types"} <= set(result)
    assert result["parcels"] == 1500 and 0 < result["normal_parcels"] < 1500
    predict = [t for t in result["types"] if "predict" in t]
    assert predict == ["predicted_late"]
    for name, m in result["types"].items():
        assert {"labelled", "alerted", "precision", "recall", "f1", "delay_p50_s", "delay_p90_s", "lead_p50_s"} <= set(m)
        assert m["recall"] is None or 0.0 <= m["recall"] <= 1.0, name
        assert m["precision"] is None or 0.0 <= m["precision"] <= 1.0, name
    # a small log, cold baselines: still most parcel anomalies are found (a missing delivery
    # run is judged only once a carrier's feed has shown it scans them: not in a log this small)
    for name in ("late_dispatch", "contradiction", "stall"):
        assert result["types"][name]["recall"] >= 0.8, name


def test_backtest_table_is_readable(simulated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--events", str(simulated / "events.jsonl"), "--labels", str(simulated / "labels.jsonl"),
                 "--partitions", "1"]) == 0
    out = capsys.readouterr().out
    assert "predicted_late" in out and "false alerts per 1000 normal parcels" in out


def test_backtest_refuses_missing_files_and_bad_arguments_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--events", str(tmp_path / "nope.jsonl"), "--labels", str(tmp_path / "l.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--events file not found" in err
    (tmp_path / "e.jsonl").write_text("")
    (tmp_path / "l.jsonl").write_text("")
    assert main(["backtest", "--events", str(tmp_path / "e.jsonl"), "--labels", str(tmp_path / "l.jsonl"),
                 "--partitions", "0"]) == 1
    assert "--partitions must be at least 1" in capsys.readouterr().err
    (tmp_path / "e.jsonl").write_text('{"event_id": 1}\n')
    assert main(["backtest", "--events", str(tmp_path / "e.jsonl"), "--labels", str(tmp_path / "l.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "e.jsonl:1" in err
