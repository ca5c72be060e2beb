"""`sq-trt compare`: compare INT8 candidates against the FP16 baseline on held-out text (Polygraphy)."""

from __future__ import annotations

import argparse

from sq_trt.commands.common import add_config_args, add_data_args, add_model_args
from sq_trt.stage_config import ACT_MODE_CHOICES, normalize_act_mode

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
    from sq_trt.compare.config import CompareOptions

    add_model_args(parser, dtype=False)
    add_data_args(parser, sizes=False)
    # The fields of CompareOptions (the recipe's compare section): flags, defaults and bounds come from it.
    add_config_args(
        parser.add_argument_group("held-out text"), CompareOptions, ("samples", "seq_len", "batch_size")
    )
    gate = parser.add_argument_group("gate")
    gate.add_argument(
        "--gate", action="append", default=[], metavar="COND", help="e.g. ppl_increase_pct<=1 (repeatable)"
    )
    layers = parser.add_argument_group("per-layer ranking (PyTorch, leave-one-in)")
    layers.add_argument(
        "--rank-layers", metavar="MODEL", help="smoothed artifact dir or model source to rank layers on"
    )
    layers.add_argument(
        "--rank-act-mode",
        choices=ACT_MODE_CHOICES,
        type=normalize_act_mode,
        default="per_token",
        help="activation mode of the ranking (default per_token)",
    )
    add_config_args(layers, CompareOptions, ("rank_samples", "rank_seq_len"))
    gen = parser.add_argument_group("generation accuracy (generation graphs or engines: export --with-past)")
    add_config_args(
        gen, CompareOptions, ("generation_prompts", "generation_prompt_tokens", "generation_tokens")
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="compare artifact directory to write")
    add_config_args(out, CompareOptions, ("save_iterations",))
    out.add_argument("--force", action="store_true", help="replace --out if it exists")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the config from the flags, compare, print the summary; the gate sets the exit code."""

    from sq_trt.artifacts import claim_output
    from sq_trt.commands.common import config_from_args
    from sq_trt.compare.stage import CompareConfig, compare_models
    from sq_trt.data import check_data_source
    from sq_trt.errors import GateFailedError
    from sq_trt.models.loading import check_device

    specs = [args.baseline, *args.candidate] if args.baseline else list(args.candidate)
    # NAME=SPEC, SPEC = a file or torch[-w8a8...]:<model>: the path part of each, and the replayed results.
    paths = tuple(spec.split("=", 1)[-1].split(":", 1)[-1] for spec in specs if spec)
    claim_output(args.out, force=args.force, inputs=(args.model, args.data, args.load_results, *paths))
    check_data_source(args.data, local_files_only=args.local_files_only)
    check_device(args.device)
    config = config_from_args(
        CompareConfig,
        args,
        candidates=list(args.candidate),
        gate=list(args.gate),
        progress=not args.no_progress,
    )
    try:
        compare_models(config)
    except GateFailedError:
        _print_summary(config.out)
        raise
    _print_summary(config.out)
    return 0


def _print_summary(out: object) -> None:
    from sq_trt.artifacts.comparison import load_comparison

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
