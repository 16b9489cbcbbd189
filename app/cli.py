"""The ``logiwatch`` command line.

Each command lives in its own module under ``logiwatch.commands`` exposing
``configure(parser)`` and ``run(args, settings) -> int``; this module only
parses, builds the settings once and maps failures to exit codes: 0 success,
2 bad usage (argparse), 1 runtime failure with a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from logiwatch.config import Settings, load_settings
from logiwatch.errors import LogiwatchError
from logiwatch.logging import configure_logging

#: command name -> (module under logiwatch.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("stack", "start, stop or inspect the embedded Tansu broker and Redis"),
    "simulate": ("simulate", "generate realistic labelled logistics events (files or Kafka)"),
    "replay": ("replay", "produce a JSONL event log to Kafka in event-time order"),
    "demo": ("demo", "run the whole pipeline on the embedded stack and summarise"),
    "worker": ("worker", "run the stream processor (Faust worker) that emits alerts"),
    "ticker": ("ticker", "write clock ticks into every events partition"),
    "backtest": ("backtest", "run the detectors over a labelled event log and score them"),
    "alerts": ("alerts", "the alert service: serve, redrive"),
    "ingest": ("ingest", "tracking-feed receiver (serve) and historical imports (import)"),
    "liability": ("liability", "compensation-liability reports"),
    "config": ("config", "show the effective configuration (secrets masked)"),
    "bench": ("bench", "run the benchmark harness"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="logiwatch", description="Streaming logistics anomaly monitor.")
    parser.add_argument("--config", help="TOML settings file (default: $LOGIWATCH_CONFIG)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    parser.add_argument("--log-format", choices=["json", "text"], default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # also after the command (``logiwatch backtest --config F``); it overrides one given before
        p.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file (default: $LOGIWATCH_CONFIG)")
        mod = importlib.import_module(f"logiwatch.commands.{module}")
        mod.configure(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = {k: v for k, v in (("log_level", args.log_level), ("log_format", args.log_format)) if v}
        settings: Settings = load_settings(args.config, **overrides)
        configure_logging(
            settings.log_level,
            json=settings.log_format == "json",
            secrets=[settings.alerts.api_token.get_secret_value()]
            + [
                s.get_secret_value()
                for s in (
                    settings.ingest.aftership_secret,
                    settings.ingest.seventeentrack_key,
                    settings.ingest.kuaidi100_salt,
                )
                if s is not None
            ],
        )
        code = int(args._module.run(args, settings) or 0)
    except LogiwatchError as exc:
        print(f"logiwatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"logiwatch {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
