"""The stages of ``sq-trt pipeline``, planned from a recipe.

:func:`plan_stages` turns a :class:`~sq_trt.recipe.Recipe` into the ordered
:class:`~sq_trt.pipeline.Stage` list that :func:`sq_trt.pipeline.run_stages`
runs or reuses; :func:`run_pipeline` does both and returns the verdict. Each
stage calls its stage module's Python API (never the CLI) and declares the
recipe values it reads, so only a change to those values reruns it:

==================  =========================================  =====================================
stage               reads                                      writes
==================  =========================================  =====================================
calibrate           model, data, calibrate                     ``<work>/calibrate``
smooth              smooth (+ calibrate's artifact)            ``<work>/smooth``
export/<cand>       export.exclude/opset, the candidate        ``<work>/export/<cand>``
build/<cand>        build                                      ``<engines>/<cand>`` (``<target>.plan``)
compare             compare, data (+ every export / engine)    ``<work>/compare``
report              gate, report (+ compare's artifact)        ``<work>/report``
==================  =========================================  =====================================
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt.pipeline import Stage, StageReport
from sq_trt.recipe import Candidate, Recipe

if TYPE_CHECKING:
    import torch

    from sq_trt.calibrate import ActScales
    from sq_trt.data import TextSlice
    from sq_trt.models.loading import LoadedModel


def model_identity(source: str) -> dict[str, Any]:
    """A cheap identity of a model source for cache keys (no weights are read).

    Local files are identified by name, size and modification time; ``demo`` by its
    cached directory; ``tiny:<family>`` by the code that builds it; a hub id by itself.
    """
    from sq_trt.pipeline import code_hash

    if source.startswith("tiny:"):
        return {"tiny": source, "code": code_hash("sq_trt.models.tiny")}
    path = Path(source).expanduser()
    if source == "demo":
        from sq_trt.models.demo import demo_model_dir

        path = demo_model_dir(fetch=False)
    if not path.exists():
        return {"hub": source}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        "path": str(path.resolve()),
        "files": {
            p.name if p == path else p.relative_to(path).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in files
        },
    }


@dataclass
class PipelineContext:
    """What the stages share within one run: the recipe, its directories, lazily loaded models and data."""

    recipe: Recipe
    progress: bool = True
    log: Callable[[str], None] = print
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        """The recipe's work directory."""
        return self.recipe.resolved_work_dir

    @property
    def engines_dir(self) -> Path:
        """The recipe's engines directory."""
        return self.recipe.resolved_engines_dir

    def stage_dir(self, *parts: str) -> Path:
        """``<work>/<parts...>``."""
        return self.work_dir.joinpath(*parts)

    def _memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def original(self) -> LoadedModel:
        """The model as loaded from ``model.source`` (never modified; copy before changing it)."""
        from sq_trt.models.loading import load_model

        m = self.recipe.model
        return self._memo(
            "original",
            lambda: load_model(
                m.source,
                dtype=m.dtype,
                local_files_only=m.local_files_only,
                trust_remote_code=m.trust_remote_code,
                device=m.device,
            ),
        )

    def slices(self) -> tuple[TextSlice, TextSlice]:
        """Calibration and evaluation slices of ``data.source``."""
        from sq_trt.data import check_slices_disjoint, load_slices

        d = self.recipe.data

        def make() -> tuple[TextSlice, TextSlice]:
            calib, evaluation = load_slices(
                d.source, text_column=d.text_column, calib_fraction=d.calib_fraction
            )
            check_slices_disjoint(calib, evaluation)
            return calib, evaluation

        return self._memo("slices", make)

    def calibration_chunks(self) -> torch.Tensor:
        """Calibration token chunks ``[calibrate.samples, calibrate.seq_len]``."""
        from sq_trt.data import tokenize_chunks

        c = self.recipe.calibrate
        return self._memo(
            "calib_chunks",
            lambda: tokenize_chunks(
                self.original().tokenizer, self.slices()[0], seq_len=c.seq_len, max_chunks=c.samples
            ),
        )

    def act_scales(self) -> ActScales:
        """The calibrate stage's statistics (checked against the original model)."""
        from sq_trt.calibrate import load_act_scales

        return self._memo(
            "act_scales", lambda: load_act_scales(self.stage_dir("calibrate"), model=self.original().model)
        )

    def smoothed(self) -> tuple[LoadedModel, ActScales]:
        """The smooth stage's model and statistics."""
        from sq_trt.smooth import load_smoothed

        return self._memo(
            "smoothed", lambda: load_smoothed(self.stage_dir("smooth"), device=self.recipe.model.device)
        )


# ----------------------------------------------------------------------------- calibrate and smooth


def _run_calibrate(ctx: PipelineContext, path: Path) -> None:
    from sq_trt.calibrate import calibrate, save_act_scales

    loaded = ctx.original()
    chunks = ctx.calibration_chunks()
    scales = calibrate(loaded, chunks, progress=ctx.progress)
    scales.meta["data"] = ctx.slices()[0].describe()
    save_act_scales(path, scales, force=True)


def smooth_config(recipe: Recipe) -> Any:
    """The recipe's smooth section as :class:`sq_trt.smooth.SmoothConfig`."""
    from sq_trt.smooth import AlphaSearchConfig, SmoothConfig

    s = recipe.smooth
    return SmoothConfig(
        alpha=s.alpha,  # type: ignore[arg-type]
        overrides=tuple(s.overrides.items()),  # type: ignore[arg-type]
        include_optional=s.include_optional,
        search=AlphaSearchConfig(
            grid=tuple(s.search.grid),
            act_mode=s.search.act_mode,
            samples=s.search.samples,
            tokens_per_sample=s.search.tokens_per_sample,
        ),
    )


def _run_smooth(ctx: PipelineContext, path: Path) -> None:
    from sq_trt.autoalpha import collect_group_inputs
    from sq_trt.models.registry import smoothing_groups
    from sq_trt.smooth import (
        check_equivalence,
        reference_outputs,
        save_smoothed,
        smooth_model,
        smoothed_act_scales,
    )

    config = smooth_config(ctx.recipe)
    original = ctx.original()
    scales = ctx.act_scales()
    loaded = copy.copy(original)
    loaded.model = copy.deepcopy(original.model)
    chunks = ctx.calibration_chunks()
    search_inputs = None
    if config.needs_search:
        groups = smoothing_groups(loaded.model, include_optional=config.include_optional)
        search_inputs = collect_group_inputs(
            loaded.model,
            chunks,
            groups,
            samples=config.search.samples,
            tokens_per_sample=config.search.tokens_per_sample,
            progress=ctx.progress,
        )
    probe = chunks[:1, : min(64, chunks.shape[1])]
    reference = reference_outputs(loaded.model, probe)
    result = smooth_model(loaded.model, scales, config, search_inputs=search_inputs)
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


def _candidate_config(candidate: Candidate) -> dict[str, Any]:
    return candidate.model_dump(mode="json")


def plan_stages(ctx: PipelineContext) -> list[Stage]:
    """The recipe's stages in order (see the module docstring for what each reads and writes)."""
    r = ctx.recipe
    calibrate_dir = ctx.stage_dir("calibrate")
    smooth_dir = ctx.stage_dir("smooth")
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
            code=("sq_trt.calibrate", "sq_trt.data", "sq_trt.models"),
        )
    ]
    if any(c.smooth for c in r.export.candidates):
        stages.append(
            Stage(
                name="smooth",
                kind="smooth",
                path=smooth_dir,
                run=lambda: _run_smooth(ctx, smooth_dir),
                config={"smooth": r.smooth.model_dump(mode="json")},
                after=("calibrate",),
                code=("sq_trt.smooth", "sq_trt.autoalpha"),
            )
        )
    stages.extend(_later_stages(ctx))
    return stages


def _later_stages(ctx: PipelineContext) -> list[Stage]:
    """Export, build, compare and report (filled in as those stage modules exist)."""
    return []


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did."""

    reports: list[StageReport]
    report_path: Path | None
    gate_passed: bool | None
    gate_detail: str = ""
