"""The per-linear activation plan (``act_mode: hybrid``): static INT8 where it is safe, per token where needed.

TensorRT runs static per-tensor ``QuantizeLinear -> DequantizeLinear -> MatMul`` natively (its own
INT8 GEMMs and fusions); per-token activations need sq-trt's plugin nodes, which cut TensorRT's
graph. A static scale fails only on inputs where a few *tokens* carry huge activations (in
SmolLM2, the ``down_proj`` inputs). So the plan measures, for every quantized linear, its W8A8
output error on sampled calibration tokens under both modes, and chooses by one rule
(:func:`choose_modes`), never by module names:

1. ``force_per_token`` / ``force_per_tensor`` globs decide first (per tensor wins a tie: it is the
   conservative choice for speed; a linear matching both is named in the reason).
2. The linears that read one tensor (q/k/v, gate/up: one smoothing group) are decided together.
   They are a per-token candidate when their summed static error exceeds their summed per-token
   error by more than ``threshold`` times (each linear's error the smallest over the group's alpha
   grid, relative to its output's power).
3. Candidates are taken in order of that ratio, largest first, while the per-token share of the
   linear FLOPs (``in * out`` per token, summed) stays within ``budget``; the rest run static.

The plan is written as ``quant_plan.json`` (:data:`PLAN_FILE`, schema :data:`PLAN_SCHEMA`) into the
smoothed artifact that measured it and into every export (which adds each static linear's ``amax``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from sq_trt.errors import ArtifactError

PLAN_SCHEMA = "sq-trt/quant-plan/1"
PLAN_FILE = "quant_plan.json"
LinearMode = Literal["per_token", "per_tensor"]
LINEAR_MODES: tuple[str, ...] = ("per_token", "per_tensor")


@dataclass(frozen=True)
class PlanRule:
    """The settings of :func:`choose_modes` (from the smooth stage's ``search`` config)."""

    threshold: float = 1.5
    budget: float = 0.3
    force_per_token: tuple[str, ...] = ()
    force_per_tensor: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form, as recorded in the plan."""
        return {
            "threshold": self.threshold,
            "budget": self.budget,
            "force_per_token": list(self.force_per_token),
            "force_per_tensor": list(self.force_per_tensor),
        }


@dataclass(frozen=True)
class LinearMeasurement:
    """One linear's measured errors (relative MSE of its W8A8 output) and its cost.

    Attributes:
        name: Full module name (``model.layers.0.mlp.down_proj``).
        flops: ``in_features * out_features`` (multiply-adds per token).
        static_error: Smallest error over the alpha grid under static per-tensor activations.
        per_token_error: Smallest error over the alpha grid under per-token activations.
        unit: The linears reading the same input share a unit (a smoothing group's name); they are
            decided together. Empty: the linear alone.
    """

    name: str
    flops: int
    static_error: float
    per_token_error: float
    unit: str = ""

    @property
    def ratio(self) -> float:
        """How many times the static error exceeds the per-token one (inf when per-token is exact)."""
        if self.per_token_error <= 0.0:
            return math.inf if self.static_error > 0.0 else 1.0
        return self.static_error / self.per_token_error


@dataclass(frozen=True)
class LinearChoice:
    """The plan's entry for one linear."""

    act_mode: LinearMode
    reason: str
    flops: int = 0
    static_error: float | None = None
    per_token_error: float | None = None
    amax: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (``amax`` only for static linears that have one)."""
        out: dict[str, Any] = {"act_mode": self.act_mode, "reason": self.reason, "flops": self.flops}
        if self.static_error is not None:
            out["static_error"] = self.static_error
        if self.per_token_error is not None:
            out["per_token_error"] = self.per_token_error
        if self.act_mode == "per_tensor" and self.amax is not None:
            out["amax"] = self.amax
        return out


@dataclass
class QuantPlan:
    """Which activation mode each quantized linear runs in.

    Attributes:
        linears: Module name -> choice, in model order.
        smoothed: The smoothed artifact directory the export used (None in the smooth stage's own copy).
        rule: The rule's settings, or None for a uniform plan (every linear in one mode).
    """

    linears: dict[str, LinearChoice]
    smoothed: str | None = None
    rule: PlanRule | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def modes(self) -> dict[str, LinearMode]:
        """Module name -> ``per_token`` / ``per_tensor``."""
        return {name: choice.act_mode for name, choice in self.linears.items()}

    def names(self, mode: LinearMode) -> list[str]:
        """The linears in ``mode``, in model order."""
        return [name for name, choice in self.linears.items() if choice.act_mode == mode]

    def per_token_flops_share(self) -> float:
        """The share of the linear FLOPs that runs per token (0 when no FLOPs are recorded)."""
        return per_token_share(self.linears.values())

    @classmethod
    def uniform(cls, flops: Mapping[str, int], mode: LinearMode, *, reason: str) -> QuantPlan:
        """Every linear in one mode (the plan of a ``per_token`` or ``per_tensor`` candidate)."""
        return cls({name: LinearChoice(mode, reason, flops=count) for name, count in flops.items()})

    def to_json(self) -> dict[str, Any]:
        """The ``quant_plan.json`` document."""
        return {
            "schema": PLAN_SCHEMA,
            "smoothed": self.smoothed,
            "rule": self.rule.to_json() if self.rule is not None else None,
            "per_token_flops_share": round(self.per_token_flops_share(), 6),
            "linears": {name: choice.to_json() for name, choice in self.linears.items()},
        }


def per_token_share(choices: Iterable[LinearChoice]) -> float:
    """Per-token FLOPs over all FLOPs of ``choices`` (0 when they record none)."""
    choices = list(choices)
    total = sum(c.flops for c in choices)
    if total <= 0:
        return 0.0
    return sum(c.flops for c in choices if c.act_mode == "per_token") / total


def _forced(name: str, rule: PlanRule) -> tuple[LinearMode, str] | None:
    tensor = next((p for p in rule.force_per_tensor if fnmatchcase(name, p)), None)
    token = next((p for p in rule.force_per_token if fnmatchcase(name, p)), None)
    if tensor is not None:
        both = f" (also matches force_per_token {token!r}; per tensor wins)" if token is not None else ""
        return "per_tensor", f"forced by force_per_tensor {tensor!r}{both}"
    if token is not None:
        return "per_token", f"forced by force_per_token {token!r}"
    return None


def _unit_ratio(members: Sequence[LinearMeasurement]) -> float:
    static = sum(m.static_error for m in members)
    token = sum(m.per_token_error for m in members)
    return LinearMeasurement("", 0, static, token).ratio


def choose_modes(measured: Sequence[LinearMeasurement], rule: PlanRule) -> dict[str, LinearChoice]:
    """Apply the plan's rule (module docstring) to measured linears.

    Linears that read the same tensor (one ``unit``: q/k/v, gate/up) share one decision, made on
    their summed errors: their inputs are the same tokens, and one activation quantizer per
    input is what the graph shares. Forced globs still apply to single linears.

    Args:
        measured: Every quantized linear, in model order.
        rule: Threshold, FLOP budget and forced globs.

    Returns:
        Module name -> choice with its reason, in the order of ``measured``.
    """
    total = sum(m.flops for m in measured) or 1
    decided: dict[str, tuple[LinearMode, str]] = {}
    units: dict[str, list[LinearMeasurement]] = {}
    for m in measured:
        forced = _forced(m.name, rule)
        if forced is not None:
            decided[m.name] = forced
        else:
            units.setdefault(m.unit or m.name, []).append(m)
    spent = sum(m.flops for m in measured if decided.get(m.name, ("",))[0] == "per_token")
    ratios = {unit: _unit_ratio(members) for unit, members in units.items()}
    budget = f"{rule.budget:.0%} (per-token share of the linear FLOPs)"
    for unit in sorted(units, key=lambda u: -ratios[u]):
        members, ratio = units[unit], ratios[unit]
        head = f"static error {_times(ratio)} the per-token error"
        flops = sum(m.flops for m in members)
        if ratio <= rule.threshold:
            choice: tuple[LinearMode, str] = ("per_tensor", f"{head}, within the threshold {rule.threshold:g}")
        elif (spent + flops) / total <= rule.budget + 1e-12:
            spent += flops
            choice = ("per_token", f"{head} (threshold {rule.threshold:g}); within the FLOP budget {budget}")
        else:
            choice = ("per_tensor", f"{head} (threshold {rule.threshold:g}), but the FLOP budget {budget} is spent")
        decided.update({m.name: choice for m in members})
    return {
        m.name: LinearChoice(
            decided[m.name][0], decided[m.name][1], m.flops, m.static_error, m.per_token_error
        )
        for m in measured
    }


def _times(ratio: float) -> str:
    return "inf x" if math.isinf(ratio) else f"{ratio:.3g}x"


def write_plan(plan: QuantPlan, directory: Path) -> Path:
    """Write ``quant_plan.json`` into ``directory`` (an artifact's temporary directory)."""
    path = Path(directory) / PLAN_FILE
    path.write_text(json.dumps(plan.to_json(), indent=2, allow_nan=False) + "\n")
    return path


def _choice(name: str, raw: Any, where: str) -> LinearChoice:
    if not isinstance(raw, dict) or raw.get("act_mode") not in LINEAR_MODES:
        raise ArtifactError(f"{where}: linear {name!r} has no act_mode of {LINEAR_MODES}; re-export")
    numbers = {}
    for key in ("static_error", "per_token_error", "amax"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
            raise ArtifactError(f"{where}: linear {name!r} has {key}={value!r}, expected a finite number >= 0")
        numbers[key] = float(value) if value is not None else None
    flops = raw.get("flops", 0)
    if not isinstance(flops, int) or flops < 0:
        raise ArtifactError(f"{where}: linear {name!r} has flops={flops!r}, expected an integer >= 0")
    return LinearChoice(raw["act_mode"], str(raw.get("reason", "")), flops, **numbers)


def plan_from_json(data: Any, where: str = PLAN_FILE) -> QuantPlan:
    """Parse a ``quant_plan.json`` document.

    Raises:
        ArtifactError: Wrong schema, or a malformed entry.
    """
    if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{where}: schema {found!r}, expected {PLAN_SCHEMA!r}; re-run the stage that wrote it")
    linears = data.get("linears")
    if not isinstance(linears, dict) or not linears:
        raise ArtifactError(f"{where}: no linears; re-run the stage that wrote it")
    rule_data = data.get("rule")
    rule = None
    if isinstance(rule_data, dict):
        rule = PlanRule(
            float(rule_data.get("threshold", PlanRule.threshold)),
            float(rule_data.get("budget", PlanRule.budget)),
            tuple(rule_data.get("force_per_token", ())),
            tuple(rule_data.get("force_per_tensor", ())),
        )
    smoothed = data.get("smoothed")
    return QuantPlan(
        {str(name): _choice(str(name), raw, where) for name, raw in linears.items()},
        smoothed=str(smoothed) if smoothed is not None else None,
        rule=rule,
    )


def read_plan(directory: Path) -> QuantPlan | None:
    """The plan in an artifact directory, None when it has none.

    Raises:
        ArtifactError: The file is not valid JSON or not a plan.
    """
    path = Path(directory) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable plan ({exc}); re-run the stage that wrote it") from exc
    return plan_from_json(data, str(path))


def load_plan(directory: str | Path) -> QuantPlan | None:
    """The plan of an artifact (smoothed or export), verified against its manifest; None when it has none.

    Raises:
        ArtifactError: The directory is not an artifact, or its plan is not the one its manifest lists.
    """
    from sq_trt.artifacts import load_manifest, verify_manifest_files

    root = Path(directory)
    manifest = load_manifest(root)
    if PLAN_FILE not in manifest.files:
        if (root / PLAN_FILE).exists():
            raise ArtifactError(f"{root}: {PLAN_FILE} is not listed in its manifest; rerun the stage that wrote it")
        return None
    verify_manifest_files(root, manifest, [PLAN_FILE])
    return read_plan(root)
