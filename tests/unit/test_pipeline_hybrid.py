"""`act_mode: hybrid` through the whole pipeline on a tiny Llama: plan, export, TensorRT-RTX engine, compare, report.

The demo recipe's sq-hybrid candidate with the tiny model's sizes. Tiny random weights have no
outlier tokens, so the plan's threshold is lowered and the down projections are forced per token:
the plan is mixed, which is what the export, the engine build and the report must carry through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sq_trt.pipeline.recipe import load_recipe
from sq_trt.pipeline.stages import run_pipeline

RECIPE = Path(__file__).resolve().parents[2] / "builders" / "smollm2-135m.yaml"
HYBRID = (
    "{name: sq-hybrid, act_mode: hybrid, smoothing: {alpha: auto, include_optional: true, "
    "search: {act_mode: hybrid, samples: 2, tokens_per_sample: 16, plan_threshold: 1.5, plan_budget: 0.5, "
    "force_per_token: ['*.down_proj']}}}"
)
TINY = [
    "model.source=tiny:llama",
    "calibrate.samples=2",
    "calibrate.seq_len=32",
    "compare.samples=2",
    "compare.seq_len=32",
    "build.profiles.0.seq=[1,32,64]",
    f"export.candidates=[{HYBRID}]",
    "gate=['sq-hybrid:ppl_increase_pct<=100']",
]


def _rtx_available() -> bool:
    try:
        import tensorrt_rtx_libs  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def run(module_tmp: Callable[[str], Path]) -> Any:
    root = module_tmp("hybrid")
    recipe = load_recipe(RECIPE, [*TINY, f"work_dir={root / 'work'}", f"engines_dir={root / 'engines'}"])
    result = run_pipeline(recipe, progress=False, log=lambda _: None)
    return root, result, {r.name: r.status for r in result.reports}


def test_the_plan_reaches_the_export_and_the_report(run: Any) -> None:
    root, _, statuses = run
    assert statuses["export/sq-hybrid"] == "ran"
    plan = json.loads((root / "work" / "export" / "sq-hybrid" / "quant_plan.json").read_text())
    modes = [entry["act_mode"] for entry in plan["linears"].values()]
    assert "per_token" in modes and "per_tensor" in modes
    assert all(plan["linears"][n]["act_mode"] == "per_token" for n in plan["linears"] if n.endswith("down_proj"))
    assert plan["smoothed"] and Path(plan["smoothed"]).name.startswith("smooth")
    report = json.loads((root / "work" / "report" / "report.json").read_text())
    entry = next(c for c in report["candidates"] if c["name"] == "sq-hybrid")
    assert entry["plan"]["linears"] == plan["linears"]
    markdown = (root / "work" / "report" / "report.md").read_text()
    assert "## Activation plan: static INT8 vs per token" in markdown
    assert "model.layers.0.mlp.down_proj" in markdown
    assert (root / "work" / "report" / "plots" / "plan_sq-hybrid.png").stat().st_size > 1000
    html = (root / "work" / "report" / "report.html").read_text()
    assert "Activation plan: static INT8 vs per token" in html


@pytest.mark.skipif(not _rtx_available(), reason="TensorRT-RTX (the rtx extra) is not installed")
def test_tensorrt_rtx_builds_the_hybrid_engine(run: Any) -> None:
    root, _, statuses = run
    assert statuses["build/sq-hybrid"] == "ran"
    assert (root / "engines" / "sq-hybrid" / "rtx.plan").stat().st_size > 0
