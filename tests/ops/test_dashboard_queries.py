"""Every Grafana panel query is valid PromQL and returns data from a real Prometheus.

First, offline: every ``expr`` of both dashboards (Grafana macros replaced) is
parsed by ``promtool check rules`` as a recording rule. Then live: the test
runs the real processes on the session's Tansu broker and Redis with uuid
topics, group names and key prefix (``logiwatch worker``, ``logiwatch alerts
serve`` with two local webhook receivers, one flaky and one broken,
``logiwatch ingest serve`` fed signed AfterShip-style pushes (some with a bad
signature), and ``logiwatch simulate`` into Kafka with malformed records and
clock ticks),
starts its own ``prometheus`` on a free loopback port scraping the worker's
and the alert service's ``/metrics`` every second, and evaluates each panel
query through ``/api/v1/query``. A query that errors, or still has no series
when the time runs out, fails the test with the processes' log tails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from logiwatch import stack
from tests.helpers import wait_until
from tests.ops.conftest import DEPLOY

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
#: What Grafana would put in for its macros at a 1 s scrape interval.
MACROS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "15m"}
LOGIWATCH = str(Path(sys.executable).with_name("logiwatch"))


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref_id}]"


def panel_queries() -> list[PanelQuery]:
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        panels = [p for top in d["panels"] for p in (top, *top.get("panels", []))]
        for p in panels:
            for t in p.get("targets", []):
                expr = t["expr"]
                for macro, value in MACROS.items():
                    expr = expr.replace(macro, value)
                out.append(PanelQuery(path.stem, p["title"], t["refId"], expr))
    return out


QUERIES = panel_queries()


def test_every_panel_query_parses_as_promql(promtool: str, tmp_path: Path) -> None:
    assert QUERIES, "no panel queries found"
    rules = {
        "groups": [
            {"name": "panels", "rules": [{"record": f"panel:q{i}", "expr": q.expr} for i, q in enumerate(QUERIES)]}
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- live processes


class _Receiver(BaseHTTPRequestHandler):
    """``/flaky`` fails every other request with 503 (retries); ``/broken`` always 500 (dead letters)."""

    counts: dict[str, int] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            n = self.counts[self.path] = self.counts.get(self.path, 0) + 1
        status = 500 if self.path == "/broken" else (503 if n % 2 else 200)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


@dataclass
class Procs:
    logs: dict[str, Path] = field(default_factory=dict)
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
        log = log_dir / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as fh:
            proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.running[name] = proc
        return proc

    def tails(self, lines: int = 15) -> str:
        out = []
        for name, log in self.logs.items():
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            out.append(f"--- {name} (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def stop_all(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.running.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@dataclass(frozen=True)
class Live:
    prometheus_url: str
    procs: Procs


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@pytest.fixture(scope="module")
def live(
    kafka_bootstrap: str, redis_url: str, prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("ops-live")
    run = uuid4().hex[:12]
    topics = {
        "events": (f"ops-events-{run}", 4),
        "alerts": (f"ops-alerts-{run}", 2),
        "liability": (f"ops-liability-{run}", 1),
        "dlq": (f"ops-dlq-{run}", 1),
    }
    stack.create_topics(kafka_bootstrap, dict(topics.values()))
    prefix = f"lwtest:{run}:"
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}"
    routes = tmp / "routes.toml"
    routes.write_text(
        "\n".join(
            [
                "[[receivers]]",
                'name = "flaky"',
                f'url = "{hook}/flaky"',
                f'secret = "{uuid4().hex}"',
                "allow_private_networks = true",
                "retry_schedule_s = [0.2, 0.2, 0.2, 0.2]",
                "rate_per_s = 200",
                "",
                "[[receivers]]",
                'name = "broken"',
                f'url = "{hook}/broken"',
                f'secret = "{uuid4().hex}"',
                "allow_private_networks = true",
                "retry_schedule_s = [0.1]",
                "rate_per_s = 200",
                "",
                "[[routes]]",
                'receiver = "flaky"',
                "",
                "[[routes]]",
                'receiver = "broken"',
                "",
            ]
        )
    )
    worker_port, api_port, prom_port = stack.free_port(), stack.free_port(), stack.free_port()
    ingest_port, ingest_secret = stack.free_port(), uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_")}
    env.update(
        {
            "LOGIWATCH_KAFKA__BOOTSTRAP": kafka_bootstrap,
            "LOGIWATCH_KAFKA__TOPICS__EVENTS": topics["events"][0],
            "LOGIWATCH_KAFKA__TOPICS__EVENTS_PARTITIONS": str(topics["events"][1]),
            "LOGIWATCH_KAFKA__TOPICS__ALERTS": topics["alerts"][0],
            "LOGIWATCH_KAFKA__TOPICS__ALERTS_PARTITIONS": str(topics["alerts"][1]),
            "LOGIWATCH_KAFKA__TOPICS__LIABILITY": topics["liability"][0],
            "LOGIWATCH_KAFKA__TOPICS__DLQ": topics["dlq"][0],
            "LOGIWATCH_KAFKA__WORKER_GROUP": f"ops-worker-{run}",
            "LOGIWATCH_KAFKA__ALERTS_GROUP": f"ops-alerts-{run}",
            "LOGIWATCH_REDIS__URL": redis_url,
            "LOGIWATCH_REDIS__KEY_PREFIX": prefix,
            "LOGIWATCH_STACK__STATE_DIR": str(tmp / "state"),
            "LOGIWATCH_WORKER__METRICS_PORT": str(worker_port),
            # the simulated calendar may lie far in the past
            "LOGIWATCH_WORKER__MAX_EVENT_PAST_MS": str(20 * 365 * 24 * 3600 * 1000),
            "LOGIWATCH_ALERTS__API_HOST": "127.0.0.1",
            "LOGIWATCH_ALERTS__API_PORT": str(api_port),
            "LOGIWATCH_ALERTS__API_TOKEN": uuid4().hex,
            "LOGIWATCH_ALERTS__ROUTES_FILE": str(routes),
            "LOGIWATCH_LOG_LEVEL": "INFO",
            "LOGIWATCH_INGEST__PORT": str(ingest_port),
            "LOGIWATCH_INGEST__AFTERSHIP_SECRET": ingest_secret,
        }
    )
    prom_cfg = tmp / "prometheus.yml"
    prom_cfg.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "logiwatch-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
                    {
                        "job_name": "logiwatch-alerts",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                    },
                    {
                        "job_name": "logiwatch-ingest",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [f"127.0.0.1:{ingest_port}"]}],
                    },
                ],
            }
        )
    )
    procs = Procs()
    try:
        procs.start("worker", [LOGIWATCH, "worker"], env, tmp)
        procs.start("alerts", [LOGIWATCH, "alerts", "serve"], env, tmp)
        procs.start("ingest", [LOGIWATCH, "ingest", "serve"], env, tmp)
        procs.start(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            env,
            tmp,
        )
        prom = f"http://127.0.0.1:{prom_port}"

        def ready() -> bool:
            for name, proc in procs.running.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}\n{procs.tails()}")
            return (
                http_get(f"{prom}/-/ready")[0] == 200
                and http_get(f"http://127.0.0.1:{worker_port}/metrics")[0] == 200
                and http_get(f"http://127.0.0.1:{api_port}/metrics")[0] == 200
                and http_get(f"http://127.0.0.1:{ingest_port}/healthz")[0] == 200
            )

        wait_until(ready, timeout=60, interval=0.2, what="worker, alert service and prometheus answering")
        procs.start(
            "simulate",
            [
                LOGIWATCH,
                "simulate",
                "--bootstrap",
                kafka_bootstrap,
                "--topic",
                topics["events"][0],
                "--parcels",
                "1500",
                "--seed",
                "5",
                "--ticks-every-s",
                "300",
                "--malformed",
                "25",
            ],
            env,
            tmp,
        )
        stop_pushing = threading.Event()
        pusher = threading.Thread(
            target=_push_feed, args=(f"http://127.0.0.1:{ingest_port}", ingest_secret, stop_pushing), daemon=True
        )
        pusher.start()
        yield Live(prom, procs)
    finally:
        if "stop_pushing" in locals():
            stop_pushing.set()
            pusher.join(timeout=10)
        procs.stop_all()
        receiver.shutdown()
        receiver.server_close()
        stack.delete_topics(kafka_bootstrap, [name for name, _ in topics.values()])
        stack.delete_redis_prefix(redis_url, prefix)
        shutil.rmtree(tmp / "tsdb", ignore_errors=True)


def _push_feed(base: str, secret: str, stop: threading.Event) -> None:
    """Signed AfterShip-style pushes (history resends, one with a bad signature) until stopped."""

    from tests import feeds as F

    n = 0
    while not stop.is_set():
        wb = f"OPS-{n // 3}"
        history = (F.AS_FIRST + F.AS_MORE)[: 2 + n % 3]
        body, headers = F.aftership(wb, history, secret=secret if n % 7 else "wrong")
        req = urllib.request.Request(f"{base}/v1/feeds/aftership", data=body, headers=headers, method="POST")
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except (urllib.error.HTTPError, OSError):
            pass  # 401 for the wrong signature; the receiver's counters say the rest
        n += 1
        stop.wait(0.2)


def instant(prom: str, expr: str) -> dict[str, Any]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url, timeout=10)
    data: dict[str, Any] = json.loads(body) if body else {"status": "error", "error": f"HTTP {status}"}
    return data


def test_every_panel_query_returns_data_from_the_live_processes(live: Live) -> None:
    pending = {str(q): q for q in QUERIES}
    errors: dict[str, str] = {}

    def all_answered() -> bool:
        for key, q in list(pending.items()):
            answer = instant(live.prometheus_url, q.expr)
            if answer.get("status") != "success":
                # an invalid query never becomes valid: stop waiting for it
                errors[key] = str(answer.get("error"))
                del pending[key]
            elif answer["data"]["result"]:
                del pending[key]
        return not pending

    try:
        wait_until(all_answered, timeout=90, interval=2.0, what="every panel query to return series")
    except AssertionError:
        pass
    problems = [f"INVALID {k}: {v}" for k, v in errors.items()]
    problems += [f"EMPTY {k}: {q.expr}" for k, q in pending.items()]
    assert not problems, "\n".join(problems) + "\n" + live.procs.tails()


def test_prometheus_sees_every_service_up(live: Live) -> None:
    answer = instant(live.prometheus_url, 'up{job=~"logiwatch-.*"} == 1')
    jobs = {r["metric"]["job"] for r in answer["data"]["result"]}
    assert jobs == {"logiwatch-worker", "logiwatch-alerts", "logiwatch-ingest"}, live.procs.tails()
