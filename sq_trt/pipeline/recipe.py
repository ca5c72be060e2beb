"""Pipeline recipes: one validated, typed description of a whole ``sq-trt pipeline`` run.

A recipe is a YAML file (``builders/<model>.yaml``, with ``kind: pipeline``)
whose sections mirror the stages: ``model``, ``data``, ``calibrate``,
``smooth``, ``export``, ``build``, ``compare``, ``gate``, ``report``. Any field
can be overridden from the command line with ``--set section.field=value``
(the value is parsed as YAML, so ``--set smooth.alpha=0.7`` is a float and
``--set build.backend=none`` a string). Unknown fields are refused with the
closest known name, so a misspelled setting never silently falls back to its
default.

Work directory layout (``work_dir``, default ``work/<name>``)::

    calibrate/                 act_scales artifact
    smooth/                    smoothed checkpoint + smoothing factors (the ``smooth`` section's)
    smooth-<hash8>/            the same for a candidate's own ``smoothing`` (one per distinct config)
    export/<candidate>/        model.fp16.onnx + model.int8.onnx (one per INT8 candidate)
    compare/                   comparison results (ONNX Runtime on CPU, TensorRT on GPU hosts)
    report/                    report.html, report.md, report.json
    .pipeline/<stage>.json     cache records (input hash -> artifact fingerprint)
    pipeline_summary.json      the last run's stage table

Engines go to ``engines_dir`` (default ``engines/<name>``), one directory per
engine: ``<candidate>-fp16`` / ``<candidate>-int8``, each with its ``.plan``
and engine manifest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sq_trt import stage_config
from sq_trt.artifacts import hash_json
from sq_trt.calibrate.stage import CalibrateConfig
from sq_trt.compare.config import CompareOptions
from sq_trt.data import DataConfig
from sq_trt.engine.config import BuildOptions
from sq_trt.errors import ConfigError
from sq_trt.export.config import CandidateOptions, ExportConfig, GraphOptions
from sq_trt.models.config import MODEL_HINT, ModelConfig
from sq_trt.report.config import ReportOptions
from sq_trt.smooth.config import SmoothConfig
from sq_trt.yaml_io import read_text_file, safe_load_bounded, short_repr, shorten

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _plain_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{what} must be a plain name of letters, digits, '-', '_' or '.', not starting with '.' "
            f"(it names a directory), got {value!r}"
        )
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Candidate(CandidateOptions):
    """One INT8 candidate exported, built and compared against the FP16 baseline.

    Its quantization fields (``act_mode``, ``encoding``, ``quantize_bmm``) are
    :class:`sq_trt.export.config.CandidateOptions`, the same as ``sq-trt export``'s flags.

    Attributes:
        name: Directory-safe name (``sq-per-token``); gate conditions may name it.
        smooth: Export a smoothed model (True) or the original one (naive W8A8).
        smoothing: The candidate's own smoothing (a whole :class:`~sq_trt.smooth.config.SmoothConfig`,
            its defaults where a field is not given); None: the recipe's ``smooth`` section.
            Candidates whose smoothing is equal share one smooth stage.
    """

    name: str = Field(description="directory-safe candidate name; gate conditions may name it")
    smooth: bool = Field(default=True, description="export a smoothed model (false: naive W8A8)")
    smoothing: SmoothConfig | None = Field(
        default=None,
        description="the candidate's own smoothing (a smooth section: alpha, include_optional, search...); "
        "null: the recipe's smooth section",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain_name(value, "candidate name")

    @model_validator(mode="after")
    def _smoothing_needs_smooth(self) -> Candidate:
        if self.smoothing is not None and not self.smooth:
            raise ValueError(
                f"candidate {self.name!r} has smooth: false and its own smoothing; remove `smoothing` for "
                "naive W8A8, or set smooth: true"
            )
        return self

    def smooth_config(self, shared: SmoothConfig) -> SmoothConfig | None:
        """The smoothing this candidate exports with: its own, the recipe's ``shared`` one, or None (naive)."""
        if not self.smooth:
            return None
        return self.smoothing if self.smoothing is not None else shared


def smoothing_key(config: SmoothConfig) -> str:
    """The canonical hash of a smoothing config (equal configs, however spelled, share one smooth result)."""
    return hash_json(config.model_dump(mode="json"))


def _default_candidates() -> list[Candidate]:
    return [
        Candidate(name="naive-per-token", smooth=False, act_mode="per_token"),
        Candidate(name="sq-per-tensor", smooth=True, act_mode="per_tensor"),
        Candidate(name="sq-per-token", smooth=True, act_mode="per_token"),
        Candidate(name="sq-per-token-plugin", smooth=True, act_mode="per_token", encoding="plugin"),
    ]


class ExportSection(GraphOptions):
    """ONNX export: the candidates, and the :class:`sq_trt.export.config.GraphOptions` they share.

    Attributes:
        candidates: INT8 candidates (each gets an export directory and engines).
    """

    candidates: list[Candidate] = Field(
        default_factory=_default_candidates, description="INT8 candidates (each exported, built, compared)"
    )

    @field_validator("candidates")
    @classmethod
    def _unique(cls, value: list[Candidate]) -> list[Candidate]:
        if not value:
            raise ValueError("needs at least one candidate")
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidate names must be unique, got duplicates {dupes}")
        return value

    @model_validator(mode="after")
    def _exporter_accepts_every_candidate(self) -> ExportSection:
        # Whatever the exporter refuses for a combination (with_past + quantize_bmm...) fails here,
        # when the recipe is loaded, not after calibrate and smooth have run.
        for candidate in self.candidates:
            try:
                export_config(self, candidate)
            except ValidationError as exc:
                problems = "; ".join(stage_config.format_errors(exc, ExportConfig, root_label=""))
                raise ValueError(f"candidate {candidate.name!r}: {problems}") from None
        return self


def export_config(section: GraphOptions, candidate: CandidateOptions, *, encoding: str | None = None) -> ExportConfig:
    """The :class:`~sq_trt.export.config.ExportConfig` of one candidate (the one recipe -> export conversion).

    Args:
        section: The recipe's ``export`` section (the shared graph options).
        candidate: The candidate.
        encoding: The resolved encoding (``None``: the candidate's own, possibly ``auto``).

    Raises:
        ValidationError: A combination the exporter refuses.
    """
    shared = {name: getattr(section, name) for name in GraphOptions.model_fields}
    own = {name: getattr(candidate, name) for name in CandidateOptions.model_fields}
    if encoding is not None:
        own["encoding"] = encoding
    return ExportConfig(**shared, **own)


class BuildSection(BuildOptions):
    """Engine builds (one FP16 engine per export, one INT8 per candidate).

    The shared fields are :class:`sq_trt.engine.config.BuildOptions` (a build recipe's and
    ``sq-trt build``'s); the two below are what a run of several engines decides.
    """

    backend: Literal["auto", "tensorrt", "tensorrt_rtx", "none"] = Field(
        default="auto",
        description="auto (tensorrt when importable with a GPU visible, else tensorrt_rtx), tensorrt, "
        "tensorrt_rtx, or none (skip the build stage)",
        json_schema_extra={"cli": "--backend"},
    )
    fp16_engine: bool = Field(
        default=True,
        description="also build the FP16 baseline engine (sq-trt build: run it on model.fp16.onnx)",
        json_schema_extra={"cli": "--onnx", "cli_form": "a second sq-trt build of model.fp16.onnx"},
    )


class CompareSection(CompareOptions):
    """Accuracy comparison of every candidate against the FP16 baseline on held-out text.

    The shared fields are :class:`sq_trt.compare.config.CompareOptions` (``sq-trt compare``'s
    flags); the two below choose what a multi-candidate run compares, which ``sq-trt compare``
    states directly with ``--baseline`` / ``--candidate`` and ``--rank-layers``.
    """

    runner: Literal["auto", "onnxruntime", "tensorrt"] = Field(
        default="auto",
        description="auto (TensorRT engines on a GPU host, else ONNX Runtime), onnxruntime or tensorrt",
        json_schema_extra={"cli": "--candidate", "cli_form": "NAME=model.int8.onnx runs ONNX Runtime, NAME=x.plan TensorRT"},
    )
    layer_ranking: bool = Field(
        default=True,
        description="also rank the quantized layers by their error contribution (PyTorch, slower)",
        json_schema_extra={"cli": "--rank-layers", "cli_form": "--rank-layers MODEL turns it on"},
    )


class Recipe(_Section):
    """A whole pipeline run.

    Attributes:
        kind: Always ``pipeline`` (a build recipe of ``sq-trt build`` has no ``kind``).
        name: Recipe name; names the work and engines directories.
        description: Free text.
        work_dir: Stage artifacts (default ``work/<name>``).
        engines_dir: Engines (default ``engines/<name>``).
        gate: Conditions ``[candidate:]metric OP value`` (see :mod:`sq_trt.compare.gate`).
        build_jobs: Engines built at once, each in its own process. 0 (default): one per CPU
            core for TensorRT-RTX, as many as the available memory holds (about six times each
            ONNX file's size); 1 for TensorRT proper, which times kernels on the GPU, where
            concurrent builds would disturb each other's timing. Scheduling only: no artifact
            depends on it.
    """

    kind: Literal["pipeline"]
    name: str
    description: str = ""
    work_dir: Path | None = None
    engines_dir: Path | None = None
    build_jobs: int = Field(default=0, ge=0)
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    smooth: SmoothConfig = Field(default_factory=SmoothConfig)
    export: ExportSection = Field(default_factory=ExportSection)
    build: BuildSection = Field(default_factory=BuildSection)
    compare: CompareSection = Field(default_factory=CompareSection)
    gate: list[str] = Field(default_factory=lambda: ["sq-per-token:ppl_increase_pct<=5"])
    report: ReportOptions = Field(default_factory=ReportOptions)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain_name(value, "recipe name")

    @field_validator("gate")
    @classmethod
    def _gate_conditions(cls, value: list[str]) -> list[str]:
        from sq_trt.compare.gate import GateCondition

        for text in value:
            try:
                GateCondition.parse(text)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _hybrid_needs_a_planned_smoothing(self) -> Recipe:
        for candidate in self.export.candidates:
            if candidate.act_mode != "hybrid":
                continue
            config = candidate.smooth_config(self.smooth)
            if config is None or config.search.act_mode != "hybrid":
                raise ValueError(
                    f"candidate {candidate.name!r} has act_mode hybrid, which follows the plan its smoothing "
                    "measures: give it `smoothing: {alpha: auto, search: {act_mode: hybrid}}` (or set the smooth "
                    "section's search.act_mode to hybrid)"
                )
        return self

    @model_validator(mode="after")
    def _offload_needs_checkpoint_and_numeric_alpha(self) -> Recipe:
        if not self.model.offload:
            return self
        source = self.model.source
        if source.startswith("tiny:") or source.endswith(".gguf"):
            raise ValueError(
                f"model.offload streams layers from a saved checkpoint; {source!r} has none "
                "(set model.offload: false, or save the model with save_pretrained and give its directory)"
            )
        if self.smooth.needs_sampling:
            raise ValueError(
                "model.offload supports numeric alphas only, and no hybrid plan; set smooth.alpha to a number in "
                "[0, 1] and smooth.search.act_mode to per_token or per_tensor"
            )
        for candidate in self.export.candidates:
            if candidate.smoothing is not None and candidate.smoothing.needs_sampling:
                raise ValueError(
                    f"model.offload supports numeric alphas only; candidate {candidate.name!r} searches its "
                    "alphas (auto): give its smoothing numeric alphas, or set model.offload: false"
                )
        return self

    def smoothings(self) -> dict[str, SmoothConfig]:
        """Every distinct smoothing the candidates use, by :func:`smoothing_key`, in candidate order."""
        found: dict[str, SmoothConfig] = {}
        for candidate in self.export.candidates:
            config = candidate.smooth_config(self.smooth)
            if config is not None:
                found.setdefault(smoothing_key(config), config)
        return found

    @model_validator(mode="after")
    def _gate_names_candidates(self) -> Recipe:
        names = {c.name for c in self.export.candidates}
        for text in self.gate:
            prefix = text.split(":", 1)[0].strip() if ":" in text else None
            if prefix is not None and prefix not in names:
                raise ValueError(
                    f"gate: condition {text!r} names candidate {prefix!r}, which is not in export.candidates "
                    f"({sorted(names)})"
                )
        return self

    @property
    def resolved_work_dir(self) -> Path:
        """``work_dir`` or ``work/<name>``."""
        return self.work_dir if self.work_dir is not None else Path("work") / self.name

    @property
    def resolved_engines_dir(self) -> Path:
        """``engines_dir`` or ``engines/<name>``."""
        return self.engines_dir if self.engines_dir is not None else Path("engines") / self.name


# ----------------------------------------------------------------------------- loading and overrides


def format_errors(exc: ValidationError) -> list[str]:
    """One line per error: ``section.field: what is wrong (got X)``, with a hint for unknown fields."""
    hint = f" ({MODEL_HINT})"
    return stage_config.format_errors(
        exc, Recipe, missing_hint={"model": hint, "model.source": hint}, root_label="<recipe>"
    )


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Parse one ``--set section.field=value`` (value as YAML; list items by index).

    Raises:
        ConfigError: No ``=``, or an empty path.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {text!r} is not of the form section.field=value (e.g. --set smooth.alpha=0.7)"
        )
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    if any(p == "" for p in path):
        raise ConfigError(f"--set {text!r}: empty name in {key!r}")
    value = safe_load_bounded(raw, f"--set {shorten(text, 80)!r}: the value") if raw.strip() else ""
    return path, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with every ``--set`` applied (validation comes after).

    Raises:
        ConfigError: An override descends into a value that is not a mapping or a list,
            or indexes past a list's end.
    """
    import copy

    result: dict[str, Any] = copy.deepcopy(dict(data))
    for text in overrides:
        path, value = parse_override(text)
        node: Any = result
        for depth, part in enumerate(path[:-1]):
            if isinstance(node, list) and isinstance(part, int):
                if part >= len(node):
                    raise ConfigError(
                        f"--set {text!r}: index {part} is past the end of a list of {len(node)}"
                    )
                node = node[part]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                where = ".".join(str(p) for p in path[: depth + 1])
                raise ConfigError(f"--set {text!r}: {where} is a {type(node).__name__}, not a section")
        last = path[-1]
        if isinstance(node, dict):
            node[last] = value
            continue
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
            continue
        if isinstance(node, list) and isinstance(last, int):
            raise ConfigError(f"--set {shorten(text, 80)!r}: index {last} is past the end of a list of {len(node)}")
        where = ".".join(str(p) for p in path[:-1]) or "the recipe"
        raise ConfigError(f"--set {text!r}: {where} is a {type(node).__name__}, not a section or a list")
    return result


def validate_recipe(data: Mapping[str, Any], *, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping.

    Raises:
        ConfigError: Listing every invalid field, one per line.
    """
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as exc:
        lines = format_errors(exc)
        raise ConfigError(f"invalid recipe {source}:\n  " + "\n  ".join(lines)) from None


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe file.

    Raises:
        ConfigError: Missing file, invalid YAML, not a mapping, or a build recipe.
    """
    recipe = Path(path)
    if not recipe.is_file():
        raise ConfigError(
            f"recipe {recipe} does not exist; pass a pipeline recipe such as builders/smollm2-135m.yaml"
        )
    data = safe_load_bounded(read_text_file(recipe, "recipe"), f"recipe {recipe}")
    if not isinstance(data, dict):
        raise ConfigError(
            f"recipe {recipe} holds a {type(data).__name__}; expected a mapping with `kind: pipeline`"
        )
    if data.get("kind") != "pipeline":
        raise ConfigError(
            f"recipe {recipe} has kind {short_repr(data.get('kind'))}, expected 'pipeline'. A file without `kind: pipeline` "
            "is a build recipe: run it with `sq-trt build --recipe`"
        )
    return data


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Read a recipe file, apply ``--set`` overrides and validate.

    Args:
        path: The YAML recipe.
        overrides: ``section.field=value`` strings, applied in order.

    Returns:
        The validated recipe.

    Raises:
        ConfigError: Missing or invalid file, a bad override, or invalid fields (each named).
    """
    overrides = list(overrides)
    data = apply_overrides(read_recipe_file(path), overrides)
    source = str(path) + (f" with --set {' '.join(overrides)}" if overrides else "")
    return validate_recipe(data, source=source)
