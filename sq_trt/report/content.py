"""What a report says, independent of its format: verdict, metrics rows, layer rows, plots, provenance.

:func:`assemble` turns a compare artifact's ``comparison.json`` (plus optional
layer ranking, activation statistics and alpha sweep) into a :class:`Report`
that :mod:`sq_trt.report.html` and :mod:`sq_trt.report.markdown` render.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy and the plots load when a report is written, not when a recipe is read
    import numpy as np

# (key in the candidate summary, column title, format); the table shows these in order.
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ppl", "perplexity", "{:.3f}"),
    ("ppl_increase_pct", "ppl increase %", "{:+.2f}"),
    ("top1_agreement", "top-1 agree", "{:.2%}"),
    ("top5_agreement", "top-5 agree", "{:.2%}"),
    ("kl_mean", "KL mean (nats)", "{:.4g}"),
    ("cosine", "cosine", "{:.6f}"),
    ("row_cosine_min", "row cosine min", "{:.4f}"),
    ("abs_max", "abs err max", "{:.4g}"),
    ("abs_p99", "abs err p99", "{:.4g}"),
    ("abs_median", "abs err median", "{:.4g}"),
    ("rel_median", "rel err median", "{:.4g}"),
    ("exact_match_rate", "generation exact match", "{:.2%}"),
    ("mean_first_divergence", "first divergence (token)", "{:.1f}"),
    ("teacher_forced_top1", "teacher-forced top-1", "{:.2%}"),
)


@dataclass(frozen=True)
class Plot:
    """One figure: file name, caption and PNG bytes."""

    filename: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class ActivationPicture:
    """Per-channel input amax of one linear before and after smoothing."""

    layer: str
    before: np.ndarray
    after: np.ndarray


@dataclass
class Report:
    """Everything the renderers need."""

    title: str
    verdict: dict[str, Any]
    gate_conditions: list[str]
    baseline: dict[str, str]
    candidates: list[dict[str, Any]]
    columns: list[tuple[str, str, str]]
    layers: dict[str, Any] | None
    plots: list[Plot] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)  # candidate -> plan_summary()

    def provenance_items(self) -> dict[str, Any]:
        """What the numbers came from: host, versions, model, runners (paths and hashes), data."""
        runners = [self.baseline] + [
            {k: v for k, v in c.items() if k not in ("summary", "outputs", "plan")} for c in self.candidates
        ]
        return {**self.provenance, "runners": runners, "data": self.data}

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report (``report.json``): verdict first."""
        return {
            "verdict": self.verdict,
            "gate": self.gate_conditions,
            "baseline": self.baseline,
            "candidates": self.candidates,
            "layers": self.layers,
            "sweep": self.sweep,
            "plots": [{"file": f"plots/{p.filename}", "caption": p.caption} for p in self.plots],
            "data": self.data,
            "timing": self.timing,
            "provenance": self.provenance,
            **({"generation": self.generation} if self.generation else {}),
        }


def format_value(key: str, value: Any) -> str:
    """A metric formatted for a table cell (``n/a`` when absent or not a finite number, as the gate reads it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return "n/a"
    for column, _, fmt in METRIC_COLUMNS:
        if column == key:
            return fmt.format(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def assemble(
    comparison: Mapping[str, Any],
    *,
    layers: Mapping[str, Any] | None = None,
    activation: ActivationPicture | None = None,
    sweep: Mapping[str, Any] | None = None,
    top_layers: int = 15,
) -> Report:
    """Build the report content and its plots.

    Args:
        comparison: A loaded ``comparison.json`` (:func:`sq_trt.artifacts.comparison.load_comparison`).
        layers: The layer ranking (``layers.json``), if any.
        activation: The SmoothQuant picture's data, if calibration statistics were given.
        sweep: ``{"metric": name, "points": [{"alpha": a, name: v}, ...], "baseline": v?}``.
        top_layers: Layers shown in the ranking table and plot.
    """
    candidates = []
    for entry in comparison["candidates"]:
        name = entry["name"]
        metrics = comparison["metrics"].get(name, {})
        candidates.append(
            {**entry, "summary": metrics.get("summary", {}), "outputs": metrics.get("outputs", {})}
        )
    present = {key for c in candidates for key in c["summary"]}
    columns = [col for col in METRIC_COLUMNS if col[0] in present]

    report = Report(
        title=f"sq-trt accuracy report: {comparison.get('model', {}).get('source', 'model')}",
        verdict=dict(comparison["gate"]),
        gate_conditions=list(comparison.get("gate_conditions", [])),
        baseline=dict(comparison["baseline"]),
        candidates=candidates,
        columns=columns,
        layers=_top_layers(layers, top_layers),
        provenance=dict(comparison.get("provenance", {})),
        data=dict(comparison["data"]),
        timing=dict(comparison.get("timing", {})),
        sweep=dict(sweep) if sweep else None,
        generation=dict(comparison.get("generation", {})),
    )
    report.plots.extend(_plots(comparison, report.layers, activation, sweep))
    report.plans = {c["name"]: plan_summary(c["plan"]) for c in candidates if isinstance(c.get("plan"), dict)}
    for name, plan in report.plans.items():
        if plan["per_token"] and plan["per_tensor"]:  # a mixed plan: where each mode runs is the story
            report.plots.append(_plan_plot(name, plan))
    return report


def plan_summary(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What the report says of one candidate's ``quant_plan.json``: counts, FLOP shares, the per-token linears."""
    linears = plan.get("linears", {})
    total = sum(int(e.get("flops", 0)) for e in linears.values()) or 1
    token = [name for name, e in linears.items() if e.get("act_mode") == "per_token"]
    rows = []
    for name in token:
        entry = linears[name]
        static, dynamic = entry.get("static_error"), entry.get("per_token_error")
        ratio = static / dynamic if static is not None and dynamic else None
        rows.append({"name": name, "static_error": static, "per_token_error": dynamic, "ratio": ratio,
                     "reason": entry.get("reason", "")})
    share = sum(int(linears[n].get("flops", 0)) for n in token) / total
    return {
        "linears": len(linears),
        "per_token": len(token),
        "per_tensor": len(linears) - len(token),
        "per_token_flops_share": share,
        "rule": plan.get("rule"),
        "per_token_rows": rows,
        "all": {name: dict(e) for name, e in linears.items()},
    }


def _plan_plot(candidate: str, plan: Mapping[str, Any]) -> Plot:
    """The per-layer picture of a mixed plan: which linears run per token, and the measured error ratios."""
    import re

    layers: dict[str, dict[str, tuple[float | None, bool]]] = {}
    kinds: list[str] = []
    for name, entry in plan["all"].items():
        match = re.search(r"\.(\d+)\.(.+)$", name)
        layer, kind = (match.group(1), match.group(2)) if match else ("-", name)
        if kind not in kinds:
            kinds.append(kind)
        static, dynamic = entry.get("static_error"), entry.get("per_token_error")
        ratio = static / dynamic if static is not None and dynamic else None
        layers.setdefault(layer, {})[kind] = (ratio, entry.get("act_mode") == "per_token")
    rows = list(layers)
    ratios = [[layers[r].get(k, (None, False))[0] for k in kinds] for r in rows]
    chosen = [[layers[r].get(k, (None, False))[1] for k in kinds] for r in rows]
    from sq_trt.report import plots  # matplotlib: only when a report draws

    share = plan["per_token_flops_share"]
    title = f"{candidate}: {plan['per_token']} of {plan['linears']} linears per token ({share:.1%} of linear FLOPs)"
    png = plots.activation_plan(rows, kinds, ratios, chosen, title)
    caption = (
        f"Activation plan of {candidate}: for every linear, how many times its static per-tensor INT8 output error "
        "exceeds its per-token error on calibration tokens; marked cells run per token (sq-trt's plugin or portable "
        "subgraph), the rest run TensorRT's native static INT8."
    )
    return Plot(f"plan_{candidate}.png", caption, png)


def _top_layers(layers: Mapping[str, Any] | None, top: int) -> dict[str, Any] | None:
    if not layers:
        return None
    return {**layers, "layers": list(layers["layers"])[:top], "total_layers": len(layers["layers"])}


def _plots(
    comparison: Mapping[str, Any],
    layers: Mapping[str, Any] | None,
    activation: ActivationPicture | None,
    sweep: Mapping[str, Any] | None,
) -> list[Plot]:
    from sq_trt.report import plots

    result: list[Plot] = []
    if activation is not None:
        result.append(
            Plot(
                "activation_smoothing.png",
                f"Per-channel input range of {activation.layer} before and after SmoothQuant: the outlier channels "
                "that force a coarse INT8 scale are flattened, their range moved into the weights.",
                plots.activation_smoothing(activation.before, activation.after, activation.layer),
            )
        )
    histograms = comparison.get("histograms", {})
    outputs = sorted({out for per_cand in histograms.values() for out in per_cand})
    for index, output in enumerate(outputs):
        per_candidate = {name: h[output] for name, h in histograms.items() if output in h}
        result.append(
            Plot(
                f"error_histogram_{index}.png",
                f"Distribution of |candidate - baseline| over every element of `{output}`.",
                plots.error_histograms(per_candidate, output),
            )
        )
    if layers and layers.get("layers"):
        rows = layers["layers"]
        result.append(
            Plot(
                "layer_ranking.png",
                "Each bar: the final next-token KL when only that linear is W8A8-quantized (leave-one-in).",
                plots.layer_ranking([r["name"] for r in rows], [r["kl_leave_one_in"] for r in rows]),
            )
        )
    if sweep and sweep.get("points"):
        metric = sweep.get("metric", "ppl")
        result.append(
            Plot(
                "alpha_sweep.png",
                f"{metric} of the W8A8 model against SmoothQuant's alpha.",
                plots.alpha_sweep(sweep["points"], metric, sweep.get("baseline")),
            )
        )
    return result


def pick_outlier_layer(
    before: Mapping[str, Any], candidates: Sequence[str] | None = None, after: Mapping[str, Any] | None = None
) -> str:
    """The linear with the largest max/median input channel-range ratio (the most telling picture).

    With ``after``, only linears whose statistics smoothing changed are considered
    (a linear with no smoothing group would show the same picture twice).
    """
    import numpy as np

    names = list(candidates) if candidates is not None else list(before)
    if after is not None:
        changed = [n for n in names if n in after and not np.allclose(before[n], after[n], rtol=1e-3)]
        names = changed or names
    if not names:
        raise ValueError("no layers with activation statistics")

    def ratio(name: str) -> float:
        values = np.asarray(before[name], dtype=np.float64)
        return float(values.max() / max(np.median(values), 1e-30))

    return max(names, key=ratio)
