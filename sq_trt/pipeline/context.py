"""What the stages of one ``sq-trt pipeline`` run share: the recipe, its directories, lazily loaded models and data.

Nothing here runs a stage. Models, text slices and statistics are loaded on
first use and kept for the run, so a run whose stages are all reused loads no
model at all. :func:`choose_backend` resolves the engine builder once per run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt.pipeline.recipe import Recipe

if TYPE_CHECKING:
    import torch

    from sq_trt.artifacts.act_scales import ActScales
    from sq_trt.data import TextSlice
    from sq_trt.export.stage import FloatGraphs
    from sq_trt.models.loading import LoadedModel
    from sq_trt.models.offload import OffloadedModel
    from sq_trt.smooth.config import AlphaSearchConfig


def model_identity(source: str) -> dict[str, Any]:
    """A cheap identity of a model source for cache keys (no weights are read).

    Local files are identified by name, size and modification time; ``demo`` by its
    cached directory; ``tiny:<family>`` by the code that builds it; a hub id by itself.
    """
    from sq_trt.pipeline.runner import code_hash

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
    # Float graphs traced before this run (a test session, a notebook tuning recipes); owned by the caller.
    shared_float_graphs: FloatGraphs | None = None
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

    def calibration_model(self) -> LoadedModel:
        """The model calibration runs on: offloaded (one layer in memory) when ``model.offload`` is set."""
        if not self.recipe.model.offload:
            return self.original()
        return self._memo("offloaded", lambda: self.load_offloaded("calibrate"))

    def load_offloaded(self, purpose: str) -> OffloadedModel:
        """A fresh disk-offloaded instance of the model, with its own offload folder."""
        from sq_trt.models.offload import load_offloaded

        m = self.recipe.model
        root = m.offload_dir if m.offload_dir is not None else self.stage_dir(".offload")
        return load_offloaded(
            m.source,
            root / purpose,
            dtype=m.dtype,
            local_files_only=m.local_files_only,
            trust_remote_code=m.trust_remote_code,
        )

    def calibration_chunks(self) -> torch.Tensor:
        """Calibration token chunks ``[calibrate.samples, calibrate.seq_len]``."""
        from sq_trt.calibrate.stage import calibration_chunks

        return self._memo(
            "calib_chunks",
            lambda: calibration_chunks(self.recipe.calibrate, self.calibration_model(), self.slices()[0]),
        )

    def float_graphs(self) -> FloatGraphs:
        """The float ONNX graphs the exports of this run share: one trace per architecture, graph kind and dtype.

        Every other model of the architecture (the original for naive candidates and the FP16
        baseline, each smoothing) gets the traced graph with its own weights swapped in. An
        offloaded model is too large to keep its float graph in memory between candidates. The
        caller's :attr:`shared_float_graphs`, when given, are used instead.
        """
        from sq_trt.export.stage import FloatGraphs

        if self.shared_float_graphs is not None:
            return self.shared_float_graphs
        return self._memo("float_graphs", lambda: FloatGraphs(keep=not self.recipe.model.offload))

    def build_plan(self) -> BuildPlan:
        """The backend that builds engines in this run (resolved once)."""
        return self._memo("build_plan", lambda: choose_backend(self.recipe))

    def stage_fingerprint(self, stage: str) -> str:
        """Fingerprint of a finished stage's artifact (recorded in downstream manifests)."""
        from sq_trt.pipeline.runner import artifact_fingerprint

        return artifact_fingerprint(self.stage_dir(stage))

    def act_scales(self) -> ActScales:
        """The calibrate stage's statistics (checked against the model they are applied to)."""
        from sq_trt.artifacts import load_act_scales

        if self.recipe.model.offload:
            # The offloaded model's weights are not in memory; its fingerprint is checked in the smooth stage.
            return self._memo("act_scales", lambda: load_act_scales(self.stage_dir("calibrate")))
        return self._memo(
            "act_scales", lambda: load_act_scales(self.stage_dir("calibrate"), model=self.original().model)
        )

    def smoothed(self, stage: str = "smooth") -> tuple[LoadedModel, ActScales]:
        """A smooth stage's model and statistics (``smooth``, or a candidate's own ``smooth-<hash8>``)."""
        from sq_trt.artifacts import load_smoothed

        return self._memo(
            f"smoothed:{stage}", lambda: load_smoothed(self.stage_dir(stage), device=self.recipe.model.device)
        )

    def search_inputs(self, search: AlphaSearchConfig) -> dict[str, torch.Tensor]:
        """The unsmoothed model's sampled group inputs for the alpha search, captured once per sampling size.

        Every group, the optional linear->linear ones included, and every quantized linear no
        group covers (a hybrid plan measures them), so each smoothing of the run finds its units
        in one capture (the calibration chunks are the same for all of them).
        """
        from sq_trt.smooth.search import collect_group_inputs, sampled_units

        model = self.original().model
        return self._memo(
            f"search_inputs:{search.samples}:{search.tokens_per_sample}",
            lambda: collect_group_inputs(
                model,
                self.calibration_chunks(),
                sampled_units(model, include_optional=True),  # + linears no group covers (hybrid plans)
                samples=search.samples,
                tokens_per_sample=search.tokens_per_sample,
                progress=self.progress,
            ),
        )


@dataclass(frozen=True)
class BuildPlan:
    """Which backend builds, or why nothing is built."""

    backend: Any
    reason: str

    @property
    def name(self) -> str | None:
        """``tensorrt`` / ``tensorrt_rtx``, or None when the build stage is skipped."""
        return self.backend.name if self.backend is not None else None


def choose_backend(recipe: Recipe) -> BuildPlan:
    """Resolve ``build.backend`` once per run (``auto``: TensorRT with a GPU, else TensorRT-RTX).

    Raises:
        MissingDependencyError: An explicitly requested backend is not installed.
    """
    from sq_trt.engine.backends import select_backend
    from sq_trt.errors import MissingDependencyError

    wanted = recipe.build.backend
    if wanted == "none":
        return BuildPlan(None, "build.backend is none")
    try:
        backend, reason = select_backend(wanted)
    except MissingDependencyError as exc:
        if wanted != "auto":
            raise
        return BuildPlan(None, f"no TensorRT backend is installed ({exc})")
    return BuildPlan(backend, reason)
