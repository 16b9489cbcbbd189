"""``logiwatch demo``: the whole pipeline on the embedded stack, live, then a summary.

The options only; what the demo does is :mod:`logiwatch.demo`
(:func:`~logiwatch.demo.run_demo`).
"""

from __future__ import annotations

import argparse

from logiwatch.commands.simulate import positive_float
from logiwatch.config import Settings
from logiwatch.demo import DEFAULT_RATE, MAX_PARCELS, MIN_PARCELS, DemoOptions, run_demo


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not MIN_PARCELS <= value <= MAX_PARCELS:
        raise argparse.ArgumentTypeError(f"must be {MIN_PARCELS}..{MAX_PARCELS}, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=positive_float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--parcels", type=_count, default=None, help="parcels to simulate (default: sized to the duration)"
    )
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        help=f"events per second (default: sized, about {DEFAULT_RATE:g})",
    )
    pace.add_argument(
        "--speed",
        type=positive_float,
        default=None,
        help="pace by event time instead: simulated seconds per second",
    )
    parser.add_argument(
        "--progress-every",
        type=positive_float,
        default=3.0,
        help="seconds between progress lines (default 3)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    options = DemoOptions(
        duration=args.duration,
        parcels=args.parcels,
        seed=args.seed,
        rate=args.rate,
        speed=args.speed,
        progress_every=args.progress_every,
        config=getattr(args, "config", None),
    )
    return run_demo(options, settings)
