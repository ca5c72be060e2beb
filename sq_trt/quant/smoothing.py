"""SmoothQuant's per-channel factor and the GQA channel mapping: pure tensor math.

Shared by the smooth stage (fixed and per-group alphas) and the alpha search
(:mod:`sq_trt.smooth.search`), which would otherwise import each other.
"""

from __future__ import annotations

import torch

from sq_trt.models.registry import SmoothGroup


def smoothing_factor(
    act_amax: torch.Tensor, weight_amax: torch.Tensor, alpha: float, *, min_scale: float = 1e-5
) -> torch.Tensor:
    """``s_j = act_amax_j ** alpha / weight_amax_j ** (1 - alpha)`` with the zero-channel rules.

    Computed in float64 and returned as float32. Channels where either statistic
    is 0 get ``s_j = 1``; every factor is at least ``min_scale``.
    """
    act = act_amax.double()
    weight = weight_amax.double()
    factor = act.pow(alpha) / weight.pow(1.0 - alpha)
    factor = torch.where((act > 0) & (weight > 0), factor, torch.ones_like(factor))
    return factor.clamp(min=min_scale).float()


def expand_to_inputs(values: torch.Tensor, group: SmoothGroup) -> torch.Tensor:
    """Map a per-channel vector of the preceding op to the following linears' input channels (GQA)."""
    if group.repeat == 1:
        return values
    blocks = values.reshape(-1, 1, group.head_dim)
    return blocks.expand(blocks.shape[0], group.repeat, group.head_dim).reshape(-1)


def reduce_to_prev(values: torch.Tensor, group: SmoothGroup) -> torch.Tensor:
    """Max over the input channels that share one preceding channel (inverse of :func:`expand_to_inputs`)."""
    if group.repeat == 1:
        return values
    return values.reshape(-1, group.repeat, group.head_dim).amax(dim=1).reshape(-1)
