"""The benchmark harness behind ``logiwatch bench``, one module per phase.

One run, one machine, one fresh Tansu broker, one Redis and one set of
simulator events, produced once into a 4-partition topic. Each phase reads
those same events: the raw client ceilings (aiokafka ``getmany`` and
kafka-python ``poll``, decoding every event), a bare Faust agent that only
counts (the framework peer, run as its own process), a bare and a minimal
stateful quixstreams app (the peer a user would pick, in the bench's own
virtualenv, skipped with the reason when it cannot be installed), the full ``logiwatch
worker`` with one and with two processes, the pure detector engine and the
backtest path in-process, the alert service on the engine's alerts, the
ingest-to-alert latency at half the worker's sustained rate, and the
resident memory per in-flight parcel. Throughput is clocked from the first
to the last record a phase sees, so client start-up and group joins are
excluded; every phase checks it saw all its events and fails loudly
(``None`` and an error, never a zero) when it cannot run.

Reading order:

* :mod:`.runner`: :func:`run_bench`, the phases in order around one broker and workload;
* :mod:`.workload`: options, the simulated events and producing them;
* the phases: :mod:`.raw` (client ceilings), :mod:`.faust_bare` with
  :mod:`.faust_agent` (the bare agent's process), :mod:`.quix` with
  :mod:`.quix_app` (the quixstreams apps' process), :mod:`.workers` (worker
  processes, their profile) on :mod:`.processes`, :mod:`.engine` (engine,
  backtest, memory), :mod:`.alert_service`, :mod:`.latency`;
* :mod:`.figures`: the pure parts (phase names, required keys, targets,
  percentiles, ratios, the latency matching rule), checked by
  ``tests/unit/test_bench.py``; :mod:`.report`: the table, ``docs/benchmarks.md``
  and ``bench/results.json``.

``engine_bench.py`` and ``engine_ab.py`` are stand-alone scripts of the pure
engine (``.venv/bin/python bench/engine_bench.py``), not phases.
"""

from logiwatch.bench.figures import (
    BATCH_COUNT,
    BATCH_SUM,
    CONSUMED,
    HAND_MARKER,
    PHASES,
    REQUIRED_KEYS,
    TARGETS,
    TriggerIndex,
    batch_profile,
    check_targets,
    derive,
    match_latencies,
    percentile,
    rate,
    ratio,
    summarise_profile,
)
from logiwatch.bench.report import machine_info, merge_markdown, render_markdown, render_table, write_outputs
from logiwatch.bench.runner import run_bench
from logiwatch.bench.workload import BenchOptions

__all__ = [
    "BATCH_COUNT",
    "BATCH_SUM",
    "CONSUMED",
    "HAND_MARKER",
    "PHASES",
    "REQUIRED_KEYS",
    "TARGETS",
    "BenchOptions",
    "TriggerIndex",
    "batch_profile",
    "check_targets",
    "derive",
    "machine_info",
    "match_latencies",
    "merge_markdown",
    "percentile",
    "rate",
    "ratio",
    "render_markdown",
    "render_table",
    "run_bench",
    "summarise_profile",
    "write_outputs",
]
