"""SmoothQuant: migrate activation outliers into the weights with folded per-channel factors.

For each smoothing group (an op whose output is exactly the input of some
linears, see :mod:`sq_trt.models.registry`) and input channel ``j``::

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

where ``max|W_j|`` is taken over column ``j`` of every linear of the group. The
preceding op's output channel ``j`` is divided by ``s_j`` (norm weight and bias,
or the preceding linear's output row and bias) and every following linear's
column ``j`` multiplied by ``s_j``: the model computes the same function while
its quantized inputs become flatter.

Channels with no signal (``max|X_j| = 0`` or ``max|W_j| = 0``) keep ``s_j = 1``
(nothing to migrate, and a tiny factor would blow up unseen activations); all
factors are clamped to at least ``min_scale``.

Under grouped-query attention one ``v_proj`` output channel feeds ``repeat``
head blocks of ``o_proj``'s input, so the factor lives in ``v_proj``'s channel
space and its statistics are the max over the repeated blocks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sq_trt.artifacts import artifact_dir
from sq_trt.artifacts.act_scales import ActScales, write_scales_file
from sq_trt.artifacts.smoothed import FACTORS_FILE, SMOOTH_STAGE
from sq_trt.errors import ArtifactError, ConfigError
from sq_trt.models import adapter
from sq_trt.models.registry import SmoothGroup, find_spec, quantizable_linears, smoothing_groups
from sq_trt.quant.smoothing import expand_to_inputs, reduce_to_prev, smoothing_factor
from sq_trt.smooth.config import AUTO, PROBE_TOKENS, Alpha, AlphaSearchConfig, SmoothConfig, check_alpha

if TYPE_CHECKING:
    from sq_trt.models.loading import LoadedModel
    from sq_trt.quant.plan import LinearMeasurement, QuantPlan



def check_override_patterns(config: SmoothConfig, group_names: Sequence[str]) -> None:
    """Refuse an alpha override whose glob matches no smoothing group (a typo would be silently ignored).

    Raises:
        ConfigError: Naming the pattern and an example group name.
    """
    for pattern, _ in config.overrides:
        if not any(fnmatchcase(name, pattern) for name in group_names):
            example = group_names[0] if group_names else "<none>"
            raise ConfigError(
                f"alpha override pattern {pattern[:80]!r} matches no smoothing group; group names look like "
                f"{example!r} (e.g. 'layers.*.mlp_in'); fix the pattern"
            )


def parse_override(text: str) -> tuple[str, Alpha]:
    """Parse a CLI override ``'<group glob>=<alpha|auto>'`` (e.g. ``'layers.3.*=0.7'``)."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern:
        raise ConfigError(
            f"alpha override {text!r} is not '<group glob>=<alpha>', e.g. 'layers.*.up_down=0.8'"
        )
    value = value.strip()
    if value == "auto":
        return pattern.strip(), AUTO
    try:
        return pattern.strip(), check_alpha(float(value), f"the alpha override {text!r}")
    except ValueError:
        raise ConfigError(f"alpha override {text!r}: {value!r} is not a number in [0, 1] or 'auto'") from None


@dataclass
class SmoothResult:
    """What :func:`smooth_model` did.

    Attributes:
        factors: Group name -> float32 factor ``s`` (in the preceding op's channel space).
        alphas: Group name -> alpha used (searched ones resolved to their value).
        searched: Group name -> ``{alpha: error}`` for groups whose alpha was searched.
        groups: The groups smoothed, in order.
    """

    factors: dict[str, torch.Tensor]
    alphas: dict[str, float]
    searched: dict[str, dict[float, float]]
    groups: list[SmoothGroup]
    max_difference: float = 0.0  # largest relative output difference on the probe (see :func:`run`)
    plan: QuantPlan | None = None  # search.act_mode hybrid: each linear's activation mode (quant_plan.json)


def _weight(module: Any, layout: str) -> torch.Tensor:
    return module.weight.t() if layout == "conv1d" else module.weight


def group_act_amax(scales: ActScales, group: SmoothGroup) -> torch.Tensor:
    """Per input channel max ``|X|`` of the group's shared input (input-channel space)."""
    stats = [scales.input_channel_amax[name].float() for name in group.linears]
    return torch.stack(stats).amax(dim=0)


def group_weight_amax(modules: Mapping[str, Any], group: SmoothGroup, layout: str) -> torch.Tensor:
    """Per input channel max ``|W|`` over every linear of the group (input-channel space)."""
    columns = [
        _weight(modules[name], layout).detach().abs().amax(dim=0).float().cpu() for name in group.linears
    ]
    return torch.stack(columns).amax(dim=0)


def fold_factor(modules: Mapping[str, Any], group: SmoothGroup, factor: torch.Tensor, layout: str) -> None:
    """Divide the preceding op's output channels by ``factor`` and scale the linears' columns by it."""
    prev = modules[group.prev]
    with torch.no_grad():
        s = factor.to(device=prev.weight.device, dtype=prev.weight.dtype)
        if group.prev_kind == "linear":
            # Output channels are rows of [out, in]; Conv1D stores [in, out].
            prev.weight.div_(s[None, :] if layout == "conv1d" else s[:, None])
        else:
            prev.weight.div_(s)
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s)
        s_in = expand_to_inputs(s, group)
        for name in group.linears:
            weight = modules[name].weight
            weight.mul_(s_in[:, None] if layout == "conv1d" else s_in[None, :])


def smoothed_act_scales(scales: ActScales, result: SmoothResult) -> ActScales:
    """The statistics of the smoothed model, derived exactly from the original ones.

    Input channel maxima of the smoothed linears are divided by their factor and
    the per-tensor input maximum recomputed as ``max_j(amax_j / s_j)``; in
    linear->linear groups the preceding linear's output maxima are divided too.
    """
    new = ActScales(
        {k: v.clone() for k, v in scales.input_channel_amax.items()},
        {k: v.clone() for k, v in scales.input_amax.items()},
        {k: v.clone() for k, v in scales.output_amax.items()},
        dict(scales.meta),
        {k: v.clone() for k, v in scales.output_channel_amax.items()},
        # q/k/p of attention are unchanged by smoothing (v is v_proj's output_amax, updated below).
        {k: v.clone() for k, v in scales.bmm_amax.items()},
    )
    for group in result.groups:
        factor = result.factors[group.name]
        s_in = expand_to_inputs(factor, group)
        for name in group.linears:
            channel = new.input_channel_amax[name] / s_in
            new.input_channel_amax[name] = channel
            new.input_amax[name] = channel.max()
        if group.prev_kind == "linear" and group.prev in new.output_amax:
            if group.prev in new.output_channel_amax:
                channel = new.output_channel_amax[group.prev] / factor
                new.output_channel_amax[group.prev] = channel
                new.output_amax[group.prev] = channel.max()
            else:
                # Artifact without per-channel output maxima: a safe upper bound.
                new.output_amax[group.prev] = new.output_amax[group.prev] / factor.min()
    return new


def smooth_model(
    model: Any,
    scales: ActScales,
    config: SmoothConfig,
    *,
    search_inputs: Mapping[str, torch.Tensor] | None = None,
) -> SmoothResult:
    """Apply SmoothQuant to ``model`` in place.

    Args:
        model: A model of a registered family, with the weights ``scales`` was recorded on.
        scales: Its activation statistics (:func:`sq_trt.calibrate.stage.calibrate`).
        config: Alphas and which groups to smooth.
        search_inputs: Group name -> sampled input activations ``[tokens, in_features]``
            (:func:`sq_trt.smooth.search.collect_group_inputs`); required when any alpha is ``"auto"``.

    Returns:
        The factors and alphas per group.

    Raises:
        ConfigError: ``"auto"`` alpha without ``search_inputs`` for a group.
        ArtifactError: ``scales`` lacks a linear of a group.
    """
    from tqdm.auto import tqdm

    from sq_trt.smooth.search import search_alpha

    layout = find_spec(model).weight_layout
    modules = dict(model.named_modules())
    groups = smoothing_groups(model, include_optional=config.include_optional)
    check_override_patterns(config, [group.name for group in groups])
    result = SmoothResult({}, {}, {}, groups)
    planned: dict[str, float] = {}
    if config.search.act_mode == "hybrid":
        planned = plan_hybrid(model, scales, config, search_inputs, result)
    # The search is the smooth stage's cost (minutes on a large model): show it per group.
    searching = config.needs_search and not planned
    for group in tqdm(groups, desc="alpha search", unit="group", disable=not searching):
        missing = [name for name in group.linears if name not in scales.input_channel_amax]
        if missing:
            raise ArtifactError(
                f"act_scales has no statistics for {missing[0]} (group {group.name}); recalibrate"
            )
        act_amax = group_act_amax(scales, group)
        weight_amax = group_weight_amax(modules, group, layout)
        alpha = planned.get(group.name, config.alpha_for(group.name))
        if alpha == AUTO:
            if search_inputs is None or group.name not in search_inputs:
                raise ConfigError(
                    f"alpha 'auto' for group {group.name} needs calibration activations to search on; "
                    "pass search_inputs (sq_trt.smooth.search.collect_group_inputs) or a numeric alpha"
                )
            weights = [_weight(modules[name], layout).detach() for name in group.linears]
            alpha, errors = search_alpha(
                search_inputs[group.name], weights, act_amax, group, config.search, min_scale=config.min_scale
            )
            result.searched[group.name] = errors
        factor = smoothing_factor(
            reduce_to_prev(act_amax, group),
            reduce_to_prev(weight_amax, group),
            float(alpha),
            min_scale=config.min_scale,
        )
        fold_factor(modules, group, factor, layout)
        result.factors[group.name] = factor
        result.alphas[group.name] = float(alpha)
    return result


def _unit_inputs(
    scales: ActScales, modules: Mapping[str, Any], unit: SmoothGroup, layout: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    missing = [name for name in unit.linears if name not in scales.input_channel_amax]
    if missing:
        raise ArtifactError(f"act_scales has no statistics for {missing[0]} ({unit.name}); recalibrate")
    return group_act_amax(scales, unit), [_weight(modules[name], layout).detach() for name in unit.linears]


@dataclass
class HybridMeasurements:
    """Every sampled unit's error table (:func:`sq_trt.smooth.search.measure_unit`) and each linear's best errors.

    Attributes:
        units: The groups and ``linear:`` units, in model order.
        tables: Unit name -> (the alphas tried, ``{mode: errors[alpha][linear]}``).
        measured: Each quantized linear's smallest error per mode over its unit's alphas, in model order.
    """

    units: list[SmoothGroup]
    tables: dict[str, tuple[list[float | None], dict[str, list[list[float]]]]]
    measured: list[LinearMeasurement]


def measure_hybrid(
    model: Any, scales: ActScales, config: SmoothConfig, search_inputs: Mapping[str, torch.Tensor] | None
) -> HybridMeasurements:
    """Measure every quantized linear under both modes, for each alpha its group may take.

    Groups are measured on the unsmoothed weights: a group's error depends only on its own
    factor (see :mod:`sq_trt.smooth.search`), so measuring before folding changes nothing.

    Raises:
        ConfigError: No sampled inputs for a unit (``search_inputs`` from another config).
        ArtifactError: ``scales`` lacks a linear.
    """
    from tqdm.auto import tqdm

    from sq_trt.quant.plan import LinearMeasurement
    from sq_trt.smooth.search import measure_unit, sampled_units

    layout = find_spec(model).weight_layout
    modules = dict(model.named_modules())
    units = sampled_units(model, include_optional=config.include_optional)
    tables: dict[str, tuple[list[float | None], dict[str, list[list[float]]]]] = {}
    measured: list[LinearMeasurement] = []
    for unit in tqdm(units, desc="hybrid plan: measuring", unit="group"):
        if search_inputs is None or unit.name not in search_inputs:
            raise ConfigError(
                f"the hybrid plan needs sampled calibration activations of {unit.name}; pass search_inputs "
                "(sq_trt.smooth.search.collect_search_inputs with this config)"
            )
        act_amax, weights = _unit_inputs(scales, modules, unit, layout)
        alpha = config.alpha_for(unit.name) if not unit.name.startswith("linear:") else None
        alphas: list[float | None] = list(config.search.grid) if alpha == AUTO else [alpha]  # type: ignore[list-item]
        table = measure_unit(search_inputs[unit.name], weights, act_amax, unit, alphas, min_scale=config.min_scale)
        tables[unit.name] = (alphas, table)
        for j, name in enumerate(unit.linears):
            flops = int(weights[j].shape[0] * weights[j].shape[1])
            static = min(row[j] for row in table["per_tensor"])
            token = min(row[j] for row in table["per_token"])
            measured.append(LinearMeasurement(name, flops, static, token, unit=unit.name))
    order = {name: i for i, name in enumerate(quantizable_linears(model))}
    measured.sort(key=lambda m: order.get(m.name, len(order)))
    return HybridMeasurements(units, tables, measured)


def decide_hybrid(
    measurements: HybridMeasurements, search: AlphaSearchConfig
) -> tuple[QuantPlan, dict[str, float], dict[str, dict[float, float]]]:
    """The plan by its rule (:func:`sq_trt.quant.plan.choose_modes`), then each group's alpha for its modes.

    Returns:
        ``(plan, group -> alpha to fold, searched group -> {alpha: error in the chosen modes})``.
    """
    from sq_trt.quant.plan import PlanRule, QuantPlan, choose_modes
    from sq_trt.smooth.search import best_alpha_for_modes

    rule = PlanRule(search.plan_threshold, search.plan_budget, search.force_per_token, search.force_per_tensor)
    plan = QuantPlan(choose_modes(measurements.measured, rule), rule=rule)
    modes = plan.modes()
    chosen: dict[str, float] = {}
    searched: dict[str, dict[float, float]] = {}
    for unit in measurements.units:
        alphas, table = measurements.tables[unit.name]
        if unit.name.startswith("linear:"):
            continue
        if len(alphas) == 1:
            chosen[unit.name] = float(alphas[0])  # type: ignore[arg-type]
            continue
        unit_modes = [modes[name] for name in unit.linears]
        chosen[unit.name], searched[unit.name] = best_alpha_for_modes(table, alphas, unit_modes)  # type: ignore[arg-type]
    return plan, chosen, searched


def plan_hybrid(
    model: Any,
    scales: ActScales,
    config: SmoothConfig,
    search_inputs: Mapping[str, torch.Tensor] | None,
    result: SmoothResult,
) -> dict[str, float]:
    """:func:`measure_hybrid` then :func:`decide_hybrid`; sets ``result.plan`` and ``result.searched``.

    Returns:
        Group name -> alpha to fold (numeric alphas as configured, ``auto`` ones searched).
    """
    plan, chosen, searched = decide_hybrid(measure_hybrid(model, scales, config, search_inputs), config.search)
    result.plan = plan
    result.searched.update(searched)
    return chosen


def _forward_logits(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = adapter.forward(model, input_ids)
    return out.float().cpu()


def reference_outputs(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The model's logits (decoders) or last hidden states (encoders) for an equivalence check."""
    return _forward_logits(model, input_ids)


def check_equivalence(
    model: Any, input_ids: torch.Tensor, reference: torch.Tensor, *, rtol: float = 1e-3
) -> float:
    """Check that the smoothed model computes what the original did.

    Args:
        model: The smoothed model.
        input_ids: The ids ``reference`` was computed on.
        reference: :func:`reference_outputs` of the original model.
        rtol: Allowed max abs difference relative to the reference's max abs value.
            Folding only reassociates float32 products (~1e-7 each), so 1e-3 has a
            wide margin yet catches any wrong fold (those are O(1)).

    Returns:
        The measured relative difference.

    Raises:
        AssertionError: The smoothed model computes another function (a bug, not a user error).
    """
    actual = _forward_logits(model, input_ids)
    relative = float((actual - reference).abs().max() / reference.abs().max().clamp(min=1e-30))
    assert relative <= rtol, (
        f"smoothing changed the model's outputs: relative difference {relative:.3g} > {rtol}"
    )
    return relative


def save_smoothed(
    path: str | os.PathLike[str],
    loaded: LoadedModel,
    result: SmoothResult,
    smoothed_scales: ActScales,
    *,
    force: bool = False,
    config: SmoothConfig | None = None,
    source_fingerprint: str | None = None,
    max_shard_size: int | str = "1GB",
) -> Path:
    """Write the smoothed artifact (stage ``smooth``).

    Contents: Hugging Face ``save_pretrained`` files (model + tokenizer),
    ``smoothing.safetensors`` (group -> factor) and ``act_scales.safetensors``
    (the statistics of the smoothed model).

    Args:
        path: Output directory (written atomically).
        loaded: The smoothed model (after :func:`smooth_model`).
        result: The factors and alphas.
        smoothed_scales: :func:`smoothed_act_scales` of the calibration statistics.
        force: Replace an existing directory.
        config: The config used (recorded in the manifest).
        source_fingerprint: Fingerprint of the unsmoothed model; defaults to the one
            the statistics were recorded on.
        max_shard_size: Largest safetensors shard. ``save_pretrained`` assembles one shard
            in memory at a time, and its default (50GB) makes a 1B model one 4.9 GB shard.

    Returns:
        The artifact directory.
    """
    from safetensors.torch import save_file

    fingerprint = loaded.fingerprint()
    meta = smoothed_scales.meta
    source = source_fingerprint or meta.get("source_model_fingerprint") or meta.get("model_fingerprint", "")
    include_optional = any(group.optional for group in result.groups) or (
        config is not None and config.include_optional
    )
    extra = {
        "model_fingerprint": fingerprint,
        "source_model_fingerprint": source,
        "model_source": meta.get("model_source", loaded.source),
        "alphas": result.alphas,
        "family": loaded.spec.family,
        "include_optional": include_optional,
        "data": meta.get("data"),
        "num_samples": meta.get("num_samples"),
        "seq_len": meta.get("seq_len"),
        "linears": meta.get("linears"),
    }
    scales_meta = {**meta, "model_fingerprint": fingerprint, "source_model_fingerprint": source}
    out_scales = ActScales(
        smoothed_scales.input_channel_amax,
        smoothed_scales.input_amax,
        smoothed_scales.output_amax,
        scales_meta,
        smoothed_scales.output_channel_amax,
        smoothed_scales.bmm_amax,
    )
    with artifact_dir(
        path,
        stage=SMOOTH_STAGE,
        config=config.to_json() if config is not None else {},
        inputs={"model": source, "smoothed_model": fingerprint},
        extra=extra,
        force=force,
    ) as tmp:
        loaded.model.save_pretrained(tmp, max_shard_size=max_shard_size)
        loaded.tokenizer.save_pretrained(tmp)
        save_file({name: f.contiguous() for name, f in result.factors.items()}, str(tmp / FACTORS_FILE))
        write_scales_file(tmp, out_scales)
        if result.plan is not None:
            from sq_trt.quant.plan import write_plan

            write_plan(result.plan, tmp)
    return Path(path)


def describe_alphas(alphas: Mapping[str, float]) -> str:
    """One-line summary of the alphas used (``0.5 x 60`` or a histogram)."""
    counts: dict[float, int] = {}
    for value in alphas.values():
        counts[value] = counts.get(value, 0) + 1
    return ", ".join(f"{alpha:g} x {count}" for alpha, count in sorted(counts.items()))


def run(
    config: SmoothConfig,
    *,
    loaded: LoadedModel,
    scales: ActScales,
    chunks: torch.Tensor,
    out: str | os.PathLike[str],
    force: bool = False,
    progress: bool = True,
    search_inputs: Mapping[str, torch.Tensor] | None = None,
) -> SmoothResult:
    """The smooth stage on an in-memory model: what ``sq-trt smooth`` and the pipeline both call.

    Checks the override patterns against the model's groups (before the alpha search), samples
    the search's activations from the calibration ``chunks``, smooths ``loaded.model`` in place,
    checks it still computes the same outputs on the first :data:`PROBE_TOKENS` tokens, and
    writes the artifact.

    Args:
        config: Alphas, overrides and the search's settings.
        loaded: The model to smooth (modified in place; pass a copy to keep the original).
        scales: Its act_scales (checked against it by the caller).
        chunks: The calibration chunks the scales were recorded on.
        out: The smoothed artifact directory to write.
        force: Replace ``out``.
        progress: Show progress bars.
        search_inputs: The search's sampled group inputs of the unsmoothed model, when the
            caller already captured them for another smoothing of the same model and chunks
            (:func:`sq_trt.smooth.search.collect_group_inputs`); None: captured here when needed.

    Returns:
        The factors and alphas, with ``max_difference`` of the equivalence check.

    Raises:
        ConfigError: An override pattern matching no group; ``auto`` without activations.
    """
    from sq_trt.smooth.search import collect_search_inputs

    groups = smoothing_groups(loaded.model, include_optional=config.include_optional)
    check_override_patterns(config, [group.name for group in groups])
    source_fingerprint = scales.meta.get("model_fingerprint")
    probe = chunks[:1, :PROBE_TOKENS]
    reference = reference_outputs(loaded.model, probe)
    if search_inputs is None:
        search_inputs = collect_search_inputs(loaded.model, chunks, config, progress=progress)
    result = smooth_model(loaded.model, scales, config, search_inputs=search_inputs)
    result.max_difference = check_equivalence(loaded.model, probe, reference)
    save_smoothed(
        out,
        loaded,
        result,
        smoothed_act_scales(scales, result),
        force=force,
        config=config,
        source_fingerprint=source_fingerprint,
    )
    return result


__all__: Sequence[str] = (
    "AUTO",
    "PROBE_TOKENS",
    "AlphaSearchConfig",
    "SmoothConfig",
    "SmoothResult",
    "check_equivalence",
    "parse_override",
    "run",
    "save_smoothed",
    "smooth_model",
    "smoothed_act_scales",
    "smoothing_factor",
)
