"""The one place the matrix touches the pipeline: recipes, the planned stages, their runner and hashes.

The matrix runs the pipeline's own stages (planned by ``plan_stages`` from a ``Recipe``,
run or reused by ``run_stages``) in two halves: the front end (calibrate, smooth, export) once
per model, and build + compare + report once per (model, candidate, target). Its store keys
are hashes of those stages' own configs and code (:func:`stages_key`), computed on the driver
without TensorRT: a :class:`DeclaredBackend` stands for the target's backend while planning.
(The pipeline modules are being moved into ``sq_trt/pipeline/``: only the imports below change.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sq_trt import __version__
from sq_trt.artifacts import atomic_write_text, hash_file, hash_json
from sq_trt.pipeline.context import BuildPlan, PipelineContext
from sq_trt.pipeline.recipe import Recipe, apply_overrides, read_recipe_file, validate_recipe
from sq_trt.pipeline.runner import Stage, StageReport, code_hash, run_stages
from sq_trt.pipeline.stages import build_jobs, plan_stages
from sq_trt.report import load_verdict

__all__ = [
    "FRONT_KINDS",
    "DeclaredBackend",
    "Recipe",
    "Stage",
    "StageReport",
    "apply_overrides",
    "atomic_write_text",
    "cell_recipe",
    "front_memory_bytes",
    "front_recipe",
    "hash_file",
    "hash_json",
    "load_verdict",
    "plan_cell",
    "plan_front",
    "read_recipe_file",
    "run_cell_stages",
    "run_front_stages",
    "stages_key",
    "validate_recipe",
]

FRONT_KINDS = ("calibrate", "smooth", "export")


@dataclass(frozen=True)
class DeclaredBackend:
    """A target's backend as planning sees it (its name), without importing TensorRT on the driver."""

    name: str

    @property
    def supports_plugins(self) -> bool:
        """TensorRT proper hosts the sq-trt plugins; TensorRT-RTX does not (as ``engine.backends.Backend``)."""
        return self.name == "tensorrt"


class _DeclaredContext(PipelineContext):
    """A pipeline context whose engine backend is declared, not imported (planning and the front end)."""

    declared: BuildPlan

    def build_plan(self) -> BuildPlan:
        return self.declared


def _declared_context(recipe: Recipe, backend: str, log: Callable[[str], None]) -> PipelineContext:
    ctx = _DeclaredContext(recipe, progress=False, log=log)
    ctx.declared = BuildPlan(DeclaredBackend(backend), f"declared by the matrix target ({backend})")
    return ctx


def _with_dirs(recipe: Recipe, work_dir: Path) -> Recipe:
    return recipe.model_copy(update={"work_dir": work_dir / "work", "engines_dir": work_dir / "engines"})


def front_recipe(recipe: Recipe, work_dir: Path) -> Recipe:
    """A model's recipe writing under ``work_dir`` (``work/`` and ``engines/``)."""
    return _with_dirs(recipe, work_dir)


def _gate_for(gate: Sequence[str], candidate: str) -> list[str]:
    """The gate conditions that apply to one candidate: its own and the unprefixed ones."""
    kept = []
    for text in gate:
        prefix = text.split(":", 1)[0].strip() if ":" in text else None
        if prefix is None or prefix == candidate:
            kept.append(text)
    return kept


def cell_recipe(recipe: Recipe, candidate: str, backend: str, capabilities: Sequence[str], work_dir: Path) -> Recipe:
    """The recipe of one cell: the model's recipe with one candidate, the target's backend, under ``work_dir``.

    Raises:
        ConfigError: ``candidate`` is not one of the recipe's (or the result is invalid).
    """
    data = recipe.model_dump(mode="json")
    data["export"]["candidates"] = [c for c in data["export"]["candidates"] if c["name"] == candidate]
    data["build"]["backend"] = backend
    data["build"]["compute_capabilities"] = list(capabilities)
    data["gate"] = _gate_for(recipe.gate, candidate)
    data["work_dir"], data["engines_dir"] = str(work_dir / "work"), str(work_dir / "engines")
    return validate_recipe(data, source=f"{recipe.name} cell {candidate}")


def plan_front(recipe: Recipe, backend: str, log: Callable[[str], None] = print) -> list[Stage]:
    """The front-end stages of a model (calibrate, smooth, export) as the pipeline plans them."""
    return [s for s in plan_stages(_declared_context(recipe, backend, log)) if s.kind in FRONT_KINDS]


def plan_cell(recipe: Recipe, backend: str) -> list[Stage]:
    """Every stage of a cell's recipe, planned with the declared backend (for keys)."""
    return plan_stages(_declared_context(recipe, backend, print))


def stages_key(stages: Sequence[Stage], upstream: str = "") -> str:
    """The content hash of a chain of stages: their kinds, configs, inputs and code, and sq-trt's version.

    Relative to the pipeline's own cache key, an input is named by its stage rather than its
    artifact's fingerprint (unknown before it runs), and the chain's ``upstream`` key stands for
    whatever runs before it, so the key is known before anything runs.
    """
    return hash_json(
        {
            "upstream": upstream,
            "version": __version__,
            "stages": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "config": _portable(s.config),
                    "after": list(s.after),
                    "code": {module: code_hash(module) for module in s.code},
                }
                for s in stages
            ],
        }
    )


def _portable(value: object) -> object:
    """A stage config's JSON without what only says where it runs (work/engine paths and the backend's reason)."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items() if k not in ("reason", "offload_dir")}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return value


def run_front_stages(recipe: Recipe, backend: str, log: Callable[[str], None]) -> list[StageReport]:
    """Run (or reuse) a model's front-end stages under its recipe's work directory."""
    ctx = _declared_context(recipe, backend, log)
    stages = [s for s in plan_stages(ctx) if s.kind in FRONT_KINDS]
    try:
        return run_stages(stages, ctx.work_dir, log=log)
    finally:
        ctx.float_graphs().clear()


def run_cell_stages(
    recipe: Recipe, hook: Callable[[str, str], None], log: Callable[[str], None]
) -> tuple[list[StageReport], Any]:
    """Run a cell's stages with its real backend; the front end's must all be reused (``hook`` sees each start).

    Returns:
        The stage reports, and the gate verdict its report states (the one verdict: compare/gate.py).
    """
    ctx = PipelineContext(recipe, progress=False, log=log)
    stages = plan_stages(ctx)
    reports = run_stages(stages, ctx.work_dir, hook=hook, log=log, jobs=functools.partial(build_jobs, ctx))
    return reports, load_verdict(ctx.work_dir / "report")


def front_memory_bytes(recipe: Recipe) -> int:
    """The memory the export guard estimates for a model's exports (0: its size is unknown before loading)."""
    from sq_trt.export.stage import check_memory
    from sq_trt.models.loading import source_skeleton

    skeleton = source_skeleton(recipe.model.source, trust_remote_code=recipe.model.trust_remote_code)
    if skeleton is None:
        return 0
    params = sum(p.numel() for p in skeleton.parameters())
    return check_memory(params, recipe.export.int8_dtype, available=1 << 62, kept_graphs=not recipe.model.offload)
