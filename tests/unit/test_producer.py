"""The producer's pure parts: pacing arithmetic and where malformed messages go."""

from __future__ import annotations

import pytest

from logiwatch.errors import ConfigError
from logiwatch.producer import Pacer, ProduceStats, raw_positions

H = 3_600_000


def test_rate_pacing_spreads_events_evenly_over_wall_time() -> None:
    pacer = Pacer(rate=1000.0)
    assert pacer.delay_s(sent=0, event_time_ms=0, elapsed_s=0.0) == 0.0
    assert pacer.delay_s(sent=500, event_time_ms=0, elapsed_s=0.1) == pytest.approx(0.4)
    assert pacer.delay_s(sent=500, event_time_ms=0, elapsed_s=0.9) == 0.0  # behind schedule: no wait


def test_speed_pacing_follows_the_running_max_event_time() -> None:
    pacer = Pacer(speed=3600.0)  # one simulated hour per second
    assert pacer.delay_s(0, 10 * H, 0.0) == 0.0
    assert pacer.delay_s(1, 12 * H, 0.5) == pytest.approx(1.5)
    # an event that arrives out of order never makes the producer wait longer or go back
    assert pacer.delay_s(2, 11 * H, 1.0) == pytest.approx(1.0)
    assert pacer.delay_s(3, 12 * H, 2.5) == 0.0


def test_without_rate_or_speed_nothing_waits() -> None:
    assert Pacer().delay_s(10**6, 10**12, 0.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": 0.0}, "--rate"), ({"speed": -1.0}, "--speed"), ({"rate": 1.0, "speed": 1.0}, "not both")],
)
def test_bad_pacing_arguments_are_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Pacer(**kwargs)


def test_malformed_messages_are_spread_through_a_known_length_stream() -> None:
    positions = list(raw_positions(100, 3))
    assert positions == [25, 50, 75]
    assert list(raw_positions(2, 5)) == [1, 2, 2, 2, 2]  # more raw than events: the rest at the end
    assert list(raw_positions(100, 0)) == []


def test_stats_report_events_per_second() -> None:
    assert ProduceStats(events=1000, ticks=8, raw=0, seconds=2.0).events_per_s == 500.0
    assert ProduceStats(events=0, ticks=0, raw=0, seconds=0.0).events_per_s == 0.0
