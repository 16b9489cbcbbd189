"""Phases ``quix_bare`` and ``quix_stateful``: the peer a user would pick.

quixstreams is never a dependency of logiwatch: :func:`ensure_quix_python`
makes the bench's own virtualenv (``.venv-quix`` by default) on first use and
``pip install``\\ s quixstreams from PyPI into it. When that fails the phases
are skipped with the reason (:class:`~logiwatch.bench.figures.PhaseSkipped`),
never given a number. Each app (:mod:`logiwatch.bench.quix_app`, run as a
file by that virtualenv's Python) reads the same events topic as the raw
consumers, in a fresh group and with a fresh state directory (a restart that
keeps quixstreams' local state fails on Tansu's wrong end offsets). It is
clocked as the worker is: from its first record (the time the app writes)
to the moment the group's committed offsets cover every event, or the phase
budget, when the rate covers the events committed by then.

quixstreams reads the input topic's ``retention.ms`` and ``retention.bytes``
back and Tansu describes only configs set at creation: the runner creates
the events topic with :func:`create_events_topic`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logiwatch import stack
from logiwatch.bench.figures import BATCH, PROGRESS_TIMEOUT_S, PhaseSkipped, rate
from logiwatch.bench.processes import spawn
from logiwatch.errors import LogiwatchError

#: What the bench installs into its own virtualenv (the version the issue measured, same major).
QUIX_REQUIREMENT = "quixstreams>=3.28,<4"

#: Configs the events topic is created with, so quixstreams can read them back.
TOPIC_CONFIGS = {"retention.ms": "-1", "retention.bytes": "-1"}

INSTALL_TIMEOUT_S = 900.0

APP_SCRIPT = Path(__file__).with_name("quix_app.py")


def create_events_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Create the bench's events topic with :data:`TOPIC_CONFIGS` (every phase reads it)."""

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs=TOPIC_CONFIGS)], timeout_ms=int(timeout * 1000)
        )
    finally:
        admin.close()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _quix_version(python: Path) -> str | None:
    if not python.is_file():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import quixstreams; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return probe.stdout.strip() if probe.returncode == 0 and probe.stdout.strip() else None


def ensure_quix_python(venv: Path, log: Callable[[str], None]) -> tuple[Path, str]:
    """The bench virtualenv's Python and its quixstreams version, made on first use.

    Raises :class:`PhaseSkipped` with the reason when the virtualenv cannot
    be made or quixstreams cannot be installed into it.
    """

    python = venv / "bin" / "python"
    version = _quix_version(python)
    if version:
        return python, version
    log(f"installing {QUIX_REQUIREMENT} into {venv} (once; the bench's own virtualenv)")
    steps = []
    if not python.is_file():
        steps.append(("create the virtualenv", [sys.executable, "-m", "venv", str(venv)]))
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", QUIX_REQUIREMENT]
    steps.append((f"pip install {QUIX_REQUIREMENT}", pip))
    for what, cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PhaseSkipped(f"could not {what} in {venv}: {exc}") from None
        if done.returncode != 0:
            reason = _last_line(done.stderr or done.stdout)
            raise PhaseSkipped(f"could not {what} in {venv}: {reason}")
    version = _quix_version(python)
    if not version:
        raise PhaseSkipped(f"quixstreams does not import in {venv} after installing it")
    return python, version


@dataclass(frozen=True)
class QuixStats:
    """What a quix app wrote at shutdown (see :mod:`logiwatch.bench.quix_app`)."""

    mode: str
    count: int
    first_s: float
    new_keys: int | None = None
    out_of_order: int | None = None


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LogiwatchError(f"quix app output: {key!r} must be a non-negative integer, got {value!r}")
    return value


def _wall_time(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise LogiwatchError(f"quix app output: {key!r} must be a positive wall time, got {value!r}")
    return float(value)


def parse_first(text: str) -> float:
    """The wall time of the first record from the app's ``--first`` file."""

    try:
        data = json.loads(text)
    except ValueError:
        raise LogiwatchError(f"quix app first-record file is not JSON: {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise LogiwatchError(f"quix app first-record file is not an object: {text[:80]!r}")
    return _wall_time(data, "first_s")


def parse_stats(text: str, mode: str) -> QuixStats:
    """Parse and check the app's ``--out`` file for ``mode``; a clear error for anything else."""

    try:
        data = json.loads(text)
    except ValueError:
        raise LogiwatchError(f"quix app output is not JSON: {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise LogiwatchError(f"quix app output is not an object: {text[:80]!r}")
    if data.get("mode") != mode:
        raise LogiwatchError(f"quix app output is for mode {data.get('mode')!r}, expected {mode!r}")
    count, first_s = _count(data, "count"), _wall_time(data, "first_s")
    if mode == "stateful":
        return QuixStats(mode, count, first_s, _count(data, "new_keys"), _count(data, "out_of_order"))
    return QuixStats(mode, count, first_s)


def check_run(stats: QuixStats, committed: int, expected: int, parcels: int) -> None:
    """Fail unless the app handled what its group committed and, having read every event, kept one state per parcel."""

    if committed > expected:
        raise LogiwatchError(f"quix {stats.mode} app committed {committed:,} offsets, more than the {expected:,} produced")
    if stats.count < committed:
        raise LogiwatchError(f"quix {stats.mode} app handled {stats.count:,} records but committed {committed:,}")
    if stats.mode == "stateful" and stats.count == expected and stats.new_keys != parcels:
        raise LogiwatchError(
            f"quix stateful app found {stats.new_keys} keys without state in {expected:,} events of {parcels:,} parcels"
        )


@dataclass(frozen=True)
class QuixTarget:
    """Where a quix app reads and how the run is bounded (the runner's shared pieces)."""

    bootstrap: str
    topic: str
    partitions: int
    expected: int  # records in the events topic (counted when producing)
    parcels: int
    workdir: Path
    session_ms: int
    phase_seconds: float
    cleanup: list[Callable[[], None]]


def _delete_changelogs(bootstrap: str, group: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        names = [n for n in admin.list_topics() if group in n]
    finally:
        admin.close()
    stack.delete_topics(bootstrap, names)


def quix_eps(target: QuixTarget, python: Path, mode: str, poll_s: float = 0.1) -> dict[str, Any]:
    """Run one quix app over the events; ``{quix_<mode>_eps, quix_<mode>_events, ...}``."""

    from kafka import KafkaConsumer, TopicPartition

    group = f"bench-quix-{mode}-{uuid.uuid4().hex[:8]}"
    first, out = target.workdir / f"{group}.first.json", target.workdir / f"{group}.json"
    cmd = [str(python), str(APP_SCRIPT), "--mode", mode, "--bootstrap", target.bootstrap]
    cmd += ["--topic", target.topic, "--group", group, "--state-dir", str(target.workdir / f"state-{group}")]
    cmd += ["--first", str(first), "--out", str(out), "--session-timeout-ms", str(target.session_ms)]
    cmd += ["--commit-every", str(BATCH)]
    target.cleanup.append(lambda: _delete_changelogs(target.bootstrap, group))
    reader = KafkaConsumer(bootstrap_servers=target.bootstrap, group_id=group, enable_auto_commit=False)
    tps = [TopicPartition(target.topic, p) for p in range(target.partitions)]
    proc = spawn(f"quix-{mode}", cmd, target.workdir)
    try:
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while not first.exists():
            proc.check_alive()
            if time.monotonic() > deadline:
                raise LogiwatchError(f"quix {mode} app read no record in time; see {proc.log_path}")
            time.sleep(poll_s)
        t0 = parse_first(first.read_text())
        last_progress, last_committed = time.monotonic(), -1
        while True:
            proc.check_alive()
            committed = sum(reader.committed(tp) or 0 for tp in tps)
            t_end = time.time()
            if committed >= target.expected or t_end - t0 >= target.phase_seconds:
                break
            if committed != last_committed:
                last_committed, last_progress = committed, time.monotonic()
            elif time.monotonic() - last_progress > PROGRESS_TIMEOUT_S:
                raise LogiwatchError(
                    f"quix {mode} app stalled: {committed:,}/{target.expected:,} committed; see {proc.log_path}"
                )
            time.sleep(poll_s)
    finally:
        proc.stop()
        reader.close()
    if not out.exists():
        raise LogiwatchError(f"quix {mode} app wrote no counts at shutdown; see {proc.log_path}")
    stats = parse_stats(out.read_text(), mode)
    check_run(stats, committed, target.expected, target.parcels)
    if committed < target.expected // 10:
        raise LogiwatchError(f"quix {mode} app committed only {committed:,} events in the clock: use more --events")
    figures: dict[str, Any] = {f"quix_{mode}_eps": rate(committed, t_end - t0), f"quix_{mode}_events": committed}
    if stats.out_of_order is not None:
        figures["quix_stateful_out_of_order"] = stats.out_of_order
    return figures
