"""`sq-trt pipeline`: Run every stage from a recipe: calibrate -> smooth -> export -> build -> compare -> report."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Run every stage from a recipe: calibrate -> smooth -> export -> build -> compare -> report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("pipeline", 7)
