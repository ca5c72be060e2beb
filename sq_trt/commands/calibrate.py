"""`sq-trt calibrate`: Record per-channel activation ranges of every quantizable linear (act_scales artifact)."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Record per-channel activation ranges of every quantizable linear (act_scales artifact)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("calibrate", 3)
