"""The --duration backstop: when it interrupts, when it ends the process, and what it says."""

from __future__ import annotations

from logiwatch.watchdog import Watchdog


class Recorder(Watchdog):
    """A watchdog whose interrupt and exit are recorded instead of signalling this process."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.lines: list[str] = []
        super().__init__(*args, log=self.lines.append, **kwargs)  # type: ignore[arg-type]
        self.interrupts = 0
        self.exits = 0

    def _interrupt(self) -> None:
        self.interrupts += 1

    def _exit(self) -> None:
        self.exits += 1
        self.lines.append(f"exit: {self.gone or 'duration'}")


def test_a_service_that_misses_three_probes_interrupts_once_and_moves_the_deadline_near() -> None:
    answers = iter([True, False, False, True, False, False, False, False])
    dog = Recorder("demo", 600.0, gone_grace_s=10.0)
    dog.watch("the broker at h:1", lambda: next(answers))
    t0 = dog.started
    for i in range(7):
        dog.check(t0 + i)
    assert dog.interrupts == 1 and dog.gone == "the broker at h:1"
    assert dog.lines == ["demo: the broker at h:1 went away; stopping (at most 10 s more)"]
    assert dog.deadline == t0 + 6 + 10.0  # gone at the third miss in a row (t0 + 6), not at 600 s + grace
    dog.check(t0 + 15.9)
    assert dog.exits == 0
    dog.check(t0 + 16.0)
    assert dog.exits == 1


def test_the_deadline_is_the_duration_plus_the_grace_and_a_raising_probe_is_a_miss() -> None:
    def broken() -> bool:
        raise OSError("refused")

    dog = Recorder("ingest serve", 5.0, grace_s=2.0, misses=100)
    dog.watch("the Redis at r", broken)
    dog.check(dog.started + 6.9)
    assert dog.exits == 0 and dog.gone is None
    dog.check(dog.started + 7.0)
    assert dog.exits == 1


def test_without_a_duration_or_a_watch_there_is_no_thread_and_no_deadline() -> None:
    dog = Recorder("demo", None)
    assert dog.start()._thread is None and dog.deadline is None
