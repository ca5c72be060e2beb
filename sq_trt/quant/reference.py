"""The one reference definition of sq-trt's INT8 quantization semantics.

Every other implementation (ONNX graphs, the Triton kernel, the TensorRT
plugin) is tested against these functions. Semantics:

* symmetric INT8, range ``[-127, 127]`` (never -128), zero point 0;
* ``scale = amax / 127``; ``q = clamp(round_half_to_even(x / scale), -127, 127)``;
* per-token: ``amax`` is the max ``|x|`` of each row (last axis); a row of
  zeros gets ``amax = 0`` and quantizes to zeros (its division uses
  ``max(amax, tiny)``, so no NaN);
* weights: per output channel (``amax`` of each row of ``W[out, in]``);
* per-tensor static activations: one calibrated ``amax`` per tensor.

``x / scale`` is computed as ``x * (127 / amax)``, in float32, the same way
the ONNX graphs and the kernel compute it, so all implementations round the
same float32 value (bit-exact int8 across implementations).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

QMAX = 127
# Smallest amax treated as non-zero; an all-zero row divides by this and yields zeros.
AMAX_EPS = 1e-30


def _quantize_with_amax(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    import torch

    # One correctly rounded float32 division, as ONNX `Div(127, amax)` and the kernel's
    # `div_rn(127, amax)` compute it. (`QMAX / tensor` would be evaluated by torch as
    # `reciprocal(tensor) * 127`, two roundings, and flip int8 values near .5 ties.)
    denom = torch.clamp(amax.float(), min=AMAX_EPS)
    inv = torch.full_like(denom, float(QMAX)) / denom
    return torch.clamp(torch.round(x.float() * inv), -QMAX, QMAX).to(torch.int8)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize each row (last axis) of ``x`` with its own scale.

    Args:
        x: Float tensor ``[..., K]``.

    Returns:
        ``(x_q, amax)``: int8 ``[..., K]`` and float32 ``[..., 1]`` with
        ``x ≈ x_q * amax / 127``.
    """
    amax = x.float().abs().amax(dim=-1, keepdim=True)
    return _quantize_with_amax(x, amax), amax


def quantize_per_tensor(x: torch.Tensor, amax: float | torch.Tensor) -> torch.Tensor:
    """Quantize ``x`` with one static ``amax`` (values beyond it clamp to ±127)."""
    import torch

    return _quantize_with_amax(x, torch.as_tensor(amax, dtype=torch.float32))


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``W[out, in]`` per output channel.

    Returns:
        ``(w_q, scale)``: int8 ``[out, in]`` and float32 ``[out]`` with
        ``W ≈ w_q * scale[:, None]``. An all-zero row gets ``scale = 1`` (any
        positive value reproduces zeros; 1 keeps ONNX scales valid and positive).
    """
    import torch

    amax = weight.float().abs().amax(dim=1, keepdim=True)
    w_q = _quantize_with_amax(weight, amax)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax)).squeeze(1)
    return w_q, scale


def dequantize(x_q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x_q * scale`` in float32 (``scale`` broadcast against ``x_q``)."""
    return x_q.float() * scale.float()


def fake_quant_per_token(x: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize per token; returns ``x``'s dtype."""
    x_q, amax = quantize_per_token(x)
    return dequantize(x_q, amax / QMAX).to(x.dtype)


def fake_quant_per_tensor(x: torch.Tensor, amax: float | torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize with a static per-tensor ``amax``; returns ``x``'s dtype."""
    import torch

    amax_t = torch.as_tensor(amax, dtype=torch.float32)
    scale = torch.where(amax_t > 0, amax_t / QMAX, torch.ones_like(amax_t))
    return dequantize(quantize_per_tensor(x, amax_t), scale).to(x.dtype)


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize ``W[out, in]`` per output channel; returns ``weight``'s dtype."""
    w_q, scale = quantize_weight_per_channel(weight)
    return dequantize(w_q, scale[:, None]).to(weight.dtype)
