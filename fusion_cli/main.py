"""The `fusion` command line. Every command has `--help`.

One module per command group registers its subcommands; each imports what its command needs
(torch, Ray, the pipeline) only when that command runs, so `--help` and a bad config answer fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fusion.errors import FusionError
from fusion_cli import demo, model, monitor, run, sensors, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion", description="Perceiver sensor fusion.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (model, sensors, run, demo, train, monitor):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FusionError as err:  # the user's to fix: one line; anything else is a bug and keeps its traceback
        print(f"fusion: error: {err}", file=sys.stderr)
        return 2
