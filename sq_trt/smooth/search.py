"""Automatic alpha: pick each smoothing group's alpha from a grid by its W8A8 output error.

The approach Intel Neural Compressor takes for SmoothQuant: for every candidate
alpha, smooth the group's input and weights with that alpha, quantize both to
INT8 (weights per output channel, activations per token or per tensor) and
measure the mean squared error of the group's linear outputs against the
unquantized outputs, on activations sampled from calibration data. The alpha
with the smallest error wins.

Only the group's own factor changes its linears' quantization error: the
preceding op's output rows absorb ``1/s``, and per-output-channel weight
quantization is invariant to scaling rows, so groups are searched independently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from sq_trt.errors import DataError
from sq_trt.models.registry import SmoothGroup, smoothing_groups
from sq_trt.quant import reference
from sq_trt.quant.intgemm import int8_matmul
from sq_trt.quant.smoothing import expand_to_inputs, reduce_to_prev, smoothing_factor

if TYPE_CHECKING:
    from sq_trt.smooth.config import AlphaSearchConfig, SmoothConfig


class _TokenSampler:
    """Forward hook keeping evenly spaced tokens of one linear's input."""

    def __init__(self, tokens_per_sample: int) -> None:
        self.tokens_per_sample = tokens_per_sample
        self.rows: list[torch.Tensor] = []

    def __call__(self, module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0].detach()
        x = x.reshape(-1, x.shape[-1])
        count = min(self.tokens_per_sample, x.shape[0])
        index = torch.linspace(0, x.shape[0] - 1, count, device=x.device).round().long()
        self.rows.append(x[index].float().cpu())


def collect_search_inputs(
    model: Any, chunks: torch.Tensor, config: SmoothConfig, *, progress: bool = True
) -> dict[str, torch.Tensor] | None:
    """The group inputs ``smooth_model`` needs when ``config`` searches any alpha or plans, else None.

    Args:
        model: The model before smoothing.
        chunks: Calibration token chunks ``[n, seq]``.
        config: The smoothing config (its groups, and ``search`` sampling sizes).
        progress: Show a progress bar.
    """
    if not config.needs_sampling:
        return None
    if config.search.act_mode == "hybrid":
        groups = sampled_units(model, include_optional=config.include_optional)
    else:
        groups = smoothing_groups(model, include_optional=config.include_optional)
    return collect_group_inputs(
        model,
        chunks,
        groups,
        samples=config.search.samples,
        tokens_per_sample=config.search.tokens_per_sample,
        progress=progress,
    )


def collect_group_inputs(
    model: Any,
    chunks: torch.Tensor,
    groups: Sequence[SmoothGroup],
    *,
    samples: int = 4,
    tokens_per_sample: int = 128,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Sample the input activations of every group (of the unsmoothed model) for the search.

    Args:
        model: The model before smoothing.
        chunks: Calibration token ids ``[n, seq_len]``; the first ``samples`` rows are used.
        groups: The groups to collect for.
        samples: Calibration samples to run.
        tokens_per_sample: Evenly spaced tokens kept per sample.
        progress: Show a progress bar.

    Returns:
        Group name -> float32 ``[tokens, in_features]`` (on CPU).
    """
    from tqdm.auto import tqdm

    from sq_trt.models import adapter

    if chunks.dim() != 2 or chunks.shape[0] == 0:
        raise DataError(f"the alpha search needs calibration chunks [n>=1, seq], got {tuple(chunks.shape)}")
    modules = dict(model.named_modules())
    samplers = {group.name: _TokenSampler(tokens_per_sample) for group in groups}
    handles = [modules[group.linears[0]].register_forward_hook(samplers[group.name]) for group in groups]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for row in tqdm(
                chunks[:samples], desc="alpha search: sampling", unit="sample", disable=not progress
            ):
                # The body only: the LM head feeds no group, and its vocabulary-wide GEMM is pure cost.
                adapter.forward_body(model, row[None].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(sampler.rows) for name, sampler in samplers.items()}


def linear_output_errors(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    references: Sequence[torch.Tensor],
    input_factor: torch.Tensor,
    *,
    act_mode: str,
    act_amax: torch.Tensor,
    quantized_weights: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[float]:
    """The MSE of each linear's W8A8 output after smoothing by ``input_factor`` (see :func:`quantized_output_error`).

    ``quantized_weights`` (:func:`quantize_smoothed_weights` of the same factor) skips quantizing
    the weights again when both activation modes are measured for one factor.
    """
    smoothed = x / input_factor
    if act_mode == "per_token":
        x_q, amax = reference.quantize_per_token(smoothed)
        token_scale = amax.float() / reference.QMAX  # [tokens, 1], as dequantize() scales each token
    else:
        tensor_amax = (act_amax / input_factor).max()
        x_q = reference.quantize_per_tensor(smoothed, tensor_amax)
        token_scale = reference.per_tensor_scale(tensor_amax)
    if quantized_weights is None:
        quantized_weights = quantize_smoothed_weights(weights, input_factor)
    errors = []
    for (w_q, w_scale), ref in zip(quantized_weights, references, strict=True):
        out = int8_matmul(x_q, w_q).mul_(token_scale).mul_(w_scale[None, :])
        errors.append(float(out.sub_(ref).square_().mean()))
    return errors


def quantize_smoothed_weights(
    weights: Sequence[torch.Tensor], input_factor: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel INT8 of each weight ``[out, in]`` times ``input_factor`` (the smoothed weights)."""
    return [reference.quantize_weight_per_channel(w.float() * input_factor[None, :]) for w in weights]


def quantized_output_error(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    references: Sequence[torch.Tensor],
    input_factor: torch.Tensor,
    *,
    act_mode: str,
    act_amax: torch.Tensor,
) -> float:
    """Sum over the group's linears of the MSE of the W8A8 output after smoothing by ``input_factor``.

    The W8A8 output is the reference's (:func:`sq_trt.quant.reference.w8a8_gemm`): an exact
    integer GEMM of the int8 activations and weights (:mod:`sq_trt.quant.intgemm`), then the
    per-token (or per-tensor) times per-channel scales in float32; equal to the float GEMM of
    the fake-quantized operands up to that GEMM's rounding, at a fraction of its cost (this
    GEMM is the search's whole cost).

    Args:
        x: Sampled group input ``[tokens, in]`` (unsmoothed).
        weights: The group's weights ``[out, in]`` (unsmoothed).
        references: ``x @ w.T`` for each weight (the unquantized outputs).
        input_factor: Factor per input channel ``[in]``.
        act_mode: ``"per_token"`` or ``"per_tensor"``.
        act_amax: Calibrated per input channel max ``|X|`` (unsmoothed), for ``per_tensor``.
    """
    error = 0.0
    for value in linear_output_errors(
        x, weights, references, input_factor, act_mode=act_mode, act_amax=act_amax
    ):
        error += value
    return error


def search_alpha(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    act_amax: torch.Tensor,
    group: SmoothGroup,
    config: AlphaSearchConfig,
    *,
    min_scale: float = 1e-5,
) -> tuple[float, dict[float, float]]:
    """The grid alpha with the smallest W8A8 output error for one group.

    Args:
        x: Sampled input activations of the group ``[tokens, in]``.
        weights: Current weights of the group's linears ``[out, in]``.
        act_amax: Per input channel max ``|X|`` from calibration ``[in]``.
        group: The group (for the GQA channel mapping).
        config: Grid and activation mode.
        min_scale: Lower clamp of the factors.

    Returns:
        ``(best_alpha, {alpha: error})``; ties go to the first grid value.
    """
    x = x.float()
    weights = [w.detach().float().cpu() for w in weights]
    references = [x @ w.t() for w in weights]
    weight_amax = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0)
    prev_act = reduce_to_prev(act_amax.float(), group)
    prev_weight = reduce_to_prev(weight_amax, group)
    errors: dict[float, float] = {}
    with torch.inference_mode():
        for alpha in config.grid:
            factor = smoothing_factor(prev_act, prev_weight, float(alpha), min_scale=min_scale)
            errors[float(alpha)] = quantized_output_error(
                x,
                weights,
                references,
                expand_to_inputs(factor, group),
                act_mode=config.act_mode,
                act_amax=act_amax.float(),
            )
    best = min(errors, key=errors.__getitem__)  # first of equal minima: dicts keep grid order
    return best, errors


def sampled_units(model: Any, *, include_optional: bool) -> list[SmoothGroup]:
    """The smoothing groups plus one unit per quantized linear no group covers (the hybrid plan samples all).

    A linear outside every group (OPT's ``fc2`` after the ReLU, GPT-2's MLP ``c_proj``, or
    ``down_proj`` when the linear pairs are not smoothed) reads an input that smoothing leaves
    unchanged; it is measured with factor 1, under the name ``linear:<module name>``.
    """
    from sq_trt.models.registry import quantizable_linears

    groups = smoothing_groups(model, include_optional=include_optional)
    covered = {name for group in groups for name in group.linears}
    extra = [
        SmoothGroup(name=f"linear:{name}", prev=name, prev_kind="linear", linears=(name,))
        for name in quantizable_linears(model)
        if name not in covered
    ]
    return [*groups, *extra]


def measure_unit(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    act_amax: torch.Tensor,
    unit: SmoothGroup,
    alphas: Sequence[float | None],
    *,
    min_scale: float = 1e-5,
) -> dict[str, list[list[float]]]:
    """Each linear's relative W8A8 output error under both activation modes, for each alpha.

    Args:
        x: Sampled input ``[tokens, in]`` of the unit (unsmoothed).
        weights: Its linears' weights ``[out, in]`` (unsmoothed).
        act_amax: Calibrated per input channel max ``|X|`` ``[in]``.
        unit: The group (or a ``linear:`` unit, see :func:`sampled_units`).
        alphas: The alphas to try; None means no smoothing (factor 1).
        min_scale: Lower clamp of the factors.

    Returns:
        ``{"per_tensor": errors, "per_token": errors}``, ``errors[i][j]`` for ``alphas[i]`` and
        linear ``j``: the output MSE over the output's mean square (a scale-free error).
    """
    x = x.float()
    weights = [w.detach().float().cpu() for w in weights]
    references = [x @ w.t() for w in weights]
    power = [max(float(ref.square().mean()), 1e-30) for ref in references]
    act_amax = act_amax.float()
    weight_amax = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0)
    table: dict[str, list[list[float]]] = {"per_tensor": [], "per_token": []}
    with torch.inference_mode():
        for alpha in alphas:
            if alpha is None:
                factor = torch.ones_like(act_amax)
            else:
                prev = smoothing_factor(
                    reduce_to_prev(act_amax, unit), reduce_to_prev(weight_amax, unit), alpha, min_scale=min_scale
                )
                factor = expand_to_inputs(prev, unit)
            quantized = quantize_smoothed_weights(weights, factor)  # the same for both modes
            for mode, rows in table.items():
                errors = linear_output_errors(
                    x, weights, references, factor, act_mode=mode, act_amax=act_amax, quantized_weights=quantized
                )
                rows.append([e / p for e, p in zip(errors, power, strict=True)])
    return table


def best_alpha_for_modes(
    table: dict[str, list[list[float]]], alphas: Sequence[float], modes: Sequence[str]
) -> tuple[float, dict[float, float]]:
    """The alpha minimising the sum of each linear's error in the mode it will run in.

    Args:
        table: :func:`measure_unit`'s errors.
        alphas: The alphas of the table's rows.
        modes: Each linear's mode (``per_token`` / ``per_tensor``), in the unit's order.

    Returns:
        ``(best_alpha, {alpha: error})``; ties go to the first alpha.
    """
    errors = {
        float(alpha): sum(table[mode][i][j] for j, mode in enumerate(modes)) for i, alpha in enumerate(alphas)
    }
    return min(errors, key=errors.__getitem__), errors
