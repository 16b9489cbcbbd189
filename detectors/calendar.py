"""Calendars: carriers' working days, holidays and peak periods as detector inputs.

A deadline that would fall while a carrier does not work (its weekly day off,
a public holiday) moves on by the non-working time it spans, and a peak period
(e.g. Double 11, Nov 1-12) stretches expected durations by a factor. This is
how weekend and holiday slowdowns stop being false alarms without teaching
the baselines that slowness is normal. All times are UTC epoch milliseconds;
days are UTC days (the simulator and the contract are UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Calendar:
    """Working-day and peak-period knowledge.

    Parameters
    ----------
    carrier_days_off:
        ``(carrier_id, weekday)`` pairs (Monday = 0) on which that carrier does not move parcels.
    holidays:
        UTC day numbers (``epoch_ms // DAY_MS``) on which no carrier works.
    peaks:
        ``(start_ms, end_ms, factor)``: expected durations are multiplied by ``factor`` inside.

    >>> cal = Calendar(carrier_days_off=frozenset({("C1", 6)}))
    >>> sunday = 4 * DAY_MS  # 1970-01-04 was a Sunday
    >>> cal.extend("C1", sunday - 3_600_000, 7_200_000) == 7_200_000 + DAY_MS
    True
    >>> cal.extend("C2", sunday - 3_600_000, 7_200_000)
    7200000
    """

    carrier_days_off: frozenset[tuple[str, int]] = frozenset()
    holidays: frozenset[int] = frozenset()
    peaks: tuple[tuple[int, int, float], ...] = field(default_factory=tuple)

    def is_working_day(self, carrier_id: str, day: int) -> bool:
        if day in self.holidays:
            return False
        # 1970-01-01 (day 0) was a Thursday (weekday 3)
        return (carrier_id, (day + 3) % 7) not in self.carrier_days_off

    def extend(self, carrier_id: str, start_ms: int, duration_ms: int) -> int:
        """``duration_ms`` counted from ``start_ms`` on working days only (whole days skipped)."""

        if not self.carrier_days_off and not self.holidays:
            return duration_ms
        end = start_ms + duration_ms
        day = start_ms // DAY_MS
        extra = 0
        # each non-working day met before the (moving) end pushes it by a day
        while day * DAY_MS < end + extra and day - start_ms // DAY_MS < 60:
            if not self.is_working_day(carrier_id, day):
                extra += DAY_MS
            day += 1
        return duration_ms + extra

    def peak_factor(self, at_ms: int) -> float:
        for start, end, factor in self.peaks:
            if start <= at_ms < end:
                return factor
        return 1.0


def double_11(year: int, factor: float = 1.5) -> tuple[int, int, float]:
    """The Double 11 peak (Nov 1-12 UTC) of ``year`` as a ``peaks`` entry."""

    import datetime as _dt

    start = _dt.datetime(year, 11, 1, tzinfo=_dt.UTC)
    end = _dt.datetime(year, 11, 13, tzinfo=_dt.UTC)
    return (int(start.timestamp() * 1000), int(end.timestamp() * 1000), factor)
