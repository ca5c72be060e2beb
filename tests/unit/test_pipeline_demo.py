"""The demo recipe on the real SmolLM2-135M, with reduced sizes: one smoothed per-token candidate, end to end.

Sizes are cut so the test fits the CI budget: 4 calibration samples of 128
tokens, 2 evaluation samples of 128 tokens, one candidate, no engine build
(TensorRT-RTX builds of the demo's ONNX are covered by the build stage's own
tests; the tiny-model pipeline test covers the pipeline's build stage). The run
shares the session's float graphs (``demo_float_graphs``): the smoothed model's
export swaps its weights into the demo's one trace instead of tracing again, as a
pipeline run does for every model of an architecture after the first.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from sq_trt.pipeline.recipe import load_recipe
from sq_trt.pipeline.stages import run_pipeline

RECIPE = Path(__file__).resolve().parents[2] / "builders" / "smollm2-135m.yaml"
REDUCED = [
    "calibrate.samples=4",
    "calibrate.seq_len=128",
    "compare.samples=2",
    "compare.seq_len=128",
    "build.backend=none",
    "export.candidates=[{name: sq-per-token, smooth: true, act_mode: per_token, encoding: portable}]",
    # 254 predicted tokens are a noisy perplexity; the full-size figures are in docs/benchmarks/pipeline.md
    # (sq-per-token +0.72 to +1.26 %, top-1 94.0-95.5 %, 2026-11-23..12-03, AVX2 and AVX-512 EPYC; this
    # reduced run's own figures are not recorded). Same bounds as test_compare_demo's naive W8A8 on these
    # tokens; a collapsed quantizer (per-tensor-like: +92-103 %, top-1 58-61 %) fails.
    "gate=['sq-per-token:ppl_increase_pct<=10', 'sq-per-token:top1_agreement>=0.8']",
]


@pytest.mark.integration
def test_demo_recipe_end_to_end_then_cached(
    demo_float_graphs: Any, demo_naive_export: Path, tmp_path: Path
) -> None:
    # demo_naive_export: the session's FP16 trace of the demo exists (made now if no test made it yet).
    recipe = load_recipe(
        RECIPE, [*REDUCED, f"work_dir={tmp_path / 'work'}", f"engines_dir={tmp_path / 'engines'}"]
    )
    first = run_pipeline(recipe, progress=False, log=lambda _: None, float_graphs=demo_float_graphs)
    # The smoothed candidate's float graph is the session's trace with its weights swapped in.
    assert (first.float_graphs["traces"], first.float_graphs["reused"]) == (0, 1), first.float_graphs
    statuses = {r.name: r.status for r in first.reports}
    for stage in ("calibrate", "smooth", "export/sq-per-token", "compare", "report"):
        assert statuses[stage] == "ran", statuses
    assert statuses["build/sq-per-token"] == "skipped"
    assert first.gate_passed is True, first.gate_detail
    assert first.report_path is not None and first.report_path.is_file()

    comparison = json.loads((tmp_path / "work" / "compare" / "comparison.json").read_text())
    summary = comparison["metrics"]["sq-per-token"]["summary"]
    # FP16 baseline of SmolLM2 on held-out pydoc text (DESIGN.md: 12.05 at 512): on these 2 x 128 tokens (the
    # same as test_compare_demo's) ~22, not recorded but ~3 % under its W8A8 runs' 23.11 / 23.76 (2026-11-23).
    # A sanity band: a misloaded model lands in the hundreds or more, one that sees the next token
    # (no causal mask) near 1.
    assert 5.0 < summary["ppl_baseline"] < 40.0
    assert math.isfinite(summary["ppl"])

    start = time.perf_counter()
    cached = run_pipeline(recipe, progress=False, log=lambda _: None, float_graphs=demo_float_graphs)
    elapsed = time.perf_counter() - start
    assert {r.status for r in cached.reports} <= {"reused", "skipped"}
    # The product goal ("cached rerun under 30 s", pipeline.md); measured 0.63 s from a new shell on an idle
    # machine (2026-11-23, a4b1682). A stage that reran fails the status check above; this bound fails only
    # reuse checks that do stage-sized work (a trace 65-93 s, calibration 30-80 s), not a second or two.
    assert elapsed < 30.0, f"cached rerun took {elapsed:.1f} s"
