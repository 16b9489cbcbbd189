"""``logiwatch ticker`` writes a tick record into every partition of the events topic."""

from __future__ import annotations

import threading
from collections.abc import Callable

from logiwatch.cli import main
from logiwatch.detectors.codec import decode_tick
from logiwatch.detectors.model import TICK_HEADER, TICK_HEADER_VALUE
from logiwatch.streams.ticker import Ticker
from tests.helpers import wait_until
from tests.integration.test_worker_support import TopicReader


def test_ticker_once_reaches_every_partition_with_the_tick_header(
    kafka_bootstrap: str, topic_factory: Callable[..., str], capsys: object
) -> None:
    topic = topic_factory("ev", partitions=3)
    assert main(["ticker", "--bootstrap", kafka_bootstrap, "--topic", topic, "--once"]) == 0
    reader = TopicReader(kafka_bootstrap, topic)
    try:
        wait_until(lambda: len(reader.poll()) >= 3, timeout=30, what="ticks")
        records = reader.records
    finally:
        reader.close()
    assert sorted(r.partition for r in records) == [0, 1, 2]
    for rec in records:
        assert (TICK_HEADER, TICK_HEADER_VALUE) in list(rec.headers)
        assert rec.key is None
        assert decode_tick(rec.value).tick_time > 0


def test_live_ticker_keeps_a_fixed_cadence_until_stopped(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("ev", partitions=2)
    clock = iter(range(1_000, 10**9, 1_000))
    ticker = Ticker(kafka_bootstrap, topic, clock_ms=lambda: next(clock))
    stop = threading.Event()
    try:
        sent = ticker.run(0.01, stop, max_ticks=3)
    finally:
        ticker.close()
    reader = TopicReader(kafka_bootstrap, topic)
    try:
        wait_until(lambda: len(reader.poll()) >= 6, timeout=30, what="ticks")
        records = reader.records
    finally:
        reader.close()
    assert sent == 3
    for partition in (0, 1):
        times = [decode_tick(r.value).tick_time for r in records if r.partition == partition]
        assert times == [1_000, 2_000, 3_000]  # each tick reaches every partition, in order


def test_ticker_on_a_missing_topic_fails_with_one_line(kafka_bootstrap: str, capsys: object) -> None:
    code = main(
        [
            "--log-level",
            "ERROR",
            "ticker",
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            "no-such-topic-for-ticks",
            "--once",
        ]
    )
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("logiwatch ticker: error:")]
    assert len(errors) == 1 and "no-such-topic-for-ticks" in errors[0]
