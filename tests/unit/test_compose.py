"""docker-compose.yml matches the code it deploys (no Docker engine runs here).

Parsed with PyYAML (anchors and ``<<`` merges resolved as Compose does):
every service the issue asks for is there with its health check and restart
policy; every mounted file, build context and named volume exists; ports are
valid, unique on the host and the ones the settings say; every ``LOGIWATCH_``
variable names a real setting and each service's environment builds a valid
``Settings``; every command is a real ``logiwatch`` subcommand; Prometheus
scrapes the ports the services listen on; the topics created are the
configured ones.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from logiwatch.alerts.routing import load_routes
from logiwatch.cli import build_parser
from logiwatch.config import Settings, TopicsConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: Services that run the logiwatch image (entrypoint ``logiwatch``).
LOGIWATCH_SERVICES = sorted(n for n, s in SERVICES.items() if s.get("image") == "logiwatch:local")
#: One-shot jobs: they exit, so no health check and no restart.
ONE_SHOT = {"kafka-init", "simulator"}
#: Values tests substitute for ``${VAR:?message}`` (a required secret with no default).
REQUIRED_PLACEHOLDER = "x" * 32
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR:?err}`` with an empty shell environment."""

    def sub(m: re.Match[str]) -> str:
        op, arg = m.group(2), m.group(3) or ""
        if op and op.endswith("-"):
            return arg
        if op and op.endswith("?"):
            return REQUIRED_PLACEHOLDER
        return ""

    return _VAR.sub(sub, value).replace("$$", "$")


def env_of(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: use the mapping form of environment"
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def setting_path_exists(model: type[BaseModel], parts: list[str]) -> bool:
    """Does ``LOGIWATCH_A__B`` (parts ``["a", "b"]``) name a field of ``Settings``?"""

    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    sub = field.annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and setting_path_exists(sub, parts[1:])


def settings_for(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the service's process would build from its environment."""

    import os

    for key in list(os.environ):
        if key.startswith("LOGIWATCH_"):
            monkeypatch.delenv(key)
    for key, value in env_of(service).items():
        monkeypatch.setenv(key, value)
    return Settings()


def port_pairs(service: str) -> list[tuple[int, int]]:
    out = []
    for spec in SERVICES[service].get("ports", []):
        host, _, container = str(spec).rpartition(":")
        out.append((int(host), int(container)))
    return out


def test_every_service_the_issue_asks_for_is_defined() -> None:
    for name in ("kafka", "redis", "worker", "alerts", "ticker", "simulator", "prometheus", "grafana"):
        assert name in SERVICES, name


def test_kafka_is_the_official_image_in_kraft_mode() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]


def test_redis_persists_with_append_only_file_on_a_volume() -> None:
    redis = SERVICES["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_two_workers_and_an_optional_simulator() -> None:
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    # replicas cannot share a host port; Prometheus reaches each through Docker DNS
    assert "ports" not in SERVICES["worker"]
    assert SERVICES["simulator"]["profiles"] == ["simulator"]
    assert all("profiles" not in SERVICES[n] for n in SERVICES if n != "simulator")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_have_restart_policy_and_health_check(name: str) -> None:
    svc = SERVICES[name]
    if name in ONE_SHOT:
        assert svc.get("restart") == "no"
        return
    assert svc.get("restart") in ("unless-stopped", "always", "on-failure")
    if name == "ticker":
        return  # no port to probe; a crash is caught by the restart policy and the watermark rule
    test = svc["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_names_real_services(name: str) -> None:
    for dep in SERVICES[name].get("depends_on", {}):
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mounted_file_and_named_volume_exists(name: str) -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for spec in SERVICES[name].get("volumes", []):
        source = str(spec).split(":")[0]
        if source.startswith((".", "/")):
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
        else:
            assert source in declared, f"{name}: named volume {source} is not declared"


def test_the_image_builds_from_this_repository() -> None:
    for name in LOGIWATCH_SERVICES:
        build = SERVICES[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["logiwatch"\]', dockerfile, re.M)
    for copied in re.findall(r"^COPY (?!--)(\S+)", dockerfile, re.M):
        assert (ROOT / copied).exists(), copied


def test_the_image_copies_every_folder_the_package_is_built_from() -> None:
    # `pip wheel .` in the image fails on a package-dir folder it was not given.
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = set(setup["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"


def test_dockerignore_keeps_secrets_and_the_venv_out_but_not_the_sources() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")}
    assert {".env", ".venv", ".git"} <= ignored
    assert not ignored & {"app", "detectors", "streams", "alerts", "pyproject.toml", "README.md"}


def test_host_ports_are_valid_and_unique() -> None:
    seen: dict[int, str] = {}
    for name in SERVICES:
        for host, container in port_pairs(name):
            assert 0 < host < 65536 and 0 < container < 65536
            assert host not in seen, f"host port {host} used by {seen.get(host)} and {name}"
            seen[host] = name


@pytest.mark.parametrize("name", LOGIWATCH_SERVICES)
def test_logiwatch_variables_name_real_settings(name: str) -> None:
    for key in env_of(name):
        if not key.startswith("LOGIWATCH_"):
            continue
        parts = key.removeprefix("LOGIWATCH_").lower().split("__")
        # A misspelt top-level variable is silently ignored by pydantic-settings: check it here.
        assert key == "LOGIWATCH_CONFIG" or setting_path_exists(Settings, parts), f"{name}: {key} is not a setting"


@pytest.mark.parametrize("name", LOGIWATCH_SERVICES)
def test_each_service_environment_builds_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(name, monkeypatch)
    host, _, port = settings.kafka.bootstrap.rpartition(":")
    assert host in SERVICES and port == "9092", "bootstrap must be the kafka service's internal listener"
    assert "INTERNAL://kafka:9092" in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert settings.redis.url.startswith("redis://redis:6379/")


def test_misspelt_setting_is_caught_by_the_name_check() -> None:
    # guards the check above: a typo must not pass as a setting
    assert not setting_path_exists(Settings, ["kafka", "bootstrapp"])
    assert not setting_path_exists(Settings, ["worker", "metrics_port", "x"])
    assert setting_path_exists(Settings, ["alerts", "api_token"])


@pytest.mark.parametrize("name", LOGIWATCH_SERVICES)
def test_every_command_is_a_real_logiwatch_subcommand(name: str) -> None:
    command = SERVICES[name]["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on an unknown command or option
        pytest.fail(f"{name}: `logiwatch {' '.join(argv)}` is not accepted by the CLI (exit {exc.code})")
    assert args.command == argv[0]


def test_api_and_metrics_ports_match_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    alerts = settings_for("alerts", monkeypatch)
    assert alerts.alerts.api_host == "0.0.0.0", "the API must listen beyond the container's loopback"
    assert (alerts.alerts.api_port, alerts.alerts.api_port) in port_pairs("alerts")
    assert alerts.alerts.api_token.get_secret_value() == REQUIRED_PLACEHOLDER, "the token must be required, not defaulted"
    worker = settings_for("worker", monkeypatch)
    assert worker.worker.metrics_host == "0.0.0.0", "Prometheus scrapes each worker from another container"
    assert str(worker.worker.metrics_port) in [str(p) for p in SERVICES["worker"]["expose"]]
    assert str(worker.worker.metrics_port) in " ".join(SERVICES["worker"]["healthcheck"]["test"])
    assert f":{alerts.alerts.api_port}/healthz" in " ".join(SERVICES["alerts"]["healthcheck"]["test"])


def test_prometheus_scrapes_the_ports_the_services_listen_on(monkeypatch: pytest.MonkeyPatch) -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    worker = settings_for("worker", monkeypatch)
    [dns] = jobs["logiwatch-worker"]["dns_sd_configs"]
    assert dns["names"] == ["worker"] and dns["port"] == worker.worker.metrics_port
    alerts = settings_for("alerts", monkeypatch)
    [static] = jobs["logiwatch-alerts"]["static_configs"]
    # the alert service serves /metrics on its API port
    assert static["targets"] == [f"alerts:{alerts.alerts.api_port}"] and static_path(jobs) == "/metrics"
    ingest = settings_for("ingest", monkeypatch)
    [static] = jobs["logiwatch-ingest"]["static_configs"]
    assert static["targets"] == [f"ingest:{ingest.ingest.port}"] and ingest.ingest.host == "0.0.0.0"
    assert (ingest.ingest.port, ingest.ingest.port) in port_pairs("ingest")
    mounts = SERVICES["prometheus"]["volumes"]
    for rule_file in prom["rule_files"]:
        assert f"./deploy/prometheus/{rule_file}:/etc/prometheus/{rule_file}:ro" in mounts


def static_path(jobs: dict[str, Any]) -> str:
    return str(jobs["logiwatch-alerts"].get("metrics_path", "/metrics"))


def test_grafana_datasource_points_at_the_prometheus_service() -> None:
    ds = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = ds["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert (9090, 9090) in port_pairs("prometheus")
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in SERVICES["grafana"]["volumes"]


def test_kafka_init_creates_exactly_the_configured_topics() -> None:
    script = SERVICES["kafka-init"]["command"][0]
    created = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"--topic (\S+) --partitions (\d+)", script)
    }
    t = TopicsConfig()
    assert created == {
        t.events: t.events_partitions,
        t.alerts: t.alerts_partitions,
        t.liability: t.liability_partitions,
        t.dlq: t.dlq_partitions,
        t.shipments: t.events_partitions,  # contract v2: co-partitioned with the events
    }


def test_routes_file_mounted_into_the_alert_service_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of("alerts")
    settings = settings_for("alerts", monkeypatch)
    mounted = {
        str(v).split(":")[1]: str(v).split(":")[0] for v in SERVICES["alerts"]["volumes"] if str(v).startswith(".")
    }
    source = ROOT / mounted[str(settings.alerts.routes_file)]
    for key, value in env.items():
        if not key.startswith("LOGIWATCH_"):
            monkeypatch.setenv(key, value)  # the receivers' secret_env variables
    config = load_routes(source)
    assert config.receivers and config.routes


def test_every_setting_is_documented_in_the_operations_guide() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()

    def names(model: type[BaseModel], prefix: str) -> list[str]:
        out: list[str] = []
        for field_name, f in model.model_fields.items():
            sub = f.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out += names(sub, f"{prefix}{field_name.upper()}__")
            else:
                out.append(f"{prefix}{field_name.upper()}")
        return out

    missing = [n for n in names(Settings, "LOGIWATCH_") if f"`{n}`" not in doc]
    assert not missing, f"add to docs/operations.md: {missing}"
