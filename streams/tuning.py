"""Interpreter settings of a stream-processing process: the garbage collector.

``logiwatch worker`` applies them at start-up, and the benchmark harness
applies the same ones to its in-process engine phases, so both measure the
engine under the collector settings it runs with.
"""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Collect less often, and never walk the start-up objects again.

    Everything imported so far lives as long as the process: ``gc.freeze``
    moves it out of the collector's sight. The engine's parcel state is a
    large, long-lived heap that each collection of the oldest generation
    walks, and the per-event allocations of decoding trigger those
    collections; a higher generation-0 threshold makes them rarer.
    """

    gc.collect()
    gc.freeze()
    if gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
