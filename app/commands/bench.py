"""``logiwatch bench``: run the benchmark harness (see :mod:`logiwatch.bench`).

Starts a fresh Tansu broker on a free port and uses the configured Redis (or
``REDIS_URL``, or starts one), produces ``--events`` simulator events once and
runs every phase over them. Prints a table (or, with ``--json``, one JSON
object on stdout and progress on stderr) and writes ``docs/benchmarks.md``
and ``bench/results.json``; the text below the marker in the markdown file
is kept. Exits 1 when any phase that was not skipped failed, after writing
what it measured: a failed figure is ``null``, never a zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from logiwatch.config import Settings
from logiwatch.errors import ConfigError, LogiwatchError


def configure(parser: argparse.ArgumentParser) -> None:
    from logiwatch.bench import PHASES

    parser.add_argument("--events", type=int, default=1_000_000, help="events to produce (default 1,000,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out-md", default="docs/benchmarks.md", help="markdown report ('' = none)")
    parser.add_argument("--out-json", default="bench/results.json", help="JSON results ('' = none)")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="PHASE",
        help=f"skip a phase (repeatable): {', '.join(PHASES)}; 'quix' = both quixstreams phases",
    )
    parser.add_argument(
        "--quix-venv",
        default=".venv-quix",
        help="the bench's own virtualenv for quixstreams, made on first use (default .venv-quix)",
    )
    parser.add_argument(
        "--faust-events", type=int, default=50_000, help="events the bare Faust agent counts (default 50,000)"
    )
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="length of the paced latency run")
    parser.add_argument("--latency-rate", type=float, help="paced events/s (default: half the worker rate)")
    parser.add_argument(
        "--profile", action="store_true", help="also profile a one-process worker run with py-spy"
    )
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=45.0,
        help="clock budget of a raw, worker or engine phase; beyond it the rate covers the events done (default 45)",
    )
    parser.add_argument("--workdir", help="logs and scratch files (default: a new temporary directory)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from logiwatch.bench import BenchOptions, render_table, run_bench, write_outputs

    if args.faust_events < 2:
        raise ConfigError(f"--faust-events must be at least 2, got {args.faust_events}")
    if args.latency_seconds <= 0:
        raise ConfigError(f"--latency-seconds must be positive, got {args.latency_seconds}")
    if args.phase_seconds < 5:
        raise ConfigError(f"--phase-seconds must be at least 5, got {args.phase_seconds}")
    if args.latency_rate is not None and args.latency_rate <= 0:
        raise ConfigError(f"--latency-rate must be positive, got {args.latency_rate}")
    skip = {name for item in args.skip for name in item.split(",") if name}
    if "quix" in skip:
        skip = (skip - {"quix"}) | {"quix_bare", "quix_stateful"}
    options = BenchOptions(
        events=args.events,
        faust_events=args.faust_events,
        quix_venv=args.quix_venv,
        latency_seconds=args.latency_seconds,
        latency_rate=args.latency_rate,
        skip=frozenset(skip),
        profile=args.profile,
        phase_seconds=args.phase_seconds,
    )
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="logiwatch-bench-"))

    def log(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr if args.json else sys.stdout, flush=True)

    log(f"scratch and logs in {workdir}")
    # The canonical command, whoever called us (make, a shell, a test).
    command = f"logiwatch bench --events {args.events}" + "".join(f" --skip {s}" for s in sorted(skip))
    command += " --profile" if args.profile else ""
    command += f" --quix-venv {args.quix_venv}" if args.quix_venv != ".venv-quix" else ""
    command += f" --phase-seconds {args.phase_seconds:g}" if args.phase_seconds != 45.0 else ""
    results = run_bench(options, settings, workdir, log, command=command)
    write_outputs(
        results, Path(args.out_md) if args.out_md else None, Path(args.out_json) if args.out_json else None
    )
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        print(render_table(results))
    if results["errors"]:
        failed = ", ".join(sorted(results["errors"]))
        raise LogiwatchError(
            f"benchmark phase(s) failed: {failed} (figures null; details above and in the files)"
        )
    return 0
