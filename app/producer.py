"""Producing scan events (and clock ticks) to the events topic with kafka-python.

Used by ``logiwatch simulate`` (to Kafka) and ``logiwatch replay``. Events go
keyed by ``waybill_id`` so a parcel's scans share a partition and keep their
order; the value is the contract's JSON. Optional clock ticks
(:func:`logiwatch.detectors.runner.interleave_ticks`) are written to *every*
partition at their position in the stream, marked with the
``logiwatch-kind: tick`` header, so each partition's watermark advances the
same way as in a backtest. Pacing is either a rate (events per second) or a
speed-up of event time (``speed=3600``: one simulated hour per second); the
pacing arithmetic is the pure :class:`Pacer`. Producer batching
(``linger_ms``, ``batch_size``) is what makes the throughput, and the
producer is flushed once at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from logiwatch.detectors.codec import encode_event, encode_tick
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE, ScanEvent, Tick
from logiwatch.errors import ConfigError, LogiwatchError

log = logging.getLogger(__name__)

#: Without a sequence length, one malformed raw message is mixed in after this many events.
RAW_EVERY = 1000


@dataclass(frozen=True)
class ProduceStats:
    events: int
    ticks: int  # tick records written (one per partition per tick)
    raw: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Pacer:
    """When the next record may be sent: by rate, by event-time speed-up, or at once.

    ``delay_s`` is pure (the caller passes its clock). With ``speed`` the
    pace follows the running maximum event time, so a record that arrives out
    of order never makes the producer wait or go back in time.

    >>> p = Pacer(rate=100.0)
    >>> p.delay_s(sent=50, event_time_ms=0, elapsed_s=0.2)
    0.3
    >>> p = Pacer(speed=3600.0)
    >>> p.delay_s(sent=0, event_time_ms=0, elapsed_s=0.0)
    0.0
    >>> round(p.delay_s(sent=1, event_time_ms=7_200_000, elapsed_s=0.5), 3)  # 2 simulated hours
    1.5
    """

    def __init__(self, rate: float | None = None, speed: float | None = None) -> None:
        if rate is not None and rate <= 0:
            raise ConfigError(f"--rate must be positive, got {rate}")
        if speed is not None and speed <= 0:
            raise ConfigError(f"--speed must be positive, got {speed}")
        if rate is not None and speed is not None:
            raise ConfigError("give either --rate or --speed, not both")
        self.rate = rate
        self.speed = speed
        self._first_ms: int | None = None
        self._max_ms = 0

    def delay_s(self, sent: int, event_time_ms: int, elapsed_s: float) -> float:
        if self.rate is not None:
            return max(0.0, sent / self.rate - elapsed_s)
        if self.speed is not None:
            if self._first_ms is None:
                self._first_ms = self._max_ms = event_time_ms
            self._max_ms = max(self._max_ms, event_time_ms)
            return max(0.0, (self._max_ms - self._first_ms) / 1000.0 / self.speed - elapsed_s)
        return 0.0


def raw_positions(n_events: int | None, n_raw: int) -> Iterator[int]:
    """After how many events each raw message goes: spread evenly when the length is known.

    >>> list(raw_positions(10, 4))
    [2, 4, 6, 8]
    >>> list(raw_positions(None, 2))
    [1000, 2000]
    """

    if n_raw <= 0:
        return iter(())
    if n_events is None:
        return iter(RAW_EVERY * (k + 1) for k in range(n_raw))
    step = max(1, n_events // (n_raw + 1))
    return iter(min(step * (k + 1), n_events) for k in range(n_raw))


def final_tick_for(last_event_ms: int, *, event_time_only: bool, max_future_ms: int, now_ms: int | None = None) -> int:
    """Where our own tools put the final clock tick so that the worker accepts it.

    Event-time-only workers (replays) take the backtest's: ``FINAL_HORIZON_MS`` past the last
    event, so every pending deadline fires and the Kafka path gives the backtest's alerts. A
    live worker dead-letters ticks beyond its clock-skew bound, so there the tick stops a
    minute inside it (deadlines after it fire as the ticker's clock reaches them).
    """

    from logiwatch.detectors.runner import FINAL_HORIZON_MS

    end = last_event_ms + FINAL_HORIZON_MS
    if event_time_only:
        return end
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return max(last_event_ms, min(end, now + max_future_ms - 60_000))


def _records(
    events: Iterable[ScanEvent], tick_every_ms: int | None, final_tick_ms: int | None
) -> Iterable[ScanEvent | Tick]:
    if tick_every_ms is None:
        return events
    # the runner owns tick placement, so Kafka and the backtest see the same clock
    from logiwatch.detectors.runner import interleave_ticks

    if final_tick_ms is not None:
        return interleave_ticks(events, tick_every_ms, final_tick_ms=final_tick_ms)
    return interleave_ticks(events, tick_every_ms)


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A throughput-tuned kafka-python producer, or ``LogiwatchError`` in one line."""

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "linger_ms": 20,  # fill batches: per-record requests would cap throughput
        "batch_size": 256 * 1024,
        "acks": "all",
        "max_block_ms": 30_000,
        "bootstrap_timeout_ms": 15_000,  # fail in one line soon when the broker is not up
        "client_id": "logiwatch-producer",
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except KafkaError as exc:
        raise LogiwatchError(f"cannot connect to Kafka at {bootstrap}: {exc}; is the broker up (logiwatch stack up)?") from None


def produce_events(
    bootstrap: str,
    topic: str,
    records: Iterable[ScanEvent],
    *,
    rate: float | None = None,
    speed: float | None = None,
    tick_every_ms: int | None = None,
    num_partitions: int | None = None,
    extra_raw: Sequence[bytes] = (),
    final_tick_ms: int | None = None,
    progress: Callable[[int], None] | None = None,
    producer: Any = None,
) -> ProduceStats:
    """Send ``records`` (in the given order) keyed by waybill; optional ticks and raw messages.

    ``extra_raw`` are undecodable messages for the dead-letter path, spread
    through the stream without a key. ``num_partitions`` defaults to the
    topic's partition count from the broker's metadata. ``progress`` is
    called with the number of events sent every 10,000 events.
    """

    from kafka.errors import KafkaError

    pacer = Pacer(rate, speed)
    own = producer is None
    prod = make_producer(bootstrap) if own else producer
    failures: list[BaseException] = []

    def on_error(exc: BaseException) -> None:
        if not failures:
            log.error("produce to %s failed: %s", topic, exc)
        failures.append(exc)

    n_events = len(records) if isinstance(records, Sequence) else None
    positions = raw_positions(n_events, len(extra_raw))
    next_raw = next(positions, None)
    events = ticks = raw = 0
    started = time.monotonic()
    try:
        partitions: list[int] = []
        if tick_every_ms is not None:
            if num_partitions is not None:
                partitions = list(range(num_partitions))
            else:
                found = prod.partitions_for(topic)
                if not found:
                    raise LogiwatchError(f"topic {topic} has no partitions on {bootstrap}")
                partitions = sorted(found)
        for rec in _records(records, tick_every_ms, final_tick_ms):
            if isinstance(rec, Tick):
                value = encode_tick(rec)
                for part in partitions:
                    prod.send(topic, value=value, partition=part, headers=[(TICK_HEADER, TICK_HEADER_VALUE)]).add_errback(on_error)
                    ticks += 1
                continue
            wait = pacer.delay_s(events, rec.event_time, time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
            prod.send(topic, key=rec.waybill_id.encode(), value=encode_event(rec)).add_errback(on_error)
            events += 1
            while next_raw is not None and events >= next_raw:
                prod.send(topic, value=extra_raw[raw]).add_errback(on_error)
                raw += 1
                next_raw = next(positions, None)
            if progress is not None and events % 10_000 == 0:
                progress(events)
        while raw < len(extra_raw):
            prod.send(topic, value=extra_raw[raw]).add_errback(on_error)
            raw += 1
        prod.flush()
    except KafkaError as exc:
        raise LogiwatchError(f"producing to {topic} on {bootstrap} failed: {exc}") from None
    finally:
        if own:
            prod.close(timeout=10)
    if failures:
        raise LogiwatchError(f"{len(failures)} records to {topic} were not acknowledged: {failures[0]}")
    return ProduceStats(events, ticks, raw, time.monotonic() - started)
