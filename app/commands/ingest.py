"""``logiwatch ingest``: the front door for what platforms and merchants already have.

``ingest serve`` runs the HTTP receiver for tracking-feed pushes (AfterShip,
17TRACK, Kuaidi100; see :mod:`logiwatch.streams.ingest.receiver`), a feed
being on when its secret is set (``ingest.aftership_secret``,
``ingest.seventeentrack_key``, ``ingest.kuaidi100_salt``). ``ingest import``
turns historical exports (an orders table and a scans table, CSV or JSONL,
columns mapped by a small TOML) into contract events: ``--out FILE`` writes
the joined v1 scan events in event-time order for ``logiwatch backtest``;
``--kafka`` produces the registrations to ``kafka.topics.shipments`` and the
slim scans, in event-time order, to ``kafka.topics.events``. Bad rows go to
the reject file (``--rejects``, one JSON object per line: file, line,
reason) and the summary counts ``in = out + rejects``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from logiwatch.config import Settings, read_toml
from logiwatch.errors import ConfigError, LogiwatchError


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    serve = sub.add_parser("serve", help="receive signed tracking-feed pushes and produce them to Kafka")
    serve.add_argument("--port", type=int, default=None, help="listen port (default: ingest.port; 0 = any free)")
    serve.add_argument("--duration", type=_positive, default=None, help="stop after S seconds")
    imp = sub.add_parser("import", help="historical orders + scans exports -> contract events")
    imp.add_argument("scans", type=Path, help="scans table (.csv or .jsonl)")
    imp.add_argument("--orders", type=Path, default=None, help="orders table (.csv or .jsonl)")
    imp.add_argument("--mapping", type=Path, default=None, help="TOML column mapping ([orders], [scans])")
    imp.add_argument("--out", type=Path, default=None, help="write joined v1 events (JSONL) for backtest")
    imp.add_argument("--kafka", action="store_true", help="produce registrations and scans to Kafka")
    imp.add_argument("--rejects", type=Path, default=None, help="reject file (default: <scans>.rejects.jsonl)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "serve":
        return _serve(args, settings)
    return _import(args, settings)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from logiwatch.streams.ingest.serve import adapters_from, serve

    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {args.port}")
        settings = settings.model_copy(
            update={"ingest": settings.ingest.model_copy(update={"port": args.port})}
        )
    if not adapters_from(settings):
        raise ConfigError(
            "no feed is configured: set ingest.aftership_secret, ingest.seventeentrack_key or ingest.kuaidi100_salt"
        )
    from logiwatch.watchdog import Watchdog

    try:
        # the receiver's loop ends at --duration; the watchdog ends the process if that loop cannot
        with Watchdog("ingest serve", args.duration, log=lambda line: print(line, flush=True)):
            totals = asyncio.run(serve(settings, args.duration))
    except OSError as exc:
        raise LogiwatchError(f"cannot listen on {settings.ingest.host}:{settings.ingest.port}: {exc}") from None
    print(f"ingest serve: {json.dumps(totals, sort_keys=True)}")
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from logiwatch.detectors.codec import encode_record, write_jsonl
    from logiwatch.streams.ingest.importer import Mapping_, import_tables, mapping_from

    if args.out is None and not args.kafka:
        raise ConfigError("give --out FILE (JSONL for backtest) or --kafka")
    for path in (args.scans, args.orders):
        if path is not None and not path.is_file():
            raise LogiwatchError(f"no such file: {path}")
    mapping = Mapping_()
    if args.mapping is not None:
        try:
            mapping = mapping_from(read_toml(args.mapping, "mapping file"))
        except ValueError as exc:
            raise ConfigError(f"mapping file {args.mapping}: {exc}") from None
    result = import_tables(args.orders, args.scans, mapping)
    rejects_path = args.rejects or args.scans.with_name(args.scans.name + ".rejects.jsonl")
    with open(rejects_path, "w", encoding="utf-8") as fh:
        for rej in result.rejects:
            fh.write(rej.to_json() + "\n")
    out_n = 0
    if args.out is not None:
        from logiwatch.streams.join import JoinConfig

        w = settings.worker
        config = JoinConfig(default_dispatch_ms=w.join_default_dispatch_ms, default_delivery_ms=w.join_default_delivery_ms)
        out_n = write_jsonl(args.out, result.joined(config))
    if args.kafka:
        from logiwatch.producer import make_producer

        producer = make_producer(settings.kafka.bootstrap)
        try:
            topics = settings.kafka.topics
            futures = [
                producer.send(topics.shipments, key=r.waybill_id.encode(), value=encode_record(r))
                for r in sorted(result.registrations, key=lambda r: r.version_ms)
            ]
            for s in sorted(result.scans, key=lambda s: s.event_time):
                futures.append(producer.send(topics.events, key=s.waybill_id.encode(), value=encode_record(s)))
            producer.flush()
            for fut in futures:
                fut.get(timeout=30)
        except Exception as exc:  # kafka-python raises its own tree
            raise LogiwatchError(f"cannot produce to Kafka at {settings.kafka.bootstrap}: {exc}") from None
        finally:
            producer.close()
    n_in = sum(result.rows_in.values())
    n_out = len(result.registrations) + len(result.scans)
    print(
        f"ingest import: {n_in} rows in = {n_out} records out "
        f"({len(result.registrations)} registrations, {len(result.scans)} scans) + {len(result.rejects)} rejects"
        + (f"; {out_n} joined events -> {args.out}" if args.out is not None else "")
        + ("; produced to Kafka" if args.kafka else "")
        + f"; rejects -> {rejects_path}"
    )
    return 0
