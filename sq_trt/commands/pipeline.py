"""`sq-trt pipeline`: every stage from one recipe, reusing what has not changed."""

from __future__ import annotations

import argparse
from pathlib import Path

from sq_trt.pipeline.runner import STAGE_KINDS

HELP = "Run every stage from a recipe: calibrate -> smooth -> export -> build -> compare -> report."
DEFAULT_RECIPE = "builders/smollm2-135m.yaml"

DESCRIPTION = f"""\
{HELP}

Reads a pipeline recipe (YAML with `kind: pipeline`; default {DEFAULT_RECIPE}, the demo
model on the embedded text) and runs: load the model -> calibrate -> smooth (alpha or auto)
-> export the FP16 baseline and every INT8 candidate to ONNX -> build engines with the
backend that is available (TensorRT on a GPU host, else TensorRT-RTX on the CPU; graphs
with the per-token plugin need TensorRT proper and are skipped elsewhere, with the reason)
-> compare each candidate against the FP16 baseline (TensorRT engines on a GPU host, ONNX
Runtime otherwise) -> report. It ends with a table of the stages, the report's path and
the gate's verdict; the exit code is the gate's (0 pass, 3 fail; 1 for a user error).

A stage is reused when the recipe values it reads, the artifacts it consumes and its code
are unchanged (hashes recorded in <work>/.pipeline/), so a rerun after changing only the
gate or the report takes seconds. --from STAGE reruns that stage and all after it.

work directory (recipe `work_dir`, default work/<name>; --out DIR moves it):
  calibrate/  smooth/  export/<candidate>/  compare/  report/   (each with manifest.json)
  smooth-<hash8>/ (a candidate's own `smoothing:`, one per distinct config)
  .pipeline/<stage>.json (cache records)   pipeline_summary.json (the last run's table)
engines (recipe `engines_dir`, default engines/<name>; with --out, DIR/engines):
  <candidate>/<target>.plan + manifest.json, and fp16/ for the baseline

examples:
  sq-trt pipeline                                       # the demo, end to end
  sq-trt pipeline --set smooth.alpha=0.7                # reruns smooth and what follows
  sq-trt pipeline --set export.candidates.1.smoothing.search.grid=[0.8,0.9,1.0]   # that candidate's own smoothing
  sq-trt pipeline --set 'gate=["sq-per-token:ppl_increase_pct<=2"]'   # reruns the report only
  sq-trt pipeline --recipe builders/bert-base.yaml --set model.source=tiny:bert
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    parser.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        help=f"pipeline recipe (YAML, kind: pipeline; default {DEFAULT_RECIPE})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a recipe field (value parsed as YAML; repeatable), e.g. --set smooth.alpha=0.7, "
        "--set export.candidates.0.encoding=plugin",
    )
    parser.add_argument(
        "--from",
        dest="from_stage",
        choices=STAGE_KINDS,
        help="rerun this stage and every stage after it, even if their inputs are unchanged",
    )
    parser.add_argument("--force", action="store_true", help="rerun every stage (same as --from calibrate)")
    parser.add_argument(
        "--out",
        type=Path,
        help="put the work directory here (and engines under DIR/engines) instead of the recipe's",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (stage lines and the summary still print)"
    )


def run(args: argparse.Namespace) -> int:
    """Load the recipe, run the pipeline, print the summary; the gate decides the exit code."""
    from sq_trt.artifacts import claim_output
    from sq_trt.pipeline.recipe import load_recipe
    from sq_trt.pipeline.stages import run_pipeline

    overrides = list(args.overrides)
    if args.out is not None:
        overrides = [f"work_dir={args.out}", f"engines_dir={args.out / 'engines'}", *overrides]
    recipe = load_recipe(args.recipe, overrides)
    # One pipeline per work directory: a second one would overwrite the first's stages and report.
    claim_output(recipe.resolved_work_dir, force=True, what="work dir")
    claim_output(recipe.resolved_engines_dir, force=True, what="engines dir")
    result = run_pipeline(
        recipe, from_kind="calibrate" if args.force else args.from_stage, progress=not args.quiet
    )
    result.raise_if_gate_failed()
    return 0
