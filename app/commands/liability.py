"""``logiwatch liability report``: net liability per party and per rule.

Reads the ledger in Redis and sums entries whose event time lies in
``[--since, --until)``; ``--json`` prints one JSON object instead of tables.
The same figures are the ``logiwatch_liability_amount_yuan`` metric.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from logiwatch.config import Settings
from logiwatch.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    report = sub.add_parser("report", help="totals per party and per rule for a time range")
    report.add_argument("--since", help="ISO 8601 time with offset (e.g. 2026-11-11T00:00:00Z), inclusive")
    report.add_argument("--until", help="ISO 8601 time with offset, exclusive")
    report.add_argument("--json", action="store_true", help="print JSON")


def _time(value: str | None, name: str) -> int | None:
    from logiwatch.alerts.api import parse_time_ms

    if value is None:
        return None
    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {exc}") from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    since, until = _time(args.since, "since"), _time(args.until, "until")
    if since is not None and until is not None and until <= since:
        raise ConfigError("--until must be after --since")
    return asyncio.run(_report(settings, since, until, args.json))


async def _report(settings: Settings, since: int | None, until: int | None, as_json: bool) -> int:
    from redis.exceptions import RedisError

    from logiwatch.alerts.ledger import Ledger
    from logiwatch.alerts.liability import load_rules
    from logiwatch.redisconn import connect

    client = connect(settings.redis.url)
    try:
        ledger = Ledger(client, settings.redis.key_prefix, load_rules(settings.alerts.liability_rules_file))
        try:
            t = await ledger.totals(since, until)
        except RedisError as exc:
            raise ConfigError(f"cannot read the ledger from Redis at {settings.redis.url}: {exc}") from None
    finally:
        await client.aclose()
    if as_json:
        print(
            json.dumps(
                {
                    "since": args_iso(since),
                    "until": args_iso(until),
                    "by_party_yuan": {k: v / 100 for k, v in sorted(t.by_party.items())},
                    "by_rule_yuan": {k: v / 100 for k, v in sorted(t.by_rule.items())},
                    "net_yuan": t.net_fen / 100,
                    "entries": t.entries,
                }
            )
        )
        return 0
    print(f"liability ledger: {t.entries} entries, net {t.net_fen / 100:.2f} yuan")
    print(f"{'party':<12} {'yuan':>12}")
    for k, v in sorted(t.by_party.items()):
        print(f"{k:<12} {v / 100:>12.2f}")
    print(f"{'rule':<32} {'yuan':>12}")
    for k, v in sorted(t.by_rule.items()):
        print(f"{k:<32} {v / 100:>12.2f}")
    return 0


def args_iso(ms: int | None) -> str | None:
    from datetime import UTC, datetime

    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
