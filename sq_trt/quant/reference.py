"""The one reference definition of sq-trt's INT8 quantization semantics.

Every other implementation (ONNX graphs, the Triton kernel, the TensorRT
plugin) is tested against these functions. Semantics:

* symmetric INT8, zero point 0, round half to even;
* weights: per output channel, ``amax`` of each row of ``W[out, in]``;
  ``q = clamp(round(x * (127 / amax)), -127, 127)`` (``|q| <= 127`` by construction);
* per-token activations (dynamic): ``amax`` is the max ``|x|`` of each row (last
  axis), same formula; a row of zeros gets ``amax = 0`` and quantizes to zeros
  (its division uses ``max(amax, tiny)``, so no NaN);
* per-tensor static activations: one calibrated ``amax`` per tensor, stored as
  the scale ``s = amax / 127`` (1 when ``amax`` is 0), and
  ``q = saturate(round(x / s), -128, 127)``: exactly ONNX ``QuantizeLinear``
  and TensorRT's ``IQuantizeLayer`` (both saturate INT8 to ``[-128, 127]`` and
  divide by the scale), because those run the deployed graph. Values beyond the
  calibrated range do occur at inference, and the negative ones reach -128.

Weights and per-token activations compute ``x * (127 / amax)`` in float32, the
same way the per-token ONNX subgraph and the plugin kernel do, so all
implementations round the same float32 value (bit-exact int8 across
implementations). Per-tensor activations compute ``x / s`` as ONNX defines it;
when the graph stores ``s`` in float16, pass ``scale_dtype`` to round it the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

QMAX = 127
# ONNX QuantizeLinear and TensorRT saturate INT8 to [-128, 127]; only per-tensor static
# activations can reach -128 (weights and per-token rows are scaled so that |q| <= 127).
QMIN_PER_TENSOR = -128
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


def per_tensor_scale(amax: float | torch.Tensor, scale_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The static scale ``amax / 127`` as a float32 0-dim tensor (1 when ``amax`` is 0).

    Args:
        amax: Calibrated ``max |x|``.
        scale_dtype: The dtype the graph stores the scale in (e.g. ``torch.float16``);
            the scale is rounded through it. None keeps float32.
    """
    import torch

    amax_t = torch.as_tensor(amax, dtype=torch.float32).reshape(())
    scale = torch.where(amax_t > 0, amax_t / QMAX, torch.ones_like(amax_t))
    if scale_dtype is not None and scale_dtype != torch.float32:
        scale = scale.to(scale_dtype).float()
    return scale


def quantize_per_tensor(
    x: torch.Tensor, amax: float | torch.Tensor, *, scale_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Quantize ``x`` with one static range, as ONNX ``QuantizeLinear`` does.

    ``saturate(round_half_even(x / s), -128, 127)`` with ``s = per_tensor_scale(amax)``;
    values beyond ``amax`` saturate, the negative ones to -128.
    """
    import torch

    scale = per_tensor_scale(amax, scale_dtype)
    scaled = x.float() / scale  # one correctly rounded float32 division, as QuantizeLinear defines it
    return torch.clamp(torch.round(scaled), QMIN_PER_TENSOR, QMAX).to(torch.int8)


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
    """Quantize-dequantize with a static per-tensor ``amax``; returns ``x``'s dtype.

    A float16/bfloat16 ``x`` uses the scale rounded to its dtype, as the exported
    graph of that dtype stores it.
    """
    import torch

    scale_dtype = None if x.dtype == torch.float32 else x.dtype
    scale = per_tensor_scale(amax, scale_dtype)
    return dequantize(quantize_per_tensor(x, amax, scale_dtype=scale_dtype), scale).to(x.dtype)


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize ``W[out, in]`` per output channel; returns ``weight``'s dtype."""
    w_q, scale = quantize_weight_per_channel(weight)
    return dequantize(w_q, scale[:, None]).to(weight.dtype)


def w8a8_gemm(
    x_q: torch.Tensor,
    amax: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The fused W8A8 GEMM's semantics (``sq_trt::W8A8Gemm``), exactly.

    ``acc = x_q @ w_q.T`` in exact integer arithmetic (int64 here; the kernel's int32
    cannot overflow: ``K * 127 * 127 < 2**31`` for ``K < 133,144``), then the epilogue in
    float32, in this order: ``(float32(acc) * (float32(amax) / 127)) * w_scale + bias``,
    rounded once to ``out_dtype``.

    Args:
        x_q: int8 ``[..., K]``.
        amax: ``[..., 1]`` per-token ``max |x|`` (any float dtype; read as float32).
        w_q: int8 ``[N, K]``.
        w_scale: float32 ``[N]``.
        bias: float32 ``[N]`` or None.
        out_dtype: Output dtype (default: ``amax``'s dtype).

    Returns:
        ``[..., N]`` in ``out_dtype``.
    """
    import torch

    acc = torch.matmul(x_q.to(torch.int64), w_q.to(torch.int64).T)
    token_scale = amax.float() / QMAX
    y = (acc.float() * token_scale) * w_scale.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype or amax.dtype)


def quant_w8a8_gemm(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    smooth: torch.Tensor | None = None,
) -> torch.Tensor:
    """The quantizing fused GEMM's semantics (``sq_trt::QuantW8A8Gemm``): returns ``x``'s dtype.

    ``xs = float32(x) * smooth`` (when given), ``(x_q, amax) = quantize_per_token(xs)``,
    then :func:`w8a8_gemm`.
    """
    xs = x.float() if smooth is None else x.float() * smooth.float()
    x_q, amax = quantize_per_token(xs)
    return w8a8_gemm(x_q, amax, w_q, w_scale, bias, out_dtype=x.dtype)
