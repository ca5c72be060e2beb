"""`sq-trt pipeline` with generation graphs on a tiny random Llama: export --with-past, generation engines
(TensorRT-RTX, when installed), generation accuracy in compare, the side-by-side in the report, the gate."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sq_trt.pipeline.recipe import load_recipe
from sq_trt.pipeline.stages import run_pipeline

RECIPE = Path(__file__).resolve().parents[2] / "builders" / "smollm2-135m.yaml"


def test_pipeline_generates_with_a_kv_cache_end_to_end(tmp_path):
    overrides = [
        "model.source=tiny:llama",
        "calibrate.samples=2",
        "calibrate.seq_len=32",
        "compare.samples=2",
        "compare.seq_len=32",
        "compare.generation_prompts=2",
        "compare.generation_tokens=4",
        "compare.layer_ranking=false",
        "export.with_past=true",
        "export.candidates=[{name: sq-per-token, encoding: portable}]",
        "build.generation={max_batch: 1, max_input: 32, max_context: 64}",
        "gate=['sq-per-token:teacher_forced_top1>=0.0']",
        f"work_dir={tmp_path / 'work'}",
        f"engines_dir={tmp_path / 'engines'}",
    ]
    result = run_pipeline(load_recipe(RECIPE, overrides), progress=False, log=lambda _: None)
    statuses = {r.name: r.status for r in result.reports}
    assert statuses["export/sq-per-token"] == "ran" and statuses["compare"] == "ran", statuses
    export = json.loads((tmp_path / "work" / "export" / "sq-per-token" / "manifest.json").read_text())
    assert export["extra"]["kv_cache"]["kv_heads"] == 2
    comparison = json.loads((tmp_path / "work" / "compare" / "comparison.json").read_text())
    generation = comparison["generation"]["sq-per-token"]
    assert generation["prompts"] == 2 and generation["new_tokens"] == 4
    assert 0.0 <= generation["teacher_forced_top1"] <= 1.0
    html = (tmp_path / "work" / "report" / "report.html").read_text()
    assert "Generated text: baseline vs candidate" in html
    built = [name for name, status in statuses.items() if name.startswith("build") and status == "ran"]
    if importlib.util.find_spec("tensorrt_rtx_libs") is not None:
        # TensorRT-RTX installed: the FP16 and the candidate engine, each with the generation profiles
        assert len(built) == 2, statuses
        manifest = json.loads(next((tmp_path / "engines").rglob("manifest.json")).read_text())
        record = next(iter(manifest["extra"]["engines"].values()))
        assert [p["name"] for p in record["profiles"]] == ["prefill", "decode"]
