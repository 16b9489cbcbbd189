"""Test support (no tests here): run ``logiwatch worker`` as a real subprocess.

Settings reach the subprocess as ``LOGIWATCH_*`` environment variables, the
way an operator would configure it; logs go to a file under the test's
tmp_path so a failure can show them. Also: Kafka helpers that produce raw
records and read a topic back completely.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from logiwatch.config import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``LOGIWATCH_SECTION__KEY=value`` variables."""

    env: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}__{key.upper()}" if prefix else key.upper(), sub)
        elif value is not None:
            env[f"LOGIWATCH_{prefix}"] = str(value)

    walk("", settings.model_dump(mode="json", exclude_defaults=True))
    return env


class WorkerProcess:
    """One ``logiwatch worker`` subprocess."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIWATCH_")}
        env.update(settings_env(settings))
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logiwatch.cli", "--log-level", os.environ.get("LW_TEST_WORKER_LOG", "INFO"), "worker", "--metrics-port", "0"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        """The log's last 6,000 characters: for a failure message."""

        return self.full_log()[-6000:]

    def full_log(self) -> str:
        """The whole log: for searching it (a tail loses early lines once the log grows)."""

        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


RawRecord = tuple[bytes | None, bytes, int | None, list[tuple[str, bytes]] | None]


def produce_raw(bootstrap: str, topic: str, records: Iterable[RawRecord]) -> list[tuple[int, int]]:
    """Send (key, value, partition, headers) records; returns each one's (partition, offset)."""

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, max_request_size=32 * 1024 * 1024
    )
    try:
        futures = [
            producer.send(topic, value=value, key=key, partition=partition, headers=headers or [])
            for key, value, partition, headers in records
        ]
        producer.flush()
        out = []
        for fut in futures:
            meta = fut.get(timeout=30)
            out.append((meta.partition, meta.offset))
        return out
    finally:
        producer.close()


class TopicReader:
    """Reads a whole topic (all partitions) from the beginning, incrementally."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list[Any] = []

    def poll(self) -> list[Any]:
        batch = self.consumer.poll(timeout_ms=200, max_records=10_000)
        for recs in batch.values():
            self.records.extend(recs)
        return self.records

    def covers(self, expected: Iterable[bytes]) -> bool:
        """Poll once; True when every value in ``expected`` has been read.

        A count of records would not do after a crash: re-emitted duplicates reach the
        expected count before the last distinct alerts (the hub stage's come last) arrive.
        """

        self.poll()
        return set(expected) <= {r.value for r in self.records}

    def close(self) -> None:
        self.consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> Mapping[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close()


def produce_records(bootstrap: str, topic: str, records: Iterable[Any], partitions: int) -> int:
    """Send scan events keyed by waybill and each tick to every partition, in order."""

    from logiwatch.detectors.codec import encode_event, encode_tick
    from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE, Tick

    out: list[RawRecord] = []
    for rec in records:
        if isinstance(rec, Tick):
            value = encode_tick(rec)
            out.extend((None, value, p, [(TICK_HEADER, TICK_HEADER_VALUE)]) for p in range(partitions))
        else:
            out.append((rec.waybill_id.encode(), encode_event(rec), None, None))
    return len(produce_raw(bootstrap, topic, out))


def end_offsets_of(records: Iterable[Any], partitions: int) -> dict[int, int]:
    """Per partition, how many records ``produce_records`` writes for ``records``."""

    from logiwatch.detectors.model import Tick
    from logiwatch.detectors.partitioning import partition_for

    ends = dict.fromkeys(range(partitions), 0)
    for rec in records:
        if isinstance(rec, Tick):
            for p in ends:
                ends[p] += 1
        else:
            ends[partition_for(rec.waybill_id, partitions)] += 1
    return ends
