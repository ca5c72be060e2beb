"""`sq-trt eval`: FP32 perplexity of a model on held-out text."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_data_args, add_model_args

HELP = "Perplexity of the (unquantized) model on the held-out evaluation slice of the text."
DESCRIPTION = (
    HELP
    + "\n\nThe evaluation slice is the part of --data after --calib-fraction (never the calibration part). "
    "Example: sq-trt eval --model demo --samples 16 --seq-len 512"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and data arguments."""
    add_model_args(parser)
    add_data_args(parser, seq_len=512, samples=16)
    parser.add_argument("--batch-size", type=int, default=4, help="chunks per forward pass (default 4)")


def run(args: argparse.Namespace) -> int:
    """Load, tokenize the evaluation slice, print the perplexity."""
    from sq_trt.commands.common import data_config_from_args, load_model_from_args
    from sq_trt.data import check_data_source, load_slices, tokenize_chunks
    from sq_trt.errors import ConfigError
    from sq_trt.models.loading import check_seq_len
    from sq_trt.runtime.perplexity import perplexity

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    data = data_config_from_args(args)
    check_data_source(data.source, local_files_only=args.local_files_only)
    loaded = load_model_from_args(args)
    check_seq_len(loaded.model, args.seq_len)
    if loaded.spec.kind != "decoder":
        raise ConfigError(f"perplexity needs a causal LM; {args.model!r} is a {loaded.spec.family} encoder")
    _, evaluation = load_slices(data.source, text_column=data.text_column, calib_fraction=data.calib_fraction)
    chunks = tokenize_chunks(loaded.tokenizer, evaluation, seq_len=args.seq_len, max_chunks=args.samples)
    ppl = perplexity(loaded.model, chunks, batch_size=args.batch_size)
    print(
        f"{args.model}: FP32 perplexity {ppl:.3f} on {chunks.numel()} held-out tokens "
        f"({chunks.shape[0]} x {chunks.shape[1]}) of {args.data!r}"
    )
    return 0
