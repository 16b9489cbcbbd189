"""Small helpers shared by the tests (importable as ``tests.helpers``).

``wait_until`` replaces sleeps: a test waits for a condition with a generous
timeout and fails with a clear message if it never holds, so tests are not
timed assertions and stay fast when the machine is fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Raises ``AssertionError`` after ``timeout`` seconds (naming ``what`` or the
    predicate) so a hung condition fails the test instead of hanging it.
    """

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"condition not met within {timeout} s: {name}")
        time.sleep(interval)


#: Event time used by the contract tests' sample event (2026-09-21 UTC).
SAMPLE_T0_MS = 1_790_000_000_000


def sample_event_dict(**over: object) -> dict[str, object]:
    """A valid scan event as plain JSON-ready data; keyword arguments replace fields."""

    base: dict[str, object] = {
        "event_id": "e-1",
        "waybill_id": "WB1",
        "order_id": "O1",
        "merchant_id": "M1",
        "carrier_id": "C1",
        "event_type": "HUB_ARRIVED",
        "node_id": "HUB-1",
        "node_type": "HUB",
        "region": "east",
        "origin_region": "east",
        "dest_region": "north",
        "event_time": SAMPLE_T0_MS,
        "promised_dispatch_by": SAMPLE_T0_MS + 3_600_000,
        "promised_delivery_by": SAMPLE_T0_MS + 86_400_000,
        "category": "home_textile",
        "order_amount": 129.0,
    }
    base.update(over)
    return base
