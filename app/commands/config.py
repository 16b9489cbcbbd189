"""``logiwatch config show``: print the effective configuration, secrets masked."""

from __future__ import annotations

import argparse
import json

from logiwatch.config import Settings, masked


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"], help="what to do")


def run(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(masked(settings), indent=2, sort_keys=True))
    return 0
