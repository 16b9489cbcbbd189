"""In-process phases ``engine``, ``backtest`` and ``memory``: the pure engine
on the decoded workload under the worker's collector settings, the backtest
path over a file, and the resident bytes per in-flight parcel.
"""

from __future__ import annotations

import contextlib
import gc
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from logiwatch.bench.figures import BATCH, rate
from logiwatch.bench.workload import Workload
from logiwatch.detectors.model import Alert, ScanEvent
from logiwatch.detectors.partitioning import partition_for
from logiwatch.errors import LogiwatchError
from logiwatch.streams.tuning import tune_gc


@contextlib.contextmanager
def worker_gc(gen0_threshold: int) -> Iterator[None]:
    """The worker's collector settings (``logiwatch worker`` freezes its start-up heap and raises gen 0).

    Without them an in-process phase would also pay for the collector walking
    the harness's own heap (the whole pre-produced workload), which a worker
    process does not hold.
    """

    before = gc.get_threshold()
    tune_gc(gen0_threshold)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def engine_eps(
    workload: Workload,
    lateness_ms: int,
    max_seconds: float | None = None,
    gen0_threshold: int = 0,
    alerts: list[Alert] | None = None,
) -> tuple[float, int, int]:
    """Events/s of ``Engine.process`` alone (one engine per partition, 5,000-event batches).

    Returns ``(events/s, events processed, peak parcels in flight)``; with
    ``max_seconds`` it stops after the batch that crosses that much engine time.
    It runs under the worker's collector settings (``worker_gc``). The alerts
    raised are appended to ``alerts`` when given.
    """

    from logiwatch.detectors.engine import Engine, EngineConfig

    parts: list[list[ScanEvent]] = [[] for _ in workload.by_partition]
    n = len(parts)
    for ev in workload.events:
        parts[partition_for(ev.waybill_id, n)].append(ev)
    engines = [Engine(EngineConfig(allowed_lateness_ms=lateness_ms)) for _ in parts]
    peak = 0
    elapsed = 0.0
    # Round-robin over partitions, as a worker owning all of them would see them.
    offsets = [0] * n
    with worker_gc(gen0_threshold):
        while any(offsets[i] < len(parts[i]) for i in range(n)):
            if max_seconds is not None and elapsed >= max_seconds:
                break
            for i in range(n):
                chunk = parts[i][offsets[i] : offsets[i] + BATCH]
                if not chunk:
                    continue
                offsets[i] += len(chunk)
                t0 = time.perf_counter()
                raised = engines[i].process(chunk)
                engines[i].take_changes()  # the worker checkpoints every batch
                elapsed += time.perf_counter() - t0
                if alerts is not None:
                    alerts += raised
            peak = max(peak, sum(e.in_flight for e in engines))
    done = sum(offsets)
    return rate(done, elapsed), done, peak


def backtest_run(
    workload: Workload, workdir: Path, lateness_ms: int, tick_every_ms: int = 60_000
) -> dict[str, Any]:
    """Time ``logiwatch backtest`` on the same events: read the JSONL files, run the engines, score.

    The files are written first (not timed); ``backtest_seconds`` is the whole
    backtest, ``backtest_engine_seconds`` its engine part as it reports it.
    """

    from logiwatch.backtest import backtest
    from logiwatch.detectors.codec import write_jsonl
    from logiwatch.detectors.engine import EngineConfig

    events_path, labels_path = workdir / "bench-events.jsonl", workdir / "bench-labels.jsonl"
    write_jsonl(events_path, workload.events)
    write_jsonl(labels_path, workload.labels)
    try:
        # the harness's own heap (the workload) frozen out of the collector's walks, as in a
        # `logiwatch backtest` process of its own; the collector's thresholds stay as they are
        with worker_gc(0):
            t0 = time.perf_counter()
            result = backtest(
                events_path,
                labels_path,
                EngineConfig(allowed_lateness_ms=lateness_ms),
                partitions=len(workload.by_partition),
                ticks_every_ms=tick_every_ms,
                scenario="bench",
            )
            seconds = time.perf_counter() - t0
    finally:
        events_path.unlink(missing_ok=True)
        labels_path.unlink(missing_ok=True)
    return {
        "backtest_seconds": seconds,
        "backtest_eps": rate(len(workload.events), seconds),
        "backtest_engine_seconds": result.get("engine_seconds"),
        "backtest_events": len(workload.events),
    }


def bytes_per_parcel(events: Sequence[ScanEvent], lateness_ms: int) -> tuple[float, int, int]:
    """Traced bytes per in-flight parcel of one engine's state, learned models excluded.

    The engine runs the sample, then its checkpoint (parcel blobs and models) is restored twice:
    with the parcels and without them; the difference is what the parcels hold. Both sides are
    built the same way, so the learned models' keys and histograms cancel out (subtracting a
    models-only restore from the live engine did not: the live engine's baselines share key
    strings between families, a restored one does not, and the state came out negative once a
    family was added). The restored engine takes up the live one's hot parcels (decoded, as the
    live engine holds them: ``EngineConfig.hot_parcels``), so their cost counts too.

    Returns ``(bytes per parcel, parcels, state bytes)``.
    """

    from logiwatch.detectors.engine import Engine, EngineConfig
    from logiwatch.detectors.runner import interleave_ticks

    config = EngineConfig(allowed_lateness_ms=lateness_ms)
    # with the clock's ticks (not the final one, which would end every journey): the hub facts
    # leave the engine in a summary at each tick, as they do in the worker
    records = list(interleave_ticks(events, 60_000))[:-1]
    engine = Engine(config)
    for i in range(0, len(records), BATCH):
        engine.process(records[i : i + BATCH])
        engine.take_changes()  # steady state: the worker drains changes every batch
        engine.take_hub_summaries()  # and sends the hub summaries on
    parcels = engine.in_flight
    models = engine.export_models()
    # the blobs are decoded inside the traced window, so the restored engine's copies count
    packed = msgspec.msgpack.encode(engine.parcel_blobs())
    hot = list(engine._hot)  # least recently touched first, as the restored engine takes them up
    del engine
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        models_only = Engine.restore(config, {}, models)
        gc.collect()
        model_bytes = tracemalloc.get_traced_memory()[0] - base
        del models_only
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        full = Engine.restore(config, msgspec.msgpack.decode(packed), models)
        for wb in hot:
            full._load(wb)
        full._flush()
        gc.collect()
        full_bytes = tracemalloc.get_traced_memory()[0] - base
        del full
    finally:
        tracemalloc.stop()
    if parcels == 0:
        raise LogiwatchError("no parcel in flight after the memory sample: nothing to divide by")
    state = full_bytes - model_bytes
    return state / parcels, parcels, state
