"""The matrix recipe: models x targets x candidates, validated like a pipeline recipe.

A matrix recipe is a YAML file with ``kind: matrix``. Each model is a pipeline recipe (a file,
or the ``base`` recipe with another ``model.source``), with ``--set``-style overrides of its
own; the matrix's ``candidates`` and ``gate`` replace every model's. Targets say which TensorRT
backend builds their engines and how Ray places their tasks (a custom resource, an
``accelerator_type`` or node labels). Every model's pipeline recipe is validated when the
matrix is loaded, so a typo fails before anything is scheduled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from sq_trt import stage_config
from sq_trt.errors import ConfigError
from sq_trt.matrix import pipeline_adapter as pipeline
from sq_trt.stage_config import StageConfig
from sq_trt.yaml_io import read_text_file, safe_load_bounded, short_repr

_NAME_HINT = "letters, digits, '-', '_' or '.', not starting with '.'"


def _plain(value: str, what: str) -> str:
    if not value or value[0] == "." or not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError(f"{what} must be a plain name of {_NAME_HINT} (it names a directory), got {value!r}")
    return value


class Placement(StageConfig):
    """How Ray puts a task of a target on a node of that GPU kind (at least one field)."""

    resource: str | None = Field(
        default=None,
        description="a custom resource the target's nodes advertise (ray start --resources='{\"NAME\": 1}')",
    )
    amount: float = Field(
        default=1.0, gt=0, le=1024, description="how much of `resource` one task takes (1: one cell per node at a time)"
    )
    accelerator_type: str | None = Field(
        default=None, description="Ray accelerator type the target's nodes report, e.g. H100, A100, L4"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="node labels the target's nodes carry (ray start --labels=key=value)"
    )
    gpus: float = Field(
        default=0.0, ge=0, le=64, description="GPUs one task takes (1 for TensorRT proper, which builds on the GPU)"
    )

    @model_validator(mode="after")
    def _says_where(self) -> Placement:
        if self.resource is None and self.accelerator_type is None and not self.labels:
            raise ValueError("placement needs a resource, an accelerator_type or labels to find the target's nodes")
        return self

    def ray_options(self) -> dict[str, Any]:
        """The options of ``ray.remote(...).options()`` that place a task on this target."""
        options: dict[str, Any] = {}
        if self.resource is not None:
            options["resources"] = {self.resource: self.amount}
        if self.accelerator_type is not None:
            options["accelerator_type"] = self.accelerator_type
        if self.labels:
            options["label_selector"] = dict(self.labels)
        if self.gpus:
            options["num_gpus"] = self.gpus
        return options


class Target(StageConfig):
    """One GPU kind: its engines' backend and build settings, and where its tasks run."""

    name: str = Field(description="directory-safe target name (a column of the report)")
    backend: Literal["tensorrt", "tensorrt_rtx"] = Field(
        description="tensorrt (TensorRT proper, on a GPU of this kind) or tensorrt_rtx (ahead of time, any CPU)"
    )
    compute_capabilities: list[str] = Field(
        default_factory=list, description="TensorRT-RTX GPU architectures, e.g. [8.6] (empty: its default set)"
    )
    placement: Placement = Field(description="how Ray finds a node of this target")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain(value, "target name")

    @model_validator(mode="after")
    def _capabilities_are_rtx(self) -> Target:
        if self.compute_capabilities and self.backend != "tensorrt_rtx":
            raise ValueError(
                f"target {self.name!r}: compute_capabilities are TensorRT-RTX's; TensorRT proper builds for "
                "the GPU it runs on (place the target on that GPU kind instead)"
            )
        return self


class ModelEntry(StageConfig):
    """One model: a pipeline recipe file, or the matrix's ``base`` recipe with another source."""

    name: str = Field(description="directory-safe model name (rows of the report)")
    recipe: Path | None = Field(default=None, description="a pipeline recipe (relative to the matrix recipe)")
    source: str | None = Field(default=None, description="model.source on the base recipe (a hub id, dir, demo, tiny:llama)")
    set: list[str] = Field(default_factory=list, description="--set overrides of this model's recipe")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain(value, "model name")

    @model_validator(mode="after")
    def _one_origin(self) -> ModelEntry:
        if (self.recipe is None) == (self.source is None):
            raise ValueError(f"model {self.name!r} needs exactly one of `recipe` (a pipeline recipe) or `source`")
        return self


class MatrixConfig(StageConfig):
    """A whole matrix run (see the module docstring).

    Attributes:
        work_dir: Matrix report and the cells' reports (default ``work/<name>``).
        store: fsspec URL of the artifact store shared by every node (default ``<work_dir>/store``).
    """

    kind: Literal["matrix"]
    name: str = Field(description="matrix name (names the work directory)")
    description: str = Field(default="", description="free text")
    base: Path | None = Field(default=None, description="pipeline recipe for models given by `source`")
    models: list[ModelEntry] = Field(min_length=1, description="the models (rows)")
    targets: list[Target] = Field(min_length=1, description="the GPU targets (columns)")
    candidates: list[dict[str, Any]] | None = Field(
        default=None, description="INT8 candidates of every model (the pipeline's export.candidates); null: each recipe's"
    )
    gate: list[str] | None = Field(default=None, description="gate of every cell (the pipeline's); null: each recipe's")
    work_dir: Path | None = Field(default=None, description="matrix report and cell reports (default work/<name>)")
    store: str | None = Field(default=None, description="fsspec URL of the shared artifact store (default <work_dir>/store)")
    address: str | None = Field(
        default=None, description="Ray cluster to join (ray://host:10001 or host:6379); null: a local Ray instance"
    )
    retries: int = Field(default=2, ge=0, le=20, description="retries of a task lost with its worker or node")
    cpus_per_task: float = Field(default=1.0, gt=0, le=256, description="CPUs Ray reserves for each task")
    scratch_dir: Path | None = Field(default=None, description="node-local scratch for running tasks (default: the system temp dir)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain(value, "matrix name")

    @model_validator(mode="after")
    def _unique_names(self) -> MatrixConfig:
        for what, names in (("model", [m.name for m in self.models]), ("target", [t.name for t in self.targets])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique, got duplicates {dupes}")
        if self.base is None and any(m.source is not None for m in self.models):
            raise ValueError("models given by `source` need a `base` pipeline recipe")
        return self

    @property
    def resolved_work_dir(self) -> Path:
        """``work_dir`` or ``work/<name>``."""
        return self.work_dir if self.work_dir is not None else Path("work") / self.name

    @property
    def resolved_store(self) -> str:
        """``store`` or ``<work_dir>/store``; a local path made absolute (the tasks run in other directories)."""
        if self.store is not None and "://" in self.store:
            return self.store
        return str(Path(self.store or self.resolved_work_dir / "store").expanduser().resolve())


def model_recipe_data(config: MatrixConfig, entry: ModelEntry, root: Path) -> dict[str, Any]:
    """The raw pipeline recipe of one model, with the matrix's sections and the entry's overrides applied.

    Raises:
        ConfigError: A missing or invalid recipe file, or a bad override.
    """
    path = entry.recipe if entry.recipe is not None else config.base
    assert path is not None  # checked by MatrixConfig
    overrides = [*([f"model.source={entry.source}"] if entry.source is not None else []), *entry.set]
    data = pipeline.apply_overrides(pipeline.read_recipe_file(root / path), overrides)
    data["name"] = entry.name
    if config.candidates is not None:
        data.setdefault("export", {})["candidates"] = config.candidates
    if config.gate is not None:
        data["gate"] = config.gate
    return data


def read_matrix_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a matrix recipe file.

    Raises:
        ConfigError: Missing file, invalid YAML, not a mapping, or another kind of recipe.
    """
    recipe = Path(path)
    if not recipe.is_file():
        raise ConfigError(f"matrix recipe {recipe} does not exist; pass one such as builders/matrix-demo.yaml")
    data = safe_load_bounded(read_text_file(recipe, "matrix recipe"), f"matrix recipe {recipe}")
    if not isinstance(data, dict) or data.get("kind") != "matrix":
        kind = short_repr(data.get("kind")) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(
            f"matrix recipe {recipe} has kind {kind}, expected 'matrix' (a `kind: pipeline` recipe runs "
            "with `sq-trt pipeline`)"
        )
    return data


def load_matrix(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[MatrixConfig, dict[str, Any]]:
    """Read a matrix recipe, apply ``--set`` overrides, validate it and every model's pipeline recipe.

    Relative paths in it (``base``, a model's ``recipe``) are relative to the matrix file.

    Returns:
        The matrix config, and each model's validated pipeline recipe by model name.

    Raises:
        ConfigError: Every invalid field, named (``models.1.recipe``, ``targets.0.placement``).
    """
    overrides = list(overrides)
    data = pipeline.apply_overrides(read_matrix_file(path), overrides)
    source = str(path) + (f" with --set {' '.join(overrides)}" if overrides else "")
    try:
        config = MatrixConfig.model_validate(data)
    except ValidationError as exc:
        lines = stage_config.format_errors(exc, MatrixConfig, root_label="<matrix>")
        raise ConfigError(f"invalid matrix recipe {source}:\n  " + "\n  ".join(lines)) from None
    root = Path(path).resolve().parent
    recipes = {}
    for index, entry in enumerate(config.models):
        where = f"{source}: models.{index} ({entry.name})"
        recipes[entry.name] = pipeline.validate_recipe(model_recipe_data(config, entry, root), source=where)
    return config, recipes
