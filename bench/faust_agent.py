"""The framework peer of ``logiwatch bench``: a bare Faust agent that only counts.

Run as ``python -m logiwatch.bench.faust_agent --bootstrap H:P --topic T --group G
--target N --out FILE``. The agent iterates the stream one event at a time
(Faust's ordinary per-event path, raw bytes, no decoding) and counts; when
the count reaches ``--target`` it writes ``{"count", "first_s", "last_s"}``
(wall-clock seconds of the first and the target-th event) to ``--out``
atomically and keeps running until the harness stops it. It is a separate
process so that Faust's worker, event loop and consumer thread behave exactly
as in any Faust deployment, with the session timeout the embedded stack uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m logiwatch.bench.faust_agent")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--target", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--session-timeout-s", type=float, default=10.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.target < 1:
        print("--target must be at least 1", file=sys.stderr)
        return 2
    import faust

    datadir = tempfile.mkdtemp(prefix="lw-bench-faust-")
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        autodiscover=False,
        datadir=datadir,
        store="memory://",
        web_enabled=False,
        # Tansu hands a first member its partitions after about half the
        # session timeout; Faust's 60 s default would cost ~30 s per start.
        broker_session_timeout=args.session_timeout_s,
        broker_heartbeat_interval=2.0,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    out = Path(args.out)
    state = {"count": 0, "first_s": 0.0}

    @app.agent(topic)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for _value in stream:
            state["count"] += 1
            n = state["count"]
            if n == 1:
                state["first_s"] = time.time()
            if n == args.target:
                result = {"count": n, "first_s": state["first_s"], "last_s": time.time()}
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(result))
                tmp.replace(out)  # atomic: the harness never reads half a file

    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
