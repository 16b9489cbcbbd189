"""``logiwatch stack up|down|status``: the embedded Tansu broker and Redis.

``up`` starts a Tansu broker on ``stack.kafka_port`` and, unless ``REDIS_URL``
(or the configured Redis URL) answers, a ``redis-server`` on
``stack.redis_port``; it creates the configured topics and records what it
started in ``stack.state_dir``. ``down`` stops only what ``up`` started.
``status`` prints one line per service and exits 1 when a recorded service
is no longer running (or nothing was started). The work is done by :mod:`logiwatch.stack`.
"""

from __future__ import annotations

import argparse
import json

from logiwatch import stack
from logiwatch.config import Settings


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} outside 1..65535")
    return port


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"], help="start, stop or inspect the stack")
    parser.add_argument(
        "--kafka-port", type=_port, default=None, help="broker port (default: stack.kafka_port)"
    )
    parser.add_argument(
        "--redis-port",
        type=_port,
        default=None,
        help="Redis port if one is started (default: stack.redis_port)",
    )
    parser.add_argument(
        "--state-dir", default=None, help="pid files, logs and state (default: stack.state_dir)"
    )
    parser.add_argument("--json", action="store_true", help="status as JSON")


def _with_cli_overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    section: dict[str, object] = {}
    if args.kafka_port is not None:
        section["kafka_port"] = args.kafka_port
    if args.redis_port is not None:
        section["redis_port"] = args.redis_port
    if args.state_dir is not None:
        section["state_dir"] = args.state_dir
    if not section:
        return settings
    from logiwatch.config import load_settings

    # Re-validate through the one settings builder so bad ports get its one-line message.
    return load_settings(
        None, **{**settings.model_dump(), "stack": {**settings.stack.model_dump(), **section}}
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_cli_overrides(args, settings)
    stack.quiet_client_logs()
    if args.action == "up":
        urls = stack.stack_up(settings)
        print(
            f"stack up: kafka {urls['kafka']}  redis {urls['redis']}  (state in {settings.stack.state_dir})"
        )
        return 0
    if args.action == "down":
        n = stack.stack_down(settings)
        print(f"stack down: {n} process(es) stopped")
        return 0
    statuses = stack.stack_status(settings)
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2))
    elif not statuses:
        print(f"stack: not running (no state in {settings.stack.state_dir})")
    for s in statuses if not args.json else []:
        state = "running" if s.running else "stopped"
        owner = f"pid {s.pid}" if s.started_by_stack else "external"
        print(f"{s.name}: {state}  {s.url}  ({owner})")
    return 0 if statuses and all(s.running for s in statuses) else 1
