"""Benchmark: W8A8 perplexity of SmoothQuant variants vs FP32 and NVIDIA ModelOpt, plus stage costs.

Not a test. Runs on the demo model (SmolLM2-135M) with the embedded text:
calibration = the first half (``--calib-samples`` x ``--seq-len`` tokens), evaluation =
held-out chunks of the second half. Every W8A8 row uses sq-trt's fake-quant
reference (INT8 per-channel weights; activations per token or per tensor static).
The stage costs (wall time, peak RSS) come from running ``sq-trt calibrate`` and
``sq-trt smooth`` as child processes.

Results go to ``bench/results/smoothquant.json`` (rewritten after every row).

Usage::

    python bench/bench_smoothquant.py                      # everything (~30-40 min on 2 cores)
    python bench/bench_smoothquant.py --rows fp32 sq_auto_pairs --skip-stage-costs
    python bench/bench_smoothquant.py --eval-samples 8     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sq_trt.artifacts import ActScales
from sq_trt.calibrate.stage import calibrate
from sq_trt.data import check_disjoint, load_slices, tokenize_chunks
from sq_trt.models.loading import load_model
from sq_trt.models.registry import smoothing_groups
from sq_trt.quant.fakequant import apply_fake_quant
from sq_trt.runtime.perplexity import perplexity
from sq_trt.smooth.search import collect_group_inputs
from sq_trt.smooth.stage import AlphaSearchConfig, SmoothConfig, smooth_model, smoothed_act_scales

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "smoothquant.json"

# name -> (smoothing: None | (alpha, include_optional), act_mode | "fp32" | "modelopt:<cfg>")
ROWS: dict[str, tuple[Any, str]] = {
    # Ordered so that an interrupted run has the most telling rows first.
    "fp32": (None, "fp32"),
    "sq_auto_pairs_per_token": (("auto", True), "per_token"),
    "sq_auto_pairs_per_tensor": (("auto", True), "per_tensor"),
    "w8a8_per_token": (None, "per_token"),
    "w8a8_per_tensor": (None, "per_tensor"),
    "modelopt_int8_smoothquant": (None, "modelopt:INT8_SMOOTHQUANT_CFG"),
    "modelopt_int8_default": (None, "modelopt:INT8_DEFAULT_CFG"),
    "sq_0.5_per_token": ((0.5, False), "per_token"),
    "sq_0.5_per_tensor": ((0.5, False), "per_tensor"),
    "sq_0.5_pairs_per_token": ((0.5, True), "per_token"),
    "sq_0.5_pairs_per_tensor": ((0.5, True), "per_tensor"),
    "sq_auto_per_token": (("auto", False), "per_token"),
    "sq_auto_per_tensor": (("auto", False), "per_tensor"),
}


def _run_child(command: list[str]) -> dict[str, Any]:
    """Run a command, returning its wall time and peak RSS (its own, via wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{output[-3000:]}")
    stage_lines = [line for line in output.splitlines() if line.startswith("[")]
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "command": " ".join(command),
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "log": stage_lines,
    }


def stage_costs(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Wall time and peak RSS of ``sq-trt calibrate`` and ``sq-trt smooth`` (alpha 0.5 and auto)."""
    cli = [sys.executable, "-m", "sq_trt"]
    scales = work / "act_scales"
    common = ["--model", args.model, "--no-progress", "--force"]
    costs = {
        "calibrate": _run_child(
            [
                *cli,
                "calibrate",
                *common,
                "--samples",
                str(args.calib_samples),
                "--seq-len",
                str(args.seq_len),
                "--out",
                str(scales),
            ]
        ),
        "smooth_alpha_0.5": _run_child(
            [*cli, "smooth", *common, "--act-scales", str(scales), "--out", str(work / "smoothed")]
        ),
        "smooth_auto_pairs": _run_child(
            [
                *cli,
                "smooth",
                *common,
                "--act-scales",
                str(scales),
                "--alpha",
                "auto",
                "--smooth-linear-pairs",
                "--out",
                str(work / "smoothed_auto"),
            ]
        ),
    }
    return costs


def modelopt_perplexity(
    config_name: str, args: argparse.Namespace, calib: torch.Tensor, evaluation: torch.Tensor
) -> dict[str, Any]:
    """Quantize a fresh model with ModelOpt's preset (fake quant, CPU) and evaluate it."""
    import modelopt
    import modelopt.torch.quantization as mtq

    loaded = load_model(args.model)
    start = time.perf_counter()

    def forward_loop(model: Any) -> None:
        for row in calib:
            model(input_ids=row[None], use_cache=False)

    mtq.quantize(loaded.model, getattr(mtq, config_name), forward_loop)
    quantize_s = time.perf_counter() - start
    ppl = perplexity(loaded.model, evaluation, desc=config_name)
    return {"perplexity": ppl, "quantize_s": round(quantize_s, 1), "modelopt_version": modelopt.__version__}


def sq_perplexity(
    smoothing: Any,
    act_mode: str,
    args: argparse.Namespace,
    scales: ActScales,
    calib: torch.Tensor,
    evaluation: torch.Tensor,
) -> dict[str, Any]:
    """Smooth (optionally) a fresh model, fake-quantize it W8A8 and evaluate it."""
    loaded = load_model(args.model)
    row: dict[str, Any] = {}
    use_scales = scales
    if smoothing is not None:
        alpha, include_optional = smoothing
        config = SmoothConfig(
            alpha=alpha,
            include_optional=include_optional,
            search=AlphaSearchConfig(act_mode=act_mode, samples=args.search_samples),
        )
        start = time.perf_counter()
        search_inputs = None
        if config.needs_search:
            groups = smoothing_groups(loaded.model, include_optional=include_optional)
            search_inputs = collect_group_inputs(
                loaded.model, calib, groups, samples=config.search.samples, progress=False
            )
        result = smooth_model(loaded.model, scales, config, search_inputs=search_inputs)
        row["smooth_s"] = round(time.perf_counter() - start, 1)
        use_scales = smoothed_act_scales(scales, result)
        if alpha == "auto":
            row["alphas"] = result.alphas
    exclude = args.exclude if act_mode == "per_tensor" else []
    replaced = apply_fake_quant(loaded.model, use_scales, act_mode=act_mode, exclude=exclude)
    row["quantized_linears"] = len(replaced)
    row["perplexity"] = perplexity(loaded.model, evaluation, desc=act_mode)
    return row


def markdown_table(report: dict[str, Any]) -> str:
    """The rows of a results JSON as a markdown table (for docs/benchmarks/smoothquant.md)."""
    lines = ["| row | activations | perplexity | vs FP32 | alphas |", "|---|---|---:|---:|---|"]
    for name in sorted(report["rows"], key=lambda n: list(ROWS).index(n) if n in ROWS else len(ROWS)):
        row = report["rows"][name]
        alphas = row.get("alphas")
        summary = ""
        if alphas:
            values = sorted(alphas.values())
            summary = f"median {values[len(values) // 2]:g}, range {values[0]:g}-{values[-1]:g}"
        change = row.get("vs_fp32_pct")
        lines.append(
            f"| {name} | {row['act_mode']} | {row['perplexity']:.3f} | "
            f"{'' if change is None else f'{change:+.2f}%'} | {summary} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--search-samples", type=int, default=4)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument(
        "--exclude", nargs="*", default=[], help="linears (globs) kept float in per_tensor rows"
    )
    parser.add_argument("--skip-stage-costs", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch dir for CLI artifacts (default: a temp dir)"
    )
    parser.add_argument("--table", action="store_true", help="print --out as a markdown table and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return 0

    torch.manual_seed(0)
    loaded = load_model(args.model)
    calib_slice, eval_slice = load_slices()
    calib = tokenize_chunks(
        loaded.tokenizer, calib_slice, seq_len=args.seq_len, max_chunks=args.calib_samples
    )
    evaluation = tokenize_chunks(
        loaded.tokenizer, eval_slice, seq_len=args.seq_len, max_chunks=args.eval_samples
    )
    check_disjoint(calib, evaluation)
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model,
        "calibration": {
            "samples": int(calib.shape[0]),
            "seq_len": args.seq_len,
            "data": calib_slice.describe(),
        },
        "evaluation": {
            "samples": int(evaluation.shape[0]),
            "seq_len": args.seq_len,
            "tokens": int(evaluation.numel()),
            "data": eval_slice.describe(),
        },
        "per_tensor_exclude": args.exclude,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "rows": {},
    }
    if args.out.is_file():
        previous = json.loads(args.out.read_text())
        if previous.get("evaluation", {}).get("tokens") == report["evaluation"]["tokens"]:
            report["rows"] = previous.get("rows", {})
            report["stage_costs"] = previous.get("stage_costs")

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, args.out)

    if args.rows:
        start = time.perf_counter()
        scales = calibrate(loaded, calib)
        print(f"calibrated in {time.perf_counter() - start:.1f} s")
    del loaded
    for name in args.rows:
        smoothing, mode = ROWS[name]
        start = time.perf_counter()
        if mode == "fp32":
            row = {"perplexity": perplexity(load_model(args.model).model, evaluation, desc="fp32")}
        elif mode.startswith("modelopt:"):
            row = modelopt_perplexity(mode.split(":", 1)[1], args, calib, evaluation)
        else:
            row = sq_perplexity(smoothing, mode, args, scales, calib, evaluation)
        row["act_mode"] = mode
        row["wall_s"] = round(time.perf_counter() - start, 1)
        if "fp32" in report["rows"] and name != "fp32":
            row["vs_fp32_pct"] = round(
                100 * (row["perplexity"] / report["rows"]["fp32"]["perplexity"] - 1), 2
            )
        report["rows"][name] = row
        save()
        print(f"{name}: perplexity {row['perplexity']:.3f} ({row['wall_s']} s)", flush=True)
    if not args.skip_stage_costs:
        # Child processes of the real CLI: their own wall time and peak RSS.
        with tempfile.TemporaryDirectory(prefix="sq-trt-bench-") as scratch:
            report["stage_costs"] = stage_costs(args.work or Path(scratch), args)
        save()
        print(json.dumps(report["stage_costs"], indent=2))
    print(
        f"results in {args.out}; peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
