"""``logiwatch worker``: not built yet (see the open issues)."""

from __future__ import annotations

import argparse

from logiwatch.config import Settings
from logiwatch.errors import LogiwatchError


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    raise LogiwatchError("'worker' is not implemented yet")
