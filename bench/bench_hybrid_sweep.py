"""The hybrid plan's threshold on the demo (not a test): per-token share of FLOPs vs perplexity, PyTorch W8A8.

Measures every linear of the demo under both modes once (``measure_hybrid``: the hybrid smoothing's
cost), then for each rule setting decides the plan and the alphas (``decide_hybrid``), folds that
smoothing into a copy of the model, fake-quantizes it with the plan (the PyTorch W8A8 reference the
exports are tested against) and scores it on held-out text: the demo's evaluation slice (pydoc) and,
with ``--text``, the evaluation slice of another text (default: the GNU GPL v3, legal prose, never
used for calibration). Rows: every linear static (``force_per_tensor: ['*']``), thresholds with the
default 30 % budget, every linear per token (``force_per_token: ['*']``), and FP32.

    python bench/bench_hybrid_sweep.py [--thresholds 1.5 2 3 4 8] [--result bench/results/hybrid_sweep.json]

Run after the demo pipeline (it reuses ``work/smollm2-135m/calibrate``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _score(ctx: Any, measurements: Any, search: Any, chunks: dict[str, Any]) -> dict[str, Any]:
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.perplexity import perplexity
    from sq_trt.smooth.stage import SmoothConfig, decide_hybrid, smooth_model, smoothed_act_scales

    plan, alphas, _ = decide_hybrid(measurements, search)
    base = ctx.recipe.smooth
    # Fold exactly the decided alphas: numeric per-group overrides, no search.
    fold = SmoothConfig(alpha=0.5, include_optional=base.include_optional, overrides=tuple(alphas.items()))
    model = copy.deepcopy(ctx.original().model)
    result = smooth_model(model, ctx.act_scales(), fold)
    apply_fake_quant(model, smoothed_act_scales(ctx.act_scales(), result), act_mode="hybrid", plan=plan.modes())
    row: dict[str, Any] = {
        "per_token_linears": len(plan.names("per_token")),
        "per_token_flops_share": round(plan.per_token_flops_share(), 4),
    }
    for name, tokens in chunks.items():
        row[f"ppl_{name}"] = perplexity(model, tokens, progress=False)
    return row


def bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from bench_int8_gemm import cpu_facts  # type: ignore[import-not-found]

    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.pipeline.context import PipelineContext
    from sq_trt.pipeline.recipe import load_recipe
    from sq_trt.runtime.perplexity import perplexity
    from sq_trt.smooth.stage import measure_hybrid

    recipe = load_recipe(args.recipe, ["smooth.search.act_mode=hybrid", *args.set])
    ctx = PipelineContext(recipe, progress=False)
    tokenizer = ctx.original().tokenizer
    chunks = {"pydoc": tokenize_chunks(tokenizer, ctx.slices()[1], seq_len=512, max_chunks=args.samples)}
    if args.text:
        _, other = load_slices(args.text, calib_fraction=args.calib_fraction)
        chunks["other"] = tokenize_chunks(tokenizer, other, seq_len=512, max_chunks=args.samples)
    start = time.perf_counter(), time.process_time()
    measurements = measure_hybrid(ctx.original().model, ctx.act_scales(), recipe.smooth, ctx.search_inputs(recipe.smooth.search))
    measure = (time.perf_counter() - start[0], time.process_time() - start[1])
    search = recipe.smooth.search
    settings: dict[str, Any] = {"all static per tensor": {"force_per_tensor": ("*",)}}
    for threshold in args.thresholds:
        settings[f"hybrid, threshold {threshold:g}, budget {search.plan_budget:g}"] = {"plan_threshold": threshold}
    settings["all per token"] = {"force_per_token": ("*",)}
    rows = {}
    for label, update in settings.items():
        rows[label] = _score(ctx, measurements, search.model_copy(update=update), chunks)
        print(label, json.dumps(rows[label]))
    fp32 = {f"ppl_{name}": perplexity(ctx.original().model, tokens, progress=False) for name, tokens in chunks.items()}
    return {
        "cpu": cpu_facts(),
        "torch_threads": torch.get_num_threads(),
        "texts": {"pydoc": "embedded evaluation slice", "other": args.text},
        "tokens_per_text": {name: int(t.numel()) for name, t in chunks.items()},
        "measure_wall_s": round(measure[0], 1),
        "measure_cpu_s": round(measure[1], 1),
        "fp32": fp32,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "builders" / "smollm2-135m.yaml"))
    parser.add_argument("--set", action="append", default=[], help="recipe override section.field=value")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[1.5, 2.0, 3.0, 4.0, 8.0])
    parser.add_argument("--samples", type=int, default=8, help="512-token chunks scored per text")
    parser.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    parser.add_argument("--calib-fraction", type=float, default=0.05)
    parser.add_argument("--result", type=Path, default=ROOT / "bench" / "results" / "hybrid_sweep.json")
    args = parser.parse_args()
    payload = bench(args)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k != "cpu"}, indent=2))


if __name__ == "__main__":
    main()
