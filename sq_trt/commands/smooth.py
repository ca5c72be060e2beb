"""`sq-trt smooth`: Apply SmoothQuant: fold per-channel factors into norms and linears (smoothed checkpoint)."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Apply SmoothQuant: fold per-channel factors into norms and linears (smoothed checkpoint)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("smooth", 3)
