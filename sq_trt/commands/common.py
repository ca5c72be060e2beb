"""Reusable argument groups shared by the subcommands (Polygraphy-style)."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model`` and its loading switches."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="demo",
        help="hub id | local directory | .gguf file | 'demo' (SmolLM2-135M, default) | 'tiny:<family>'",
    )
    group.add_argument(
        "--local-files-only", action="store_true", help="never download; use only files already on disk"
    )
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code to run (off by default; only for models you trust)",
    )
    group.add_argument("--device", default="cpu", help="torch device for calibration/evaluation (cpu, cuda)")


def load_model_from_args(args: argparse.Namespace) -> Any:
    """Load the model named by the :func:`add_model_args` flags (``--model``, ``--device``...)."""
    from sq_trt.models.loading import load_model

    return load_model(
        args.model,
        local_files_only=args.local_files_only,
        trust_remote_code=args.trust_remote_code,
        device=args.device,
    )


def add_data_args(parser: argparse.ArgumentParser, *, seq_len: int = 512, samples: int = 32) -> None:
    """``--data`` and how it is cut into chunks."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default="embedded",
        help="'embedded' (CPython's pydoc text, default), a .txt/.json/.jsonl/.parquet file, "
        "or 'hub:<dataset>[:<config>][@<split>]'",
    )
    group.add_argument(
        "--text-column", default="text", help="field holding the text in json/parquet/hub data"
    )
    group.add_argument("--seq-len", type=int, default=seq_len, help=f"tokens per sample (default {seq_len})")
    group.add_argument("--samples", type=int, default=samples, help=f"number of samples (default {samples})")
    group.add_argument(
        "--calib-fraction",
        type=float,
        default=0.5,
        help="fraction of the text used for calibration; evaluation uses the rest (default 0.5)",
    )

