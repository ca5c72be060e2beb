"""W8A8 fake quantization of a PyTorch model: the numerical ground truth of the INT8 paths.

Each quantized linear becomes a :class:`W8A8Linear`: INT8 weights per output
channel (stored as int8 + float32 scale) and activations quantize-dequantized
per token (dynamic) or per tensor (static, calibrated ``amax``), all through
:mod:`sq_trt.quant.reference`. The matmul then runs in floating point on the
dequantized values, which equals the integer GEMM followed by the two scales
up to float rounding of the accumulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from sq_trt.errors import ConfigError
from sq_trt.models.registry import find_spec, quantizable_linears
from sq_trt.quant import reference

if TYPE_CHECKING:
    from sq_trt.artifacts.act_scales import ActScales

ActMode = Literal["per_token", "per_tensor"]
ACT_MODES: tuple[str, ...] = ("per_token", "per_tensor")


class W8A8Linear(nn.Module):
    """A linear layer with INT8 per-channel weights and INT8 (fake-quantized) activations.

    Attributes:
        name: Full module name of the linear it replaced.
        act_mode: ``"per_token"`` or ``"per_tensor"``.
        in_features: Input channels.
        out_features: Output channels.
    Buffers:
        weight_int8: int8 ``[out, in]``.
        weight_scale: float32 ``[out]`` (``W ≈ weight_int8 * weight_scale[:, None]``).
        input_amax: float32 0-dim static activation range (``per_tensor``; NaN otherwise).
        bias: the original bias (float) or absent.
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor
    input_amax: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        name: str,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        act_mode: ActMode,
        input_amax: torch.Tensor | float | None = None,
    ) -> None:
        """Quantize ``weight`` (``[out, in]``) and keep what the forward pass needs.

        Args:
            name: Full module name (for messages and exporters).
            weight: Float weight in nn.Linear layout ``[out, in]``.
            bias: Float bias ``[out]`` or None.
            act_mode: Activation quantization mode.
            input_amax: Static activation range, required for ``per_tensor``.
        """
        super().__init__()
        if act_mode not in ACT_MODES:
            raise ConfigError(f"act_mode must be one of {ACT_MODES}, got {act_mode!r}")
        if act_mode == "per_tensor" and input_amax is None:
            raise ConfigError(f"{name}: per_tensor activation quantization needs a calibrated input_amax")
        self.name = name
        self.act_mode = act_mode
        self.out_features, self.in_features = weight.shape
        w_q, w_scale = reference.quantize_weight_per_channel(weight.detach())
        self.register_buffer("weight_int8", w_q)
        self.register_buffer("weight_scale", w_scale)
        amax = float("nan") if input_amax is None else input_amax
        self.register_buffer("input_amax", torch.as_tensor(amax, dtype=torch.float32).reshape(()).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._compute_dtype = weight.dtype

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize the activation (``x``'s dtype)."""
        if self.act_mode == "per_token":
            return reference.fake_quant_per_token(x)
        return reference.fake_quant_per_tensor(x, self.input_amax)

    def dequantized_weight(self) -> torch.Tensor:
        """``weight_int8 * weight_scale`` in the original weight dtype."""
        return reference.dequantize(self.weight_int8, self.weight_scale[:, None]).to(self._compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``fq(x) @ fq(W)^T + b``."""
        return nn.functional.linear(self.quantize_input(x), self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{self.name}, in={self.in_features}, out={self.out_features}, act_mode={self.act_mode}"


def linear_weight(module: Any, layout: str) -> torch.Tensor:
    """A linear's weight in ``[out, in]`` layout (GPT-2's Conv1D stores ``[in, out]``)."""
    weight = module.weight
    return weight.t() if layout == "conv1d" else weight


def apply_fake_quant(
    model: nn.Module,
    scales: ActScales | None,
    *,
    act_mode: ActMode | Literal["hybrid"],
    exclude: Sequence[str] = (),
    plan: Mapping[str, str] | None = None,
) -> list[str]:
    """Replace every quantizable linear of ``model`` by a :class:`W8A8Linear`, in place.

    Args:
        model: A model of a registered family (GPT-2 Conv1D layers included).
        scales: Calibrated statistics; ``per_tensor`` needs ``scales.input_amax`` of
            the model as it is now (the smoothed statistics for a smoothed model).
        act_mode: ``"per_token"`` (dynamic), ``"per_tensor"`` (static), or ``"hybrid"``: each
            linear in the mode ``plan`` gives it (linears the plan does not name stay float).
        exclude: Full module names (or ``fnmatch`` patterns) to leave in floating point.
            Linears already replaced by an earlier call are kept as they are, so two
            calls give mixed modes (``exclude`` in the first, the other mode in the second).
        plan: Module name -> ``per_token`` / ``per_tensor`` (a ``quant_plan.json``'s modes), for ``hybrid``.

    Returns:
        Names of the linears replaced, in model order.

    Raises:
        ConfigError: Unknown mode, or ``per_tensor`` without statistics for a linear.
    """
    from fnmatch import fnmatchcase

    if act_mode == "hybrid":
        if plan is None:
            raise ConfigError("act_mode hybrid needs the quant plan (module name -> per_token / per_tensor)")
    elif act_mode not in ACT_MODES:
        raise ConfigError(f"act_mode must be one of {ACT_MODES} or 'hybrid', got {act_mode!r}")
    layout = find_spec(model).weight_layout
    modules = dict(model.named_modules())
    replaced: list[str] = []
    for name in quantizable_linears(model):
        if any(fnmatchcase(name, pattern) for pattern in exclude):
            continue
        module = modules[name]
        if isinstance(module, W8A8Linear):
            continue  # quantized by an earlier call (e.g. a few layers per token, the rest per tensor)
        mode = act_mode if plan is None or act_mode != "hybrid" else plan.get(name)
        if mode is None:
            continue
        amax: Any = None
        if mode == "per_tensor":
            if scales is None or name not in scales.input_amax:
                raise ConfigError(
                    f"per_tensor activation quantization needs a calibrated input_amax for {name}; "
                    "pass the act_scales of this model (sq-trt calibrate, or the smoothed artifact's)"
                )
            amax = scales.input_amax[name]
        bias = getattr(module, "bias", None)
        new = W8A8Linear(name, linear_weight(module, layout), bias, act_mode=mode, input_amax=amax)  # type: ignore[arg-type]
        new.to(module.weight.device)
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
        replaced.append(name)
    return replaced
