"""The stages of ``sq-trt pipeline``, planned from a recipe.

:func:`plan_stages` turns a :class:`~sq_trt.pipeline.recipe.Recipe` into the ordered
:class:`~sq_trt.pipeline.runner.Stage` list that :func:`sq_trt.pipeline.runner.run_stages`
runs or reuses; :func:`run_pipeline` does both and returns the verdict. Each
stage calls its stage module's Python API (never the CLI) and declares the
recipe values it reads, so only a change to those values reruns it:

==================  =========================================  =====================================
stage               reads                                      writes
==================  =========================================  =====================================
calibrate           model, data, calibrate                     ``<work>/calibrate``
smooth              smooth (+ calibrate's artifact)            ``<work>/smooth``
smooth-<hash8>      a candidate's own smoothing (+ calibrate)  ``<work>/smooth-<hash8>`` (one per distinct config)
export/<cand>       export.exclude/opset, the candidate        ``<work>/export/<cand>``
build/<cand>        build                                      ``<engines>/<cand>`` (``<target>.plan``)
compare             compare, data (+ every export / engine)    ``<work>/compare``
report              gate, report (+ compare's artifact)        ``<work>/report``
==================  =========================================  =====================================

The builds are parallel stages: TensorRT-RTX builds run several at a time, each in its own
process (:func:`build_jobs`, ``Recipe.build_jobs``).
"""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt.compare.config import CompareOptions
from sq_trt.pipeline.context import BuildPlan, PipelineContext, model_identity
from sq_trt.pipeline.recipe import Candidate, Recipe, smoothing_key
from sq_trt.pipeline.runner import Stage, StageReport, StageSkipped

if TYPE_CHECKING:
    import torch

    from sq_trt.artifacts.act_scales import ActScales
    from sq_trt.export.qdq import Encoding
    from sq_trt.export.stage import FloatGraphs
    from sq_trt.smooth.config import SmoothConfig

# ----------------------------------------------------------------------------- calibrate and smooth


def _run_calibrate(ctx: PipelineContext, path: Path) -> None:
    from sq_trt.calibrate import stage as calibrate

    loaded = ctx.calibration_model()
    check_recipe_positions(ctx.recipe, loaded.model)
    check_recipe_overrides(ctx.recipe, loaded.model)  # a typo fails before calibrating, not after
    calibrate.run(
        ctx.recipe.calibrate,
        loaded=loaded,
        text=ctx.slices()[0],
        text_column=ctx.recipe.data.text_column,
        out=path,
        force=True,
        chunks=ctx.calibration_chunks(),
        progress=ctx.progress,
    )


def check_recipe_positions(recipe: Recipe, model: Any) -> None:
    """Refuse sequence lengths past the model's positions (calibration, comparison, engine profiles).

    Checked when the model is first loaded, before calibrating: an engine profile the model
    cannot embed would otherwise fail (or silently wrap) after every earlier stage ran.

    Raises:
        ConfigError: Naming the field and the model's limit.
    """
    from sq_trt.models.loading import check_seq_len_limit, max_positions

    _check_positions(recipe, max_positions(model), check_seq_len_limit)


def _check_positions(recipe: Recipe, limit: int | None, check: Any) -> None:
    check(limit, recipe.calibrate.seq_len, "calibrate.seq_len")
    check(limit, recipe.compare.seq_len, "compare.seq_len")
    for index, profile in enumerate(recipe.build.profiles):
        check(limit, max(profile.seq), f"build.profiles.{index}.seq")


def check_recipe_overrides(recipe: Recipe, model: Any) -> None:
    """Refuse ``overrides`` patterns (the smooth section's or a candidate's) that match no smoothing group of ``model``.

    Raises:
        ConfigError: Naming the pattern (see :func:`sq_trt.smooth.stage.check_override_patterns`).
    """
    from sq_trt.models.registry import smoothing_groups
    from sq_trt.smooth.stage import check_override_patterns

    for config in {smoothing_key(recipe.smooth): recipe.smooth, **recipe.smoothings()}.values():
        groups = smoothing_groups(model, include_optional=config.include_optional)
        check_override_patterns(config, [group.name for group in groups])


def preflight(recipe: Recipe, work_dir: Path, engines_dir: Path) -> None:
    """Check what can be checked without a model before the first stage runs.

    Costs what it checks: the positions come from the model's ``config.json`` (or GGUF header,
    or the tiny family's table), never through torch or transformers. Whether the device is
    present is asked by the model's loading, in the first stage that runs and needs it (a
    run whose stages are all reused needs none).

    Raises:
        SqTrtError: An output directory that cannot be written, a data source that is
            missing or forbidden by ``local_files_only``, or a device string torch would refuse.
    """
    from sq_trt.artifacts import check_writable_output
    from sq_trt.data import check_data_source
    from sq_trt.models.loading import (
        check_device_name,
        check_seq_len_limit,
        source_max_positions,
        source_skeleton,
    )

    check_writable_output(work_dir, what="work dir")
    check_writable_output(engines_dir, what="engines dir")
    check_data_source(recipe.data.source, local_files_only=recipe.model.local_files_only)
    check_device_name(recipe.model.device)
    limit = source_max_positions(recipe.model.source, trust_remote_code=recipe.model.trust_remote_code)
    _check_positions(recipe, limit, check_seq_len_limit)
    if recipe.smooth.overrides or any(config.overrides for config in recipe.smoothings().values()):
        skeleton = source_skeleton(recipe.model.source, trust_remote_code=recipe.model.trust_remote_code)
        if skeleton is not None:
            check_recipe_overrides(recipe, skeleton)


SHARED_SMOOTH = "smooth"


def smooth_stage_name(recipe: Recipe, config: SmoothConfig) -> str:
    """The stage (and work directory) of one smoothing: ``smooth`` for the recipe's section, else ``smooth-<hash8>``.

    Named by the config's canonical hash, so candidates with equal smoothing share one
    stage, and going back to an earlier smoothing finds its artifact still there.
    """
    key = smoothing_key(config)
    if key == smoothing_key(recipe.smooth):
        return SHARED_SMOOTH
    return f"{SHARED_SMOOTH}-{key.removeprefix('sha256:')[:8]}"


def candidate_smooth_stage(recipe: Recipe, candidate: Candidate) -> str | None:
    """The smooth stage a candidate exports from (None: naive, the original model)."""
    config = candidate.smooth_config(recipe.smooth)
    return smooth_stage_name(recipe, config) if config is not None else None


def _primary_smoothed(recipe: Recipe) -> tuple[Candidate | None, str | None]:
    """The smoothed candidate the report's activation picture and the layer ranking show, and its smooth stage.

    The first one on the recipe's shared smoothing, else the first smoothed candidate; ``(None, None)``
    when every candidate is naive.
    """
    smoothed = [c for c in recipe.export.candidates if c.smooth]
    shared = [c for c in smoothed if candidate_smooth_stage(recipe, c) == SHARED_SMOOTH]
    primary = next(iter(shared or smoothed), None)
    return primary, (candidate_smooth_stage(recipe, primary) if primary is not None else None)


def _run_smooth(ctx: PipelineContext, config: SmoothConfig, name: str, path: Path) -> None:
    from sq_trt.smooth import stage as smooth

    scales = ctx.act_scales()
    chunks = ctx.calibration_chunks()
    if ctx.recipe.model.offload:
        _run_smooth_offloaded(ctx, path, config, scales, chunks, purpose=name)
        return
    original = ctx.original()
    loaded = copy.copy(original)
    loaded.model = copy.deepcopy(original.model)  # the unsmoothed model stays for naive candidates
    smooth.run(
        config,
        loaded=loaded,
        scales=scales,
        chunks=chunks,
        out=path,
        force=True,
        progress=ctx.progress,
        # Every search of the run samples the same unsmoothed activations: captured once.
        search_inputs=ctx.search_inputs(config.search) if config.needs_sampling else None,
    )


def _run_smooth_offloaded(
    ctx: PipelineContext,
    path: Path,
    config: SmoothConfig,
    scales: ActScales,
    chunks: torch.Tensor,
    *,
    purpose: str = SHARED_SMOOTH,
) -> None:
    """The smooth stage with one decoder layer in memory at a time (numeric alphas only)."""
    from sq_trt.errors import ArtifactError
    from sq_trt.models.offload import smooth_offloaded
    from sq_trt.smooth.config import PROBE_TOKENS
    from sq_trt.smooth.stage import check_equivalence, reference_outputs, save_smoothed, smoothed_act_scales

    loaded = ctx.load_offloaded(purpose)
    if loaded.fingerprint() != scales.meta.get("model_fingerprint"):
        raise ArtifactError(
            f"{ctx.stage_dir('calibrate')} was calibrated on other weights than {loaded.source!r}; "
            "rerun with --from calibrate"
        )
    probe = chunks[:1, :PROBE_TOKENS]  # the same probe as sq-trt smooth
    reference = reference_outputs(loaded.model, probe)
    result = smooth_offloaded(loaded, scales, config)
    check_equivalence(loaded.model, probe, reference)
    save_smoothed(
        path,
        loaded,
        result,
        smoothed_act_scales(scales, result),
        force=True,
        config=config,
        source_fingerprint=scales.meta.get("model_fingerprint"),
    )


# ----------------------------------------------------------------------------- plan


# The stage adapters themselves are part of every stage's code: changing how a stage is called may change its artifact.
_ADAPTERS = ("sq_trt.pipeline.stages", "sq_trt.pipeline.context")


def _candidate_config(candidate: Candidate) -> dict[str, Any]:
    return candidate.model_dump(mode="json")


def candidate_encoding(ctx: PipelineContext, candidate: Candidate) -> Encoding:
    """The per-token encoding a candidate exports: ``auto`` follows the run's engine builder.

    TensorRT proper hosts the sq-trt plugins, so it gets ``fused-gemm`` (its INT8 GEMM is the
    plugin's own); TensorRT-RTX cannot, and no build at all compares in ONNX Runtime, so
    those get ``portable`` (:func:`sq_trt.export.config.resolve_encoding`, as ``sq-trt export``).
    """
    from sq_trt.export.config import resolve_encoding

    if candidate.encoding != "auto" or candidate.act_mode == "per_tensor":
        return resolve_encoding(candidate.encoding, candidate.act_mode, plugins=False)
    backend = ctx.build_plan().backend
    return resolve_encoding("auto", "per_token", plugins=backend is not None and backend.supports_plugins)


def plan_stages(ctx: PipelineContext) -> list[Stage]:
    """The recipe's stages in order (see the module docstring for what each reads and writes)."""
    r = ctx.recipe
    calibrate_dir = ctx.stage_dir("calibrate")
    stages = [
        Stage(
            name="calibrate",
            kind="calibrate",
            path=calibrate_dir,
            run=lambda: _run_calibrate(ctx, calibrate_dir),
            config={
                "model": r.model.model_dump(mode="json", exclude={"offload_dir"}),
                "model_identity": model_identity(r.model.source),
                "data": r.data.model_dump(mode="json"),
                "calibrate": r.calibrate.model_dump(mode="json"),
            },
            code=(
                *_ADAPTERS,
                "sq_trt.calibrate.stage",
                "sq_trt.artifacts.act_scales",
                "sq_trt.data",
                "sq_trt.models",
                "sq_trt.models.offload",
            ),
        )
    ]
    for config in r.smoothings().values():
        name = smooth_stage_name(r, config)
        stages.append(
            Stage(
                name=name,
                kind="smooth",
                path=ctx.stage_dir(name),
                run=functools.partial(_run_smooth, ctx, config, name, ctx.stage_dir(name)),
                config={"smooth": config.model_dump(mode="json")},
                after=("calibrate",),
                code=(*_ADAPTERS, "sq_trt.smooth.stage", "sq_trt.smooth.search", "sq_trt.models.offload"),
            )
        )
    stages.extend(_later_stages(ctx))
    return stages


def _baseline_candidate(recipe: Recipe) -> Candidate:
    """The candidate whose export's ``model.fp16.onnx`` is the FP16 baseline: an unsmoothed one if any.

    Smoothing is exact in floating point, so a smoothed FP16 export computes the same
    function up to FP16 rounding; the unsmoothed one is still preferred as the reference.
    """
    return next((c for c in recipe.export.candidates if not c.smooth), recipe.export.candidates[0])


def _run_export(ctx: PipelineContext, candidate: Candidate, path: Path) -> None:
    from sq_trt.export.stage import export_model
    from sq_trt.pipeline.recipe import export_config

    config = export_config(ctx.recipe.export, candidate, encoding=candidate_encoding(ctx, candidate))
    smooth_stage = candidate_smooth_stage(ctx.recipe, candidate)
    plan = None
    if smooth_stage is not None:
        from sq_trt.quant.plan import load_plan

        loaded, scales = ctx.smoothed(smooth_stage)
        inputs = {"smoothed": ctx.stage_fingerprint(smooth_stage)}
        plan = load_plan(ctx.stage_dir(smooth_stage))
        if plan is not None:
            plan.smoothed = str(ctx.stage_dir(smooth_stage))
    else:
        loaded, scales = ctx.original(), ctx.act_scales()
        inputs = {"calibrate": ctx.stage_fingerprint("calibrate")}
    export_model(
        loaded,
        path,
        scales=scales,
        config=config,
        inputs=inputs,
        force=True,
        float_graphs=ctx.float_graphs(),
        plan=plan,
    )


def _engine_target(plan: BuildPlan) -> str:
    return "rtx" if plan.name == "tensorrt_rtx" else "trt"


def _run_build(ctx: PipelineContext, plan: BuildPlan, onnx: Path, name: str, plugin: bool) -> None:
    from sq_trt.engine.builder import build_engine
    from sq_trt.engine.config import BuildOptions
    from sq_trt.engine.profiles import RequiredShape
    from sq_trt.engine.recipe import BuildSettings

    if plan.backend is None:
        raise StageSkipped(plan.reason)
    if plugin and not plan.backend.supports_plugins:
        raise StageSkipped(
            f"{plan.name} cannot build graphs with the per-token plugin node; build it with TensorRT proper "
            "on a GPU host (docker/gpu_host_kit.sh)"
        )
    b = ctx.recipe.build
    c = ctx.recipe.compare
    options = {name: getattr(b, name) for name in BuildOptions.model_fields if name not in ("profiles", "generation")}
    settings = BuildSettings(
        onnx=onnx,
        name=name,
        target=_engine_target(plan),
        backend=plan.backend.name,
        engines_dir=ctx.engines_dir,
        **options,
        # Generation engines get their prefill/decode profiles from the limits instead.
        **(
            {"generation": b.generation}
            if b.generation is not None
            else {
                "profiles": b.profiles,
                "required_shapes": [RequiredShape(batch=c.batch_size, seq=c.seq_len)],
            }
        ),
    )
    if _isolated_builds(ctx):
        from sq_trt.engine.isolated import build_engine_isolated

        build_engine_isolated(settings, plan.backend.name, force=True, log=ctx.log)
    else:
        build_engine(settings, plan.backend, force=True, log=ctx.log)


def _isolated_builds(ctx: PipelineContext) -> bool:
    """Builds run in child processes unless they always run one at a time (see :func:`build_jobs`)."""
    return ctx.recipe.build_jobs != 1 and (ctx.recipe.build_jobs > 1 or ctx.build_plan().name == "tensorrt_rtx")


# A TensorRT-RTX build of the demo model peaked at 1.53 GB of RSS in its own process for a
# 257 MB FP16 ONNX: about six times the file. Budgeting that per build (plus the libraries) keeps
# parallel builds of a large model from running the host out of memory.
_BUILD_MEMORY_PER_ONNX_BYTE = 6
_BUILD_MEMORY_BASE = 512 * 2**20


def build_jobs(ctx: PipelineContext, group: Sequence[Stage]) -> int:
    """How many of these engine builds run at once (``Recipe.build_jobs``; 0 decides here).

    Called when the builds start, so the ONNX files they read exist: TensorRT-RTX gets one
    build per CPU core, as many as ``MemAvailable`` holds at six times the largest model file of
    their exports; TensorRT proper gets 1 (it times kernels on the GPU).
    """
    if ctx.recipe.build_jobs:
        return ctx.recipe.build_jobs
    if not _isolated_builds(ctx):
        return 1
    from sq_trt.export.onnx_files import onnx_bytes
    from sq_trt.export.stage import FP16_FILE, INT8_FILE, available_memory_bytes

    # Each build reads one model of its export; budget for the larger of the two.
    exports = [ctx.work_dir / source for stage in group for source in stage.after]
    largest = max((onnx_bytes(path, name) for path in exports for name in (FP16_FILE, INT8_FILE)), default=0)
    fits = available_memory_bytes() // (_BUILD_MEMORY_BASE + _BUILD_MEMORY_PER_ONNX_BYTE * largest)
    return max(1, min(len(os.sched_getaffinity(0)), fits))


def _compare_runner(recipe: Recipe, plan: BuildPlan) -> str:
    """``onnxruntime`` or ``tensorrt``: the engines are compared only when TensorRT proper built them.

    Raises:
        ConfigError: ``compare.runner: tensorrt`` without TensorRT engines in this run.
    """
    from sq_trt.errors import ConfigError

    runner = recipe.compare.runner
    if runner == "auto":
        return "tensorrt" if plan.name == "tensorrt" else "onnxruntime"
    if runner == "tensorrt" and plan.name != "tensorrt":
        raise ConfigError(
            f"compare.runner is tensorrt but the engines of this run are built by {plan.name or 'nothing'} "
            f"({plan.reason}); set build.backend: tensorrt on a GPU host, or compare.runner: onnxruntime"
        )
    return runner


def _run_compare(ctx: PipelineContext, runner: str, target: str, path: Path) -> None:
    from sq_trt.compare.runners import RunnerSpec
    from sq_trt.compare.stage import CompareConfig, compare_models
    from sq_trt.export.stage import FP16_FILE, INT8_FILE

    r = ctx.recipe
    baseline = _baseline_candidate(r)
    if runner == "tensorrt":
        plan = target + ".plan"
        baseline_spec = RunnerSpec.for_file("fp16", ctx.engines_dir / "fp16" / plan)
        candidates = [RunnerSpec.for_file(c.name, ctx.engines_dir / c.name / plan) for c in r.export.candidates]
    else:
        baseline_spec = RunnerSpec.for_file("fp16", ctx.stage_dir("export", baseline.name, FP16_FILE))
        candidates = [
            RunnerSpec.for_file(c.name, ctx.stage_dir("export", c.name, INT8_FILE)) for c in r.export.candidates
        ]
    smoothed, smooth_stage = _primary_smoothed(r)
    rank = r.compare.layer_ranking and ctx.original().spec.kind == "decoder"
    options = {name: getattr(r.compare, name) for name in CompareOptions.model_fields}
    compare_models(
        CompareConfig(
            **options,
            out=path,
            baseline=baseline_spec,
            candidates=list(candidates),
            model=r.model.source,
            data=r.data.source,
            text_column=r.data.text_column,
            calib_fraction=r.data.calib_fraction,
            # The gate is applied by the report stage, so changing it never reruns the comparison.
            gate=[],
            rank_layers=str(ctx.stage_dir(smooth_stage))
            if rank and smooth_stage is not None
            else (r.model.source if rank else None),
            # The ranking quantizes one mode throughout: a hybrid plan's is ranked per token.
            rank_act_mode=smoothed.act_mode if smoothed and smoothed.act_mode != "hybrid" else "per_token",
            device=r.model.device,
            progress=ctx.progress,
            force=True,
        )
    )


def _run_report(ctx: PipelineContext, compare_dir: Path, path: Path) -> None:
    from sq_trt.report import activation_picture, load_sweep, write_report

    r = ctx.recipe
    activation = None
    _, smooth_stage = _primary_smoothed(r)
    if smooth_stage is not None and (ctx.stage_dir(smooth_stage) / "manifest.json").is_file():
        activation = activation_picture(
            ctx.stage_dir("calibrate"), ctx.stage_dir(smooth_stage), r.report.activation_layer
        )
    sweep = load_sweep(r.report.sweep) if r.report.sweep is not None else None
    # The comparison ran without a gate; the report applies the recipe's to the verified metrics.
    write_report(compare_dir, path, activation=activation, sweep=sweep, gate=list(r.gate), force=True)


def _later_stages(ctx: PipelineContext) -> list[Stage]:
    """Export, build, compare and report."""
    builds, build_stages = _build_stages(ctx)
    return [*_export_stages(ctx), *build_stages, *_compare_and_report_stages(ctx, builds)]


def _export_stages(ctx: PipelineContext) -> list[Stage]:
    r = ctx.recipe
    stages: list[Stage] = []
    for candidate in r.export.candidates:
        path = ctx.stage_dir("export", candidate.name)
        stages.append(
            Stage(
                name=f"export/{candidate.name}",
                kind="export",
                path=path,
                run=functools.partial(_run_export, ctx, candidate, path),
                config={
                    "candidate": {
                        **_candidate_config(candidate),
                        "encoding": candidate_encoding(ctx, candidate),
                    },
                    # Every shared export option (opset, exclude, int8_dtype, with_past) reruns the exports.
                    "graph": r.export.model_dump(mode="json", exclude={"candidates"}),
                },
                after=(candidate_smooth_stage(r, candidate) or "calibrate",),
                code=(*_ADAPTERS, "sq_trt.export"),
            )
        )
    return stages


def _build_stages(ctx: PipelineContext) -> tuple[list[str], list[Stage]]:
    """The engine builds: the names of the engines, and their stages."""
    from sq_trt.export.qdq import PLUGIN_ENCODINGS

    r = ctx.recipe
    plan = ctx.build_plan()
    target = _engine_target(plan)
    build_config = {
        "build": r.build.model_dump(mode="json"),
        "backend": plan.name,
        "reason": plan.reason,
        "required": [r.compare.batch_size, r.compare.seq_len],
    }
    builds: list[tuple[str, str, Path, bool]] = []
    baseline = _baseline_candidate(r)
    if r.build.fp16_engine:
        fp16 = ctx.stage_dir("export", baseline.name, "model.fp16.onnx")
        builds.append(("fp16", f"export/{baseline.name}", fp16, False))
    for candidate in r.export.candidates:
        onnx = ctx.stage_dir("export", candidate.name, "model.int8.onnx")
        plugin = candidate.act_mode != "per_tensor" and candidate_encoding(ctx, candidate) in PLUGIN_ENCODINGS
        builds.append((candidate.name, f"export/{candidate.name}", onnx, plugin))
    stages = [
        Stage(
            name=f"build/{name}",
            kind="build",
            path=ctx.engines_dir / name,
            run=functools.partial(_run_build, ctx, plan, onnx, name, plugin),
            config={**build_config, "target": target, "plugin": plugin},
            after=(source,),
            code=(*_ADAPTERS, "sq_trt.engine"),
            parallel=True,
        )
        for name, source, onnx, plugin in builds
    ]
    return [name for name, *_ in builds], stages


def _compare_and_report_stages(ctx: PipelineContext, builds: list[str]) -> list[Stage]:
    r = ctx.recipe
    plan = ctx.build_plan()
    target = _engine_target(plan)
    runner = _compare_runner(r, plan)
    compare_dir = ctx.stage_dir("compare")
    _, smooth_stage = _primary_smoothed(r)
    after = tuple(f"export/{c.name}" for c in r.export.candidates)
    if runner == "tensorrt":
        after += tuple(f"build/{name}" for name in builds)
    if r.compare.layer_ranking and smooth_stage is not None:
        after += (smooth_stage,)
    compare = Stage(
        name="compare",
        kind="compare",
        path=compare_dir,
        run=lambda: _run_compare(ctx, runner, target, compare_dir),
        config={
            "compare": r.compare.model_dump(mode="json"),
            "runner": runner,
            "data": r.data.model_dump(mode="json"),
            "baseline": _baseline_candidate(r).name,
        },
        after=tuple(dict.fromkeys(after)),
        code=(*_ADAPTERS, "sq_trt.compare", "sq_trt.artifacts.comparison"),
    )
    report_dir = ctx.stage_dir("report")
    report = Stage(
        name="report",
        kind="report",
        path=report_dir,
        run=lambda: _run_report(ctx, compare_dir, report_dir),
        config={"gate": r.gate, "report": r.report.model_dump(mode="json")},
        after=("compare", *(("calibrate", smooth_stage) if smooth_stage is not None else ())),
        code=(*_ADAPTERS, "sq_trt.report", "sq_trt.compare.gate", "sq_trt.artifacts.comparison"),
    )
    return [compare, report]


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did."""

    reports: list[StageReport]
    report_path: Path | None
    gate_passed: bool | None
    gate_detail: str = ""
    # FloatGraphs.stats(): float graphs traced and reused (weights swapped in) by this run's exports.
    float_graphs: dict[str, Any] = field(default_factory=dict)

    def raise_if_gate_failed(self) -> None:
        """Raise :class:`~sq_trt.errors.GateFailedError` (exit code 3) when the gate failed."""
        from sq_trt.errors import GateFailedError

        if self.gate_passed is False:
            raise GateFailedError(
                f"accuracy gate failed: {self.gate_detail}. The report is {self.report_path}; its per-layer "
                "ranking names the layers to exclude or re-smooth"
            )


def _print_summary(
    recipe: Recipe, result: PipelineResult, table: str, total: float, log: Callable[[str], None] | None
) -> None:
    """The stage table, wall time, report path and verdict: to stdout, or to ``log`` when given."""
    conditions = ", ".join(recipe.gate) or "no conditions"
    lines = [
        "",
        table,
        f"wall time {total:.1f} s",
        f"report: {result.report_path}",
        f"gate ({conditions}): " + ("PASS" if result.gate_passed else f"FAIL ({result.gate_detail})"),
    ]
    for line in lines:
        if log is None:
            print(line, flush=True)
        else:
            log(line)


def run_pipeline(
    recipe: Recipe,
    *,
    from_kind: str | None = None,
    progress: bool = True,
    hook: Any = None,
    log: Callable[[str], None] | None = None,
    float_graphs: FloatGraphs | None = None,
) -> PipelineResult:
    """Run (or reuse) every stage of ``recipe``, print the summary and return the verdict.

    Args:
        recipe: The validated recipe.
        from_kind: Force this stage kind and every later one to rerun.
        progress: Show the stages' progress bars.
        hook: Test hook passed to :func:`sq_trt.pipeline.runner.run_stages`.
        log: Where stage lines and the summary go (default: stderr through tqdm, and stdout).
        float_graphs: Float graphs the caller traced before (kept after the run; the summary
            counts only this run's traces and reuses). Default: the run traces its own and
            drops them at the end.

    Returns:
        The stage reports, the report path and the gate verdict.
    """
    from sq_trt.pipeline.runner import _log, format_summary, run_stages, write_summary
    from sq_trt.report import load_verdict

    emit = log or _log
    ctx = PipelineContext(recipe, progress=progress, log=emit, shared_float_graphs=float_graphs)
    graphs_before = ctx.float_graphs().stats()
    preflight(recipe, ctx.work_dir, ctx.engines_dir)
    started = time.perf_counter()
    plan = ctx.build_plan()
    emit(f"[pipeline] {recipe.name}: work dir {ctx.work_dir}, engines {ctx.engines_dir}")
    emit(
        f"[pipeline] engines: {plan.reason}" + ("" if plan.backend is not None else " -> build stage skipped")
    )
    emit(f"[pipeline] comparison runner: {_compare_runner(recipe, plan)}")
    stages = plan_stages(ctx)
    try:
        reports = run_stages(
            stages, ctx.work_dir, from_kind=from_kind, hook=hook, log=emit, jobs=functools.partial(build_jobs, ctx)
        )
    finally:
        if float_graphs is None:
            ctx.float_graphs().clear()
    graphs = ctx.float_graphs().stats(since=graphs_before)
    if graphs["traces"] or graphs["reused"]:
        emit(f"[pipeline] float graphs: {graphs['traces']} traced, {graphs['reused']} reused with swapped weights")
    report_dir = ctx.stage_dir("report")
    verdict = load_verdict(report_dir)  # the verdict the report just wrote, not a recomputation
    result = PipelineResult(
        reports=reports,
        report_path=report_dir / "report.html",
        gate_passed=verdict.passed,
        gate_detail=verdict.describe_failures() if not verdict.passed else "",
        float_graphs=graphs,
    )
    total = time.perf_counter() - started
    _print_summary(recipe, result, format_summary(reports), total, log)
    write_summary(
        ctx.work_dir / "pipeline_summary.json",
        reports,
        {
            "recipe": recipe.model_dump(mode="json"),
            "wall_s": total,
            "backend": plan.name,
            "backend_reason": plan.reason,
            "report": str(result.report_path),
            "gate": verdict.to_json(),
            "float_graphs": graphs,
        },
    )
    return result
