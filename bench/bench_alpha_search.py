"""Benchmark of the automatic alpha search on the demo (not a test): writes JSON into bench/results/.

Runs the smoothings of a pipeline recipe (the demo's: the shared per-token one and
sq-per-tensor's own) the way the pipeline does: one activation capture of the
unsmoothed model, then each smoothing's search and fold on a copy of it. Reports
wall and CPU seconds of the capture and of each search, and the chosen alphas, so
two versions of the search can be compared (``--compare-to`` checks the alphas are
identical, group by group).

    python bench/bench_alpha_search.py [--recipe builders/smollm2-135m.yaml] [--out /tmp/h16c-alpha] \
        [--label after] [--compare-to bench/results/alpha_search_before.json] \
        [--result bench/results/alpha_search.json]

The calibrate artifact is written once under ``--out`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from sq_trt.calibrate import stage as calibrate
    from sq_trt.models.registry import smoothing_groups
    from sq_trt.pipeline.context import PipelineContext
    from sq_trt.pipeline.recipe import load_recipe
    from sq_trt.pipeline.stages import smooth_stage_name
    from sq_trt.smooth.search import collect_group_inputs
    from sq_trt.smooth.stage import smooth_model

    recipe = load_recipe(args.recipe, [f"work_dir={Path(args.out) / 'work'}", *args.set])
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
    scales, chunks, original = ctx.act_scales(), ctx.calibration_chunks(), ctx.original().model
    searched = {smooth_stage_name(recipe, c): c for c in recipe.smoothings().values() if c.needs_search}
    first = next(iter(searched.values()))
    groups = smoothing_groups(original, include_optional=True)
    inputs, capture_wall, capture_cpu = _timed(
        lambda: collect_group_inputs(
            original,
            chunks,
            groups,
            samples=first.search.samples,
            tokens_per_sample=first.search.tokens_per_sample,
            progress=False,
        )
    )
    results: dict[str, Any] = {}
    for name, config in searched.items():

        def smooth_copy(config: Any = config) -> Any:
            return smooth_model(copy.deepcopy(original), scales, config, search_inputs=inputs)

        result, wall, cpu = _timed(smooth_copy)
        results[name] = {
            "config": config.model_dump(mode="json"),
            "search_and_fold_wall_s": round(wall, 2),
            "search_and_fold_cpu_s": round(cpu, 2),
            "alphas": result.alphas,
        }
    return {
        "label": args.label,
        "recipe": str(args.recipe),
        "torch_threads": torch.get_num_threads(),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "loadavg": os.getloadavg()},
        "capture_wall_s": round(capture_wall, 2),
        "capture_cpu_s": round(capture_cpu, 2),
        "smoothings": results,
    }


def compare(payload: dict[str, Any], reference_path: Path) -> list[str]:
    """The smoothings whose chosen alphas differ from the reference run's (empty: identical)."""
    reference = json.loads(reference_path.read_text())["smoothings"]
    return [
        name
        for name, entry in payload["smoothings"].items()
        if name not in reference or reference[name]["alphas"] != entry["alphas"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "builders" / "smollm2-135m.yaml"))
    parser.add_argument("--set", action="append", default=[], help="recipe override section.field=value")
    parser.add_argument("--out", default="/tmp/sq-trt-alpha-bench")
    parser.add_argument("--label", default="current")
    parser.add_argument("--compare-to", type=Path, default=None)
    parser.add_argument("--result", type=Path, default=ROOT / "bench" / "results" / "alpha_search.json")
    args = parser.parse_args()
    payload = bench(args)
    if args.compare_to is not None:
        differ = compare(payload, args.compare_to)
        payload["alphas_identical_to"] = {"file": str(args.compare_to), "identical": not differ, "differ": differ}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    summary = {k: v for k, v in payload.items() if k != "smoothings"}
    summary["searches"] = {
        name: (entry["search_and_fold_wall_s"], entry["search_and_fold_cpu_s"])
        for name, entry in payload["smoothings"].items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
