"""The matrix planned: one front-end job per model, one cell per (model, candidate, target), each with its key.

Keys are computed on the driver from the pipeline's own planned stages
(:func:`~sq_trt.matrix.pipeline_adapter.stages_key`): a front end's from its calibrate, smooth and
export stages; a cell's from its build, compare and report stages and its front end's key. Two
targets whose backends resolve every candidate to the same export share one front end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sq_trt.matrix import pipeline_adapter as pipeline
from sq_trt.matrix.config import MatrixConfig, Target

# Where a task's recipe points its directories; replaced by the task's own scratch directory.
PLANNING_DIR = Path("/nonexistent/sq-trt-matrix-planning")


@dataclass(frozen=True)
class FrontJob:
    """Calibrate, smooth and export of one model (for the exports a backend kind resolves)."""

    model: str
    backend: str
    key: str
    recipe: pipeline.Recipe


@dataclass(frozen=True)
class Cell:
    """Build, compare and report of one (model, candidate, target)."""

    model: str
    candidate: str
    target: Target
    key: str
    front_key: str
    recipe: pipeline.Recipe
    fetch: tuple[str, ...]

    @property
    def label(self) -> str:
        """``model/candidate@target``."""
        return f"{self.model}/{self.candidate}@{self.target.name}"


@dataclass(frozen=True)
class MatrixPlan:
    """Every front end (by key) and every cell, in report order (model, candidate, target)."""

    fronts: dict[str, FrontJob]
    cells: list[Cell]


def _front(model: str, recipe: pipeline.Recipe, backend: str) -> FrontJob:
    planned = pipeline.front_recipe(recipe, PLANNING_DIR)
    key = pipeline.stages_key(pipeline.plan_front(planned, backend))
    return FrontJob(model, backend, key, recipe)


def _cell(model: str, recipe: pipeline.Recipe, candidate: str, target: Target, front: FrontJob) -> Cell:
    planned = pipeline.cell_recipe(recipe, candidate, target.backend, target.compute_capabilities, PLANNING_DIR)
    stages = pipeline.plan_cell(planned, target.backend)
    later = [s for s in stages if s.kind not in pipeline.FRONT_KINDS]
    # What the cell needs of its front end: its candidate's export, the smoothing it came from,
    # calibration, and the cache records that let the pipeline reuse them.
    needed = [s.path.relative_to(PLANNING_DIR).as_posix() for s in stages if s.kind in pipeline.FRONT_KINDS]
    key = pipeline.stages_key(later, upstream=front.key)
    return Cell(model, candidate, target, key, front.key, recipe, (*needed, "work/.pipeline"))


def plan_matrix(config: MatrixConfig, recipes: dict[str, pipeline.Recipe]) -> MatrixPlan:
    """Expand the matrix into front-end jobs and cells (nothing runs)."""
    fronts: dict[str, FrontJob] = {}
    cells: list[Cell] = []
    for entry in config.models:
        recipe = recipes[entry.name]
        by_backend = {}
        for backend in dict.fromkeys(t.backend for t in config.targets):
            front = _front(entry.name, recipe, backend)
            by_backend[backend] = fronts.setdefault(front.key, front)
        for candidate in recipe.export.candidates:
            for target in config.targets:
                cells.append(_cell(entry.name, recipe, candidate.name, target, by_backend[target.backend]))
    return MatrixPlan(fronts, cells)
