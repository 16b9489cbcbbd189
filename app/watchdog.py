"""A command's hard deadline, and a watch on the services it needs.

``--duration S`` is a promise: the command ends by ``S`` seconds plus a
short grace to finish, whatever happens. The run's own loop normally keeps
it (it stops producing, drains and cleans up in time); the :class:`Watchdog`
is the backstop for everything that loop cannot see, such as a client
retrying a dead connection. It runs in a daemon thread:

* it probes each watched service (a broker or a Redis the command may not
  have started) every second; after three failed probes in a row it prints
  one line naming the service, interrupts the command as two Ctrl-C would
  (stop, and skip the drain) and moves the deadline to ``gone_grace_s`` from
  now;
* at the deadline it prints one line saying why, runs the registered
  ``on_exit`` callbacks (they kill the command's child processes) and ends the
  process with exit status 3.

>>> dog = Watchdog("demo", None, log=lambda line: None)
>>> dog.deadline is None
True
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: exit status when the watchdog ends a command
EXIT_STATUS = 3


@dataclass
class _Watched:
    name: str
    probe: Callable[[], bool]
    misses: int = 0


class Watchdog:
    """Ends the command at ``duration_s + grace_s``, or ``gone_grace_s`` after a watched service went away."""

    def __init__(
        self,
        command: str,
        duration_s: float | None,
        *,
        grace_s: float = 20.0,
        gone_grace_s: float = 10.0,
        interval_s: float = 1.0,
        misses: int = 3,
        log: Callable[[str], None] = print,
    ) -> None:
        self.command = command
        self.duration_s = duration_s
        self.grace_s = grace_s
        self.gone_grace_s = gone_grace_s
        self.interval_s = interval_s
        self.misses = misses
        self.log = log
        self.started = time.monotonic()
        self.deadline = None if duration_s is None else self.started + duration_s + grace_s
        self.gone: str | None = None
        self._watched: list[_Watched] = []
        self._on_exit: list[Callable[[], None]] = []
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, probe: Callable[[], bool]) -> None:
        """Probe ``name`` (e.g. "the broker at 127.0.0.1:19092") with ``probe`` every interval."""

        self._watched.append(_Watched(name, probe))

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (quickly: it kills a child process) before a watchdog exit."""

        self._on_exit.append(callback)

    def start(self) -> Watchdog:
        if self._thread is None and (self.deadline is not None or self._watched):
            self._thread = threading.Thread(target=self._run, name=f"{self.command}-watchdog", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._closed.wait(self.interval_s):
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """One round: probe the watched services, then end the process if the deadline passed."""

        for w in self._watched:
            if self.gone is not None:
                break
            try:
                ok = bool(w.probe())
            except Exception:  # a probe that raises is a service that does not answer
                ok = False
            w.misses = 0 if ok else w.misses + 1
            if w.misses >= self.misses:
                self.gone = w.name
                self.deadline = min(self.deadline or float("inf"), now + self.gone_grace_s)
                self.log(f"{self.command}: {w.name} went away; stopping (at most {self.gone_grace_s:.0f} s more)")
                self._interrupt()
        if self.deadline is not None and now >= self.deadline and not self._closed.is_set():
            self._exit()

    def _interrupt(self) -> None:
        # As two Ctrl-C would: the command stops, and skips waiting for a drain
        # that cannot finish without the service.
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)

    def _exit(self) -> None:
        if self.gone is not None:
            why = f"{self.gone} went away and the run did not finish within {self.gone_grace_s:.0f} s"
        else:
            why = f"--duration {self.duration_s:g} s (+{self.grace_s:.0f} s to finish) is over"
        self.log(f"{self.command}: stopped by its deadline: {why}")
        for callback in self._on_exit:
            try:
                callback()
            except Exception:  # noqa: S110 - best effort: the process ends next whatever happens
                pass
        os._exit(EXIT_STATUS)
