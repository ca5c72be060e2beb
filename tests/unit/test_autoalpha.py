"""The alpha search's error: the reference's W8A8 output (exact integer GEMM) against the float fake-quant formula."""

from __future__ import annotations

import pytest
import torch

from sq_trt.models.registry import SmoothGroup
from sq_trt.quant import reference
from sq_trt.smooth.config import AlphaSearchConfig
from sq_trt.smooth.search import quantized_output_error, search_alpha


def _float_fake_quant_error(
    x: torch.Tensor, weights: list[torch.Tensor], factor: torch.Tensor, act_mode: str, act_amax: torch.Tensor
) -> float:
    """The search's error as first written: float GEMM of the reference's fake-quantized operands."""
    smoothed = x / factor
    if act_mode == "per_token":
        x_fq = reference.fake_quant_per_token(smoothed)
    else:
        x_fq = reference.fake_quant_per_tensor(smoothed, (act_amax / factor).max())
    error = 0.0
    for w in weights:
        w_fq = reference.fake_quant_weight(w * factor[None, :])
        error += float((x_fq.double() @ w_fq.double().t() - (x @ w.t()).double()).pow(2).mean())
    return error


def _group_data(seed: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 64, generator=generator)
    x[:, 5] *= 40  # outlier channels, as in real activations
    x[:, 17] *= 12
    weights = [torch.randn(48, 64, generator=generator), torch.randn(16, 64, generator=generator)]
    return x, weights, x.abs().amax(dim=0)


@pytest.mark.parametrize("act_mode", ["per_token", "per_tensor"])
def test_the_error_is_the_fake_quant_output_error(act_mode: str) -> None:
    x, weights, act_amax = _group_data(3)
    generator = torch.Generator().manual_seed(4)
    factor = torch.rand(64, generator=generator) * 3 + 0.2
    fast = quantized_output_error(
        x, weights, [x @ w.t() for w in weights], factor, act_mode=act_mode, act_amax=act_amax
    )
    assert fast == pytest.approx(_float_fake_quant_error(x, weights, factor, act_mode, act_amax), rel=1e-5)


@pytest.mark.parametrize("act_mode", ["per_token", "per_tensor"])
def test_the_search_chooses_what_the_float_formula_chooses(act_mode: str) -> None:
    from sq_trt.quant.smoothing import smoothing_factor

    grid = tuple(round(0.05 * i, 2) for i in range(21))
    for seed in range(4):
        x, weights, act_amax = _group_data(seed)
        group = SmoothGroup("g", "prev", "rmsnorm", ("a", "b"))
        best, errors = search_alpha(x, weights, act_amax, group, AlphaSearchConfig(grid=grid, act_mode=act_mode))
        weight_amax = torch.cat(weights).abs().amax(dim=0)
        slow = {
            alpha: _float_fake_quant_error(
                x, weights, smoothing_factor(act_amax, weight_amax, alpha), act_mode, act_amax
            )
            for alpha in grid
        }
        assert best == min(slow, key=slow.__getitem__), (seed, errors, slow)
