"""`sq-trt compare`: compare INT8 candidates against the FP16 baseline on held-out text (Polygraphy)."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_data_args, add_model_args

HELP = "Compare INT8 candidates against the FP16 baseline on held-out text (Polygraphy)."
DESCRIPTION = (
    HELP
    + """

Runs the baseline and every candidate with Polygraphy's Comparator on the evaluation
part of --data (the text after --calib-fraction: never the calibration text), one batch
at a time, and measures per output the max/mean/median/p99 absolute and relative error
and cosine similarity; for language models also top-1/top-5 next-token agreement with the
baseline, KL divergence of the next-token distributions and the perplexity of each.
The gate (--gate, repeatable) then decides the exit code: 0 passed, 3 failed (the
results are written either way), 1 for a user error.

runners (--baseline / --candidate NAME=SPEC):
  path/model.onnx             ONNX Runtime on CPU (per-token plugin nodes run as standard ops)
  path/engine.plan            TensorRT proper (GPU hosts)
  torch:<model>               the float PyTorch model (demo, tiny:llama, a directory)
  torch-w8a8:<smoothed dir>   W8A8 fake-quant reference, per-token activations
  torch-w8a8:<model>          naive W8A8 (no smoothing), per-token activations
  torch-w8a8-per-tensor:<dir> the same with calibrated per-tensor activations

gate conditions: [candidate:]metric OP value, OP one of <= < >= >; metrics: ppl,
ppl_increase_pct, top1_agreement, top5_agreement, kl_mean, kl_max, cosine,
row_cosine_mean, row_cosine_min, abs_max/mean/median/p99, rel_max/mean/median/p99.

saved results: the first --save-iterations batches keep every runner's full outputs as
Polygraphy RunResults JSON under OUT/iterations/ (a 512-token batch of SmolLM2 logits is
about 130 MB per runner in JSON); --load-results OUT replays them on any machine, e.g. a
TensorRT run from a GPU host compared here, optionally against live runners on the same inputs.

examples:
  sq-trt compare --baseline fp16=work/export/model.fp16.onnx \\
      --candidate int8=work/export/model.int8.onnx --out work/compare
  sq-trt compare --baseline fp16=engines/demo/fp16.plan --candidate int8=engines/demo/int8.plan \\
      --gate ppl_increase_pct<=1 --gate top1_agreement>=0.95 --out work/compare-gpu
  sq-trt compare --load-results work/compare-gpu --out work/compare-replay
  sq-trt compare --baseline torch:demo --candidate sq=torch-w8a8:work/smoothed \\
      --rank-layers work/smoothed --samples 4 --out work/compare-torch
"""
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Runners, data, gate, saving and layer-ranking arguments."""
    runners = parser.add_argument_group("runners")
    runners.add_argument("--baseline", help="[NAME=]SPEC of the baseline (default name 'baseline')")
    runners.add_argument(
        "--candidate", action="append", default=[], metavar="NAME=SPEC", help="a candidate (repeatable)"
    )
    runners.add_argument(
        "--load-results", metavar="DIR", help="replay the saved iterations of an earlier compare output"
    )
    add_model_args(parser)
    add_data_args(parser, seq_len=512, samples=32)
    parser.add_argument("--batch-size", type=int, default=1, help="samples per inference call (default 1)")
    gate = parser.add_argument_group("gate")
    gate.add_argument(
        "--gate", action="append", default=[], metavar="COND", help="e.g. ppl_increase_pct<=1 (repeatable)"
    )
    layers = parser.add_argument_group("per-layer ranking (PyTorch, leave-one-in)")
    layers.add_argument(
        "--rank-layers", metavar="MODEL", help="smoothed artifact dir or model source to rank layers on"
    )
    layers.add_argument("--rank-act-mode", choices=("per_token", "per_tensor"), default="per_token")
    layers.add_argument("--rank-samples", type=int, default=2, help="samples for the ranking (default 2)")
    layers.add_argument(
        "--rank-seq-len", type=int, default=256, help="tokens per ranking sample (default 256)"
    )
    gen = parser.add_argument_group("generation accuracy (generation graphs or engines: export --with-past)")
    gen.add_argument(
        "--generation-prompts",
        type=int,
        default=0,
        metavar="N",
        help="held-out prompts to generate from greedily with baseline and candidates (default 0: off); adds "
        "exact_match_rate, mean_first_divergence and teacher_forced_top1 (gate metrics too)",
    )
    gen.add_argument(
        "--generation-prompt-tokens", type=int, default=32, help="tokens per prompt (default 32)"
    )
    gen.add_argument(
        "--generation-tokens", type=int, default=32, help="tokens generated per prompt (default 32)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="compare artifact directory to write")
    out.add_argument(
        "--save-iterations",
        type=int,
        default=1,
        help="batches whose full outputs are saved (-1: all; default 1)",
    )
    out.add_argument("--force", action="store_true", help="replace --out if it exists")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the config from the flags, compare, print the summary; the gate sets the exit code."""
    from pathlib import Path

    from sq_trt.artifacts import check_writable_output
    from sq_trt.compare.stage import CompareConfig, compare_models
    from sq_trt.data import check_data_source
    from sq_trt.errors import GateFailedError
    from sq_trt.models.loading import check_device

    check_writable_output(args.out, force=args.force)
    check_data_source(args.data, local_files_only=args.local_files_only)
    check_device(args.device)
    config = CompareConfig(
        out=Path(args.out),
        baseline=args.baseline,
        candidates=list(args.candidate),
        model=args.model,
        data=args.data,
        text_column=args.text_column,
        calib_fraction=args.calib_fraction,
        seq_len=args.seq_len,
        samples=args.samples,
        batch_size=args.batch_size,
        save_iterations=args.save_iterations,
        gate=list(args.gate),
        load_results=Path(args.load_results) if args.load_results else None,
        rank_layers=args.rank_layers,
        rank_act_mode=args.rank_act_mode,
        rank_samples=args.rank_samples,
        rank_seq_len=args.rank_seq_len,
        device=args.device,
        generation_prompts=args.generation_prompts,
        generation_prompt_tokens=args.generation_prompt_tokens,
        generation_tokens=args.generation_tokens,
        progress=not args.no_progress,
        force=args.force,
    )
    try:
        compare_models(config)
    except GateFailedError:
        _print_summary(config.out)
        raise
    _print_summary(config.out)
    return 0


def _print_summary(out: object) -> None:
    from sq_trt.compare.results import load_comparison

    comparison = load_comparison(str(out))
    for entry in comparison["candidates"]:
        summary = comparison["metrics"][entry["name"]]["summary"]
        parts = [
            f"{key}={summary[key]:.5g}"
            for key in (
                "ppl",
                "ppl_increase_pct",
                "top1_agreement",
                "kl_mean",
                "cosine",
                "exact_match_rate",
                "mean_first_divergence",
                "teacher_forced_top1",
            )
            if key in summary
        ]
        print(f"{entry['name']}: " + " ".join(parts))
    verdict = "passed" if comparison["gate"]["passed"] else "FAILED"
    print(f"gate {verdict}; results in {out}")
