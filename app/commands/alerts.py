"""``logiwatch alerts serve|redrive``: run the alert service, or re-drive dead letters.

``serve`` validates the routes and liability rules files first (one-line
errors), then consumes ``kafka.topics.alerts`` and serves the HTTP API and CS
board at ``alerts.api_host:alerts.api_port``. ``redrive`` moves a receiver's
dead-letter list (or every receiver's) back into its queue with the same
webhook-ids; a running service delivers them.
"""

from __future__ import annotations

import argparse
import asyncio

from logiwatch.config import Settings
from logiwatch.errors import ConfigError, LogiwatchError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("serve", help="consume alerts, notify receivers, keep the ledger, serve the API and board")
    redrive = sub.add_parser("redrive", help="move dead-lettered notifications back into their queues")
    redrive.add_argument("--receiver", help="only this receiver (default: all in the routes file)")
    sub.add_parser("check", help="validate the routes and liability rules files and exit")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from logiwatch.alerts.service import load_config, serve

    if args.action == "serve":
        return serve(settings)
    routing, rules = load_config(settings)
    if args.action == "check":
        print(f"routes: {len(routing.receivers)} receivers, {len(routing.routes)} routes; liability rules: {len(rules.versions)} versions")
        return 0
    names = list(routing.receivers)
    if args.receiver:
        if args.receiver not in routing.receivers:
            raise ConfigError(f"unknown receiver {args.receiver!r} (known: {', '.join(names) or 'none'})")
        names = [args.receiver]
    return asyncio.run(_redrive(settings, names))


async def _redrive(settings: Settings, names: list[str]) -> int:
    from redis.exceptions import RedisError

    from logiwatch.alerts.store import AlertStore, now_ms
    from logiwatch.redisconn import connect

    client = connect(settings.redis.url, socket_connect_timeout=3)
    try:
        store = AlertStore(client, settings.redis.key_prefix)
        for name in names:
            n = await store.redrive(name, now_ms())
            print(f"{name}: {n} notifications re-queued")
    except RedisError as exc:
        raise LogiwatchError(
            f"cannot reach Redis at {settings.redis.url}: {exc} (nothing was re-queued after the lines above)"
        ) from None
    finally:
        await client.aclose()
    return 0
