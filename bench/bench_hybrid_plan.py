"""Benchmark of the hybrid plan on the demo (not a test): the measured error ratios, the plan, its cost.

Calibrates the demo once (cached under ``--out``), samples the search's activations like the
pipeline, then runs the hybrid smoothing (``search.act_mode: hybrid``: both modes measured for
every linear over the alpha grid, the plan chosen, each group's alpha searched for its modes).
Writes every unit's static / per-token error ratio, the plan (per-token linears, FLOP share),
the alphas and the wall / CPU seconds, with the CPU model and flags.

    python bench/bench_hybrid_plan.py [--set smooth.search.plan_threshold=8] [--result bench/results/hybrid_plan.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from bench_int8_gemm import cpu_facts  # type: ignore[import-not-found]

    from sq_trt.calibrate import stage as calibrate
    from sq_trt.pipeline.context import PipelineContext
    from sq_trt.pipeline.recipe import load_recipe
    from sq_trt.smooth.stage import smooth_model

    overrides = [f"work_dir={Path(args.out) / 'work'}", "smooth.search.act_mode=hybrid", *args.set]
    recipe = load_recipe(args.recipe, overrides)
    ctx = PipelineContext(recipe, progress=False)
    calib_dir = ctx.stage_dir("calibrate")
    if not (calib_dir / "manifest.json").is_file():
        calibrate.run(
            recipe.calibrate,
            loaded=ctx.original(),
            text=ctx.slices()[0],
            text_column=recipe.data.text_column,
            out=calib_dir,
            force=True,
            chunks=ctx.calibration_chunks(),
            progress=False,
        )
    config = recipe.smooth
    start = time.perf_counter(), time.process_time()
    inputs = ctx.search_inputs(config.search)
    capture = time.perf_counter() - start[0], time.process_time() - start[1]
    start = time.perf_counter(), time.process_time()
    result = smooth_model(copy.deepcopy(ctx.original().model), ctx.act_scales(), config, search_inputs=inputs)
    plan_time = time.perf_counter() - start[0], time.process_time() - start[1]
    assert result.plan is not None
    linears = {name: choice.to_json() for name, choice in result.plan.linears.items()}
    return {
        "cpu": cpu_facts(),
        "torch_threads": torch.get_num_threads(),
        "recipe": str(args.recipe),
        "overrides": overrides,
        "search": config.search.model_dump(mode="json"),
        "capture_wall_s": round(capture[0], 2),
        "capture_cpu_s": round(capture[1], 2),
        "plan_and_search_wall_s": round(plan_time[0], 2),
        "plan_and_search_cpu_s": round(plan_time[1], 2),
        "per_token_flops_share": round(result.plan.per_token_flops_share(), 4),
        "per_token_linears": result.plan.names("per_token"),
        "alphas": result.alphas,
        "linears": linears,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "builders" / "smollm2-135m.yaml"))
    parser.add_argument("--set", action="append", default=[], help="recipe override section.field=value")
    parser.add_argument("--out", default="/tmp/sq-trt-hybrid-bench")
    parser.add_argument("--result", type=Path, default=ROOT / "bench" / "results" / "hybrid_plan.json")
    args = parser.parse_args()
    payload = bench(args)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(payload, indent=2) + "\n")
    rows = sorted(
        payload["linears"].items(), key=lambda kv: -kv[1]["static_error"] / max(kv[1]["per_token_error"], 1e-30)
    )
    for name, entry in rows[:40]:
        ratio = entry["static_error"] / max(entry["per_token_error"], 1e-30)
        print(f"{ratio:10.2f}  {entry['act_mode']:10s}  {name}")
    summary = {k: v for k, v in payload.items() if k not in ("linears", "alphas")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
