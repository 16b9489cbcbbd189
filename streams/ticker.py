"""Clock ticks: advance every partition's watermark when the stream is quiet.

Detectors reason in event time, so a parcel that goes silent would never
time out if the watermark only moved with scans. The ticker writes a
:class:`~logiwatch.detectors.model.Tick` record (value ``encode_tick``,
header ``logiwatch-kind: tick``, no key) into EVERY partition of the events
topic on a fixed cadence. Ticks are ordinary records: a replay of the topic
replays them, so replays give the same alerts as the live run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaProducer

from logiwatch.detectors.codec import encode_tick
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE, Tick
from logiwatch.errors import LogiwatchError

log = logging.getLogger(__name__)


class Ticker:
    """Writes ticks into all partitions of one topic through one producer."""

    def __init__(self, bootstrap: str, topic: str, *, clock_ms: Callable[[], int] | None = None) -> None:
        self.topic = topic
        self.check_topic(bootstrap)
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        # No auto-creation: ticking a misspelt topic must fail, not invent it.
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            linger_ms=0,
            client_id="logiwatch-ticker",
            allow_auto_create_topics=False,
        )

    def check_topic(self, bootstrap: str) -> None:
        """Fail with one line if the topic does not exist (some brokers create on metadata)."""

        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="logiwatch-ticker-admin", bootstrap_timeout_ms=10_000
        )
        try:
            if self.topic not in set(admin.list_topics()):
                raise LogiwatchError(
                    f"topic {self.topic!r} does not exist; create it first (logiwatch stack up)"
                )
        finally:
            admin.close()

    def partitions(self) -> list[int]:
        parts = self.producer.partitions_for(self.topic)
        if not parts:
            raise LogiwatchError(f"topic {self.topic!r} has no partitions (does it exist?)")
        return sorted(parts)

    def tick(self) -> Tick:
        """Send one tick (stamped now) to every partition and wait for the acks."""

        tick = Tick(tick_time=self.clock_ms())
        value = encode_tick(tick)
        futures = [
            self.producer.send(
                self.topic, value=value, partition=p, headers=[(TICK_HEADER, TICK_HEADER_VALUE)]
            )
            for p in self.partitions()
        ]
        self.producer.flush()
        for fut in futures:
            fut.get(timeout=30)
        return tick

    def run(self, interval_s: float, stop: threading.Event, max_ticks: int | None = None) -> int:
        """Tick every ``interval_s`` (on a fixed cadence, not drifting) until ``stop`` is set."""

        sent = 0
        next_at = time.monotonic()
        while not stop.is_set() and (max_ticks is None or sent < max_ticks):
            try:
                self.tick()
                sent += 1
            except LogiwatchError:
                raise
            except Exception as exc:  # broker hiccup: skip this tick, keep the cadence
                log.warning("tick failed: %s", exc)
            next_at += interval_s
            stop.wait(max(0.0, next_at - time.monotonic()))
        return sent

    def close(self) -> None:
        self.producer.close()
