"""`sq-trt compare`: Compare an INT8 candidate against the FP16 baseline (Polygraphy)."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_model_args, not_built

HELP = "Compare an INT8 candidate against the FP16 baseline (Polygraphy)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    """Not built yet: raise a clear error instead of pretending."""
    raise not_built("compare", 6)
