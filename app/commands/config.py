"""``logiwatch config show``: print the effective configuration, secrets masked; ``config knobs``:
every detector knob with its default and the value in effect."""

from __future__ import annotations

import argparse
import json

from logiwatch.config import Settings, detector_knobs, masked


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=["show", "knobs"], help="show: the settings; knobs: every detector knob, default and value"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "knobs":
        print(json.dumps(detector_knobs(settings), indent=2, sort_keys=True))
        return 0
    print(json.dumps(masked(settings), indent=2, sort_keys=True))
    return 0
