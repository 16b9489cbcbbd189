"""The provisioned Grafana dashboards load in Grafana 11's schema and query what the code exports.

Structure only, no I/O beyond reading the files: schema version, unique ids,
a layout that fits the 24-column grid, every panel on the provisioned
datasource, only Grafana macros Prometheus can be given, and every metric
name defined by the worker or alert-service metrics modules. Whether each
query parses and returns data is checked against a real Prometheus in
``tests/ops/test_dashboard_queries.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
#: Grafana's Prometheus macros that tests/ops substitutes before querying.
KNOWN_MACROS = {"$__rate_interval", "$__interval", "$__range"}
#: The oldest schema the dashboards are written in (Grafana 11.x writes 39+).
MIN_SCHEMA_VERSION = 39
METRIC_SOURCES = [ROOT / "streams" / "metrics.py", ROOT / "alerts" / "metrics.py"]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return out


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p.get("type") != "row"]


def provisioned_uid() -> str:
    data = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = data["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for src in METRIC_SOURCES:
        names |= set(re.findall(r'"(logiwatch_[a-z0-9_]+)"', src.read_text()))
    return names


def test_both_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} >= {"operations", "logistics"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_has_current_schema_and_stable_identity(path: Path) -> None:
    d = load(path)
    assert d["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"]), "uid must be stable, short and URL-safe"
    assert d["title"] and d.get("id") is None, "provisioned dashboards carry no database id"
    assert d["templating"]["list"] == [] or all("name" in v for v in d["templating"]["list"])


def test_dashboard_uids_and_titles_are_unique() -> None:
    loaded = [load(p) for p in DASHBOARDS]
    assert len({d["uid"] for d in loaded}) == len(loaded)
    assert len({d["title"] for d in loaded}) == len(loaded)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panel_ids_are_unique(path: Path) -> None:
    ids = [p["id"] for p in all_panels(load(path))]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for p in all_panels(load(path)):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_and_query_uses_the_provisioned_datasource(path: Path) -> None:
    uid = provisioned_uid()
    panels = query_panels(load(path))
    assert panels
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
            assert isinstance(t["expr"], str) and t["expr"].strip(), p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_queries_use_only_known_grafana_macros(path: Path) -> None:
    for p in query_panels(load(path)):
        for t in p["targets"]:
            used = set(re.findall(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", t["expr"]))
            assert used <= KNOWN_MACROS, f"{p['title']!r} uses undefined variables {used - KNOWN_MACROS}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_queried_metric_is_exported_by_the_code(path: Path) -> None:
    exported = exported_metric_names()
    for p in query_panels(load(path)):
        for t in p["targets"]:
            for name in re.findall(r"\blogiwatch_[a-z0-9_]+", t["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in exported or base in exported, f"{p['title']!r}: {name} is not defined in {METRIC_SOURCES}"


def exprs(stem: str) -> str:
    return "\n".join(t["expr"] for p in query_panels(load(GRAFANA / "dashboards" / f"{stem}.json")) for t in p["targets"])


def test_operations_dashboard_covers_throughput_lag_latency_dlq_and_webhooks() -> None:
    text = exprs("operations")
    for metric in (
        "logiwatch_worker_events_consumed_total",
        "logiwatch_worker_consumer_lag",
        "logiwatch_worker_watermark_delay_seconds",
        "logiwatch_worker_event_to_alert_seconds_bucket",
        "logiwatch_worker_dlq_total",
        "logiwatch_alerts_notifications_total",
        "logiwatch_alerts_delivery_seconds_bucket",
        "logiwatch_alerts_dead_letters_total",
    ):
        assert metric in text, metric


def test_logistics_dashboard_covers_what_cs_leads_asked_for() -> None:
    text = exprs("logistics")
    for needle in (
        "sum by (type) (logiwatch_alerts_open)",
        "logiwatch_alerts_open_by_region",
        "logiwatch_alerts_open_by_carrier",
        'type="stall"',
        "logiwatch_alerts_incidents_open",
        'type="predicted_late"',
        "sum by (party) (logiwatch_liability_amount_yuan)",
    ):
        assert needle in text, needle


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "logiwatch.yml").read_text())
    [entry] = provider["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{entry['options']['path']}:ro" in mounts
