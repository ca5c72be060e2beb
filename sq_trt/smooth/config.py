"""The smooth stage's configuration: ``sq-trt smooth``'s flags and the recipe's ``smooth`` section.

Kept apart from :mod:`sq_trt.smooth.stage` (which needs torch) so that loading a recipe
or building the CLI parser stays light; :mod:`sq_trt.smooth.stage` re-exports both classes.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from sq_trt.stage_config import PlanActMode, StageConfig
from sq_trt.yaml_io import short_repr

AUTO: Literal["auto"] = "auto"
# Tokens of the first calibration sample on which smoothing must leave the outputs unchanged
# (sq-trt smooth and the pipeline use the same probe).
PROBE_TOKENS = 128


def check_alpha(value: Any, where: str = "alpha") -> float | Literal["auto"]:
    """A migration strength: a number in [0, 1] or ``auto``.

    Raises:
        ValueError: Anything else (pydantic turns it into a field error).
    """
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where} must be a number in [0, 1] or 'auto', got {short_repr(value)}")
    return float(value)


Alpha = Annotated[float | Literal["auto"], BeforeValidator(check_alpha)]


def _default_grid() -> tuple[float, ...]:
    return tuple(round(0.05 * i, 2) for i in range(21))


class AlphaSearchConfig(StageConfig):
    """How the automatic alpha search scores candidates (groups whose alpha is ``auto``)."""

    grid: tuple[float, ...] = Field(default_factory=_default_grid, description="candidate alphas, each in [0, 1]")
    act_mode: PlanActMode = Field(
        default="per_token",
        description="activation quantization the search minimises the error under: the mode you deploy "
        "(hybrid: measure both modes per linear, choose by plan_threshold/plan_budget, and search each "
        "group's alpha for the modes its linears will run in; writes quant_plan.json)",
    )
    plan_threshold: float = Field(
        # 1.5: on the demo the FLOP budget then binds (the 30 % of linear FLOPs whose static error exceeds
        # their per-token error most run per token): +0.71 % perplexity vs FP32 on pydoc, +1.09 % on the
        # GPL v3 text, against +2.64 % / +6.58 % all static (docs/benchmarks/hybrid.md, bench_hybrid_sweep.py).
        default=1.5,
        gt=1.0,
        le=1e6,
        description="hybrid: a linear is a per-token candidate when its static per-tensor output error exceeds "
        "its per-token error by more than this factor",
    )
    plan_budget: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="hybrid: the largest share of the linear FLOPs that may run per token (candidates are taken "
        "by error ratio, largest first)",
    )
    force_per_token: tuple[str, ...] = Field(
        default=(),
        description="hybrid: fnmatch globs of linears that always run per token (e.g. '*.down_proj')",
        json_schema_extra={"metavar": "GLOB"},
    )
    force_per_tensor: tuple[str, ...] = Field(
        default=(),
        description="hybrid: fnmatch globs of linears that always run static per tensor (wins over force_per_token)",
        json_schema_extra={"metavar": "GLOB"},
    )
    samples: int = Field(default=4, ge=1, description="calibration samples whose activations the search keeps")
    tokens_per_sample: int = Field(
        default=128, ge=1, description="evenly spaced tokens kept per sample (bounds memory)"
    )

    @field_validator("force_per_token", "force_per_tensor", mode="before")
    @classmethod
    def _globs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, list | tuple):
            if any(not isinstance(v, str) or not v for v in value):
                raise ValueError(f"must be non-empty module-name globs, got {short_repr(value)}")
            return tuple(value)
        return value

    @field_validator("plan_threshold", "plan_budget")
    @classmethod
    def _finite_plan(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return value

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("the alpha search grid is empty; give at least one alpha in [0, 1]")
            if any(v == AUTO for v in value):
                raise ValueError("the alpha search grid must hold numbers, not 'auto'")
            return tuple(check_alpha(_number(v), "every alpha of the search grid") for v in value)
        return value


def _number(value: Any) -> Any:
    # Command-line grids arrive as strings.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class SmoothConfig(StageConfig):
    """What to smooth and how."""

    alpha: Alpha = Field(default=0.5, description="migration strength for every group: [0, 1] or auto")
    overrides: tuple[tuple[str, Alpha], ...] = Field(
        default=(),
        description="per-group alphas: group glob -> alpha or auto (layers.*.mlp_in: 0.7); the last match wins",
        json_schema_extra={"cli": "--alpha-override"},
    )
    include_optional: bool = Field(
        default=False,
        description="also smooth the linear->linear pairs (v_proj->o_proj, up_proj->down_proj)",
        json_schema_extra={"cli": "--smooth-linear-pairs"},
    )
    min_scale: float = Field(default=1e-5, gt=0, description="lower clamp of every smoothing factor")
    search: AlphaSearchConfig = Field(
        default_factory=AlphaSearchConfig,
        description="the automatic alpha search",
        json_schema_extra={"cli": "--search-"},
    )

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides(cls, value: Any) -> Any:
        # A recipe writes a mapping (glob: alpha); the CLI repeats GLOB=ALPHA; both keep their order.
        if isinstance(value, dict):
            value = tuple(value.items())
        if not isinstance(value, list | tuple):
            # pydantic turns only ValueError into a field-level message; a TypeError would escape as a bug.
            raise ValueError(  # noqa: TRY004
                f"must map group globs to alphas, e.g. {{'layers.*.mlp_in': 0.7}}, got {short_repr(value)}"
            )
        checked = []
        for item in value:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise ValueError(f"an alpha override is a (glob, alpha) pair, got {short_repr(item)}")
            pattern, alpha = item
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"an alpha override needs a non-empty group pattern, got {pattern!r}")
            checked.append((pattern, check_alpha(alpha, f"the alpha of {pattern!r}")))
        return tuple(checked)

    @field_validator("min_scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"min_scale must be a positive finite number, got {value!r}")
        return value

    def alpha_for(self, group_name: str) -> float | Literal["auto"]:
        """The alpha of one group: the last matching override, else the global alpha."""
        alpha: float | Literal["auto"] = self.alpha
        for pattern, value in self.overrides:
            if fnmatchcase(group_name, pattern):
                alpha = value
        return alpha

    @property
    def needs_sampling(self) -> bool:
        """Whether the stage samples calibration activations: an ``auto`` alpha, or a hybrid plan to measure."""
        return self.needs_search or self.search.act_mode == "hybrid"

    @property
    def needs_search(self) -> bool:
        """Whether any group's alpha may be ``"auto"``."""
        return self.alpha == AUTO or any(value == AUTO for _, value in self.overrides)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form (for manifests)."""
        return self.model_dump(mode="json")
