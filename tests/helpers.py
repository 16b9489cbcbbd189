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
