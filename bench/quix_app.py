"""The quixstreams peer of ``logiwatch bench``: what a user would write instead.

Runs in the bench's own virtualenv (``.venv-quix``, made by
:mod:`logiwatch.bench.quix`), never in logiwatch's: it imports only
quixstreams and the standard library, and is started as a file::

    .venv-quix/bin/python bench/quix_app.py --mode bare --bootstrap H:P --topic T \
        --group G --state-dir DIR --first FIRST.json --out OUT.json

Two apps on the bench's events topic, both from the earliest offset in a
fresh consumer group, values decoded by quixstreams' JSON deserializer:

* ``bare``: decode, count, commit;
* ``stateful``: per event one state ``get`` and one ``set`` (keyed by the
  Kafka key, the waybill id) and one comparison, in quixstreams' RocksDB
  store under a fresh ``--state-dir``, with its changelog topic.

Checkpoints are committed every ``--commit-every`` records (as the raw
consumers commit after every 5,000-record fetch) and at least every second.
At the first record the app writes ``{"first_s": wall time}`` to ``--first``;
the harness clocks from there to the moment the group's committed offsets
cover the events (the worker phase's clock). On SIGTERM quixstreams stops
gracefully and the app writes its counts to ``--out``: ``count`` (records
handled), ``first_s``, and for ``stateful`` ``new_keys`` (records whose key
had no state yet: the parcels seen) and ``out_of_order`` (records older than
the state held for their key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/quix_app.py")
    p.add_argument("--mode", choices=("bare", "stateful"), required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--first", required=True, help="file written at the first record")
    p.add_argument("--out", required=True, help="file written at shutdown")
    p.add_argument("--commit-every", type=int, default=5000)
    p.add_argument("--session-timeout-ms", type=int, default=10_000)
    return p


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # atomic: the harness never reads half a file


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_every=args.commit_every,
        commit_interval=1.0,
        state_dir=args.state_dir,
        # Tansu hands a first member its partitions after about half the session timeout.
        consumer_extra_config={
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": min(2000, args.session_timeout_ms // 3),
        },
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, key_deserializer="bytes", value_deserializer="json")
    sdf = app.dataframe(topic)
    stats: dict[str, Any] = {"mode": args.mode, "count": 0, "first_s": None}
    first = Path(args.first)

    def seen() -> None:
        stats["count"] += 1
        if stats["first_s"] is None:
            stats["first_s"] = time.time()
            _write_json(first, {"first_s": stats["first_s"]})

    if args.mode == "bare":

        def count(_value: Any) -> None:
            seen()

        sdf.update(count)
    else:
        stats["new_keys"] = stats["out_of_order"] = 0

        def compare(value: Any, state: Any) -> None:
            seen()
            event_time = value["event_time"]
            held = state.get("latest")
            state.set("latest", event_time)
            if held is None:
                stats["new_keys"] += 1
            elif event_time < held:
                stats["out_of_order"] += 1

        sdf.update(compare, stateful=True)
    app.run()  # until SIGTERM; quixstreams commits its last checkpoint on the way out
    _write_json(Path(args.out), stats)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
