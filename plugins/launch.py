"""Launch the Triton kernels on torch tensors (CUDA, or CPU under ``TRITON_INTERPRET=1``).

The TensorRT plugin does not use this module (TensorRT launches the AOT-compiled
PTX itself); it serves the GPU tests, the interpreter tests and anyone who wants
the quantizer in PyTorch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sq_trt.deps import require
from sq_trt.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from sq_trt.plugins.gemm import TileConfig

_SUPPORTED = ("float16", "bfloat16", "float32")


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_input(x: torch.Tensor, name: str) -> None:
    dtype = str(x.dtype).removeprefix("torch.")
    if dtype not in _SUPPORTED:
        raise ConfigError(f"{name} has dtype {dtype}; the per-token quantizer takes one of {_SUPPORTED}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ConfigError(f"{name} has shape {tuple(x.shape)}; expected [..., K] with K >= 1")
    if x.device.type != "cuda" and not interpreting():
        raise ConfigError(
            f"{name} is on {x.device}; the Triton kernel runs on a CUDA device, or on the CPU with "
            "TRITON_INTERPRET=1 set before triton is imported"
        )


def per_token_quant(x: torch.Tensor, *, block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token INT8 quantization of ``x [..., K]`` with the Triton kernel.

    Args:
        x: float16 / bfloat16 / float32 tensor.
        block: Force the streaming layout with this chunk size (a power of two);
            default: the layout :func:`~sq_trt.plugins.kernels.launch_config` picks.

    Returns:
        ``(x_q, amax)``: int8 ``[..., K]`` and ``x.dtype`` ``[..., 1]``.
    """
    require("triton", stage="kernels")
    import torch

    from sq_trt.plugins import kernels

    _check_input(x, "x")
    x2 = x.contiguous().reshape(-1, x.shape[-1])
    rows, cols = x2.shape
    xq = torch.empty((rows, cols), dtype=torch.int8, device=x.device)
    amax = torch.empty((rows, 1), dtype=x.dtype, device=x.device)
    blk, single, warps = kernels.launch_config(cols) if block is None else (block, False, 4)
    if rows:
        kernels.per_token_quant_kernel[(rows,)](
            x2, rows, cols, xq, amax,
            BLOCK=blk, SINGLE_PASS=single, USE_LIBDEVICE=not interpreting(), num_warps=warps,
        )  # fmt: skip
    return xq.reshape(x.shape), amax.reshape(*x.shape[:-1], 1)


def rmsnorm_per_token_quant(
    x: torch.Tensor, weight: torch.Tensor, epsilon: float, *, block: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused RMSNorm + per-token INT8 quantization of ``x [..., K]`` (reads ``x`` once).

    Args:
        x: float16 / bfloat16 / float32 tensor.
        weight: RMSNorm weight ``[K]``.
        epsilon: RMSNorm epsilon.
        block: Force the streaming layout with this chunk size.

    Returns:
        ``(y_q, amax)`` of ``y = x / sqrt(mean(x^2) + epsilon) * weight`` (float32).
    """
    require("triton", stage="kernels")
    import torch

    from sq_trt.plugins import kernels

    _check_input(x, "x")
    _check_input(weight, "weight")
    if weight.shape != (x.shape[-1],):
        raise ConfigError(
            f"weight has shape {tuple(weight.shape)}; expected ({x.shape[-1]},), the hidden size of x"
        )
    x2 = x.contiguous().reshape(-1, x.shape[-1])
    rows, cols = x2.shape
    xq = torch.empty((rows, cols), dtype=torch.int8, device=x.device)
    amax = torch.empty((rows, 1), dtype=x.dtype, device=x.device)
    blk, single, warps = kernels.launch_config(cols) if block is None else (block, False, 4)
    if rows:
        kernels.rmsnorm_per_token_quant_kernel[(rows,)](
            x2, weight.contiguous(), rows, cols, xq, amax,
            EPS=float(epsilon), BLOCK=blk, SINGLE_PASS=single, USE_LIBDEVICE=not interpreting(),
            num_warps=warps,
        )  # fmt: skip
    return xq.reshape(x.shape), amax.reshape(*x.shape[:-1], 1)


def layernorm_per_token_quant(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epsilon: float, *, block: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused LayerNorm + per-token INT8 quantization of ``x [..., K]``.

    Args:
        x: float16 / bfloat16 / float32 tensor.
        weight: LayerNorm weight ``[K]``.
        bias: LayerNorm bias ``[K]``.
        epsilon: LayerNorm epsilon.
        block: Force the streaming layout with this chunk size.

    Returns:
        ``(y_q, amax)`` of ``y = (x - mean) / sqrt(var + epsilon) * weight + bias`` (float32).
    """
    require("triton", stage="kernels")
    import torch

    from sq_trt.plugins import kernels

    _check_input(x, "x")
    for name, param in (("weight", weight), ("bias", bias)):
        _check_input(param, name)
        if param.shape != (x.shape[-1],):
            raise ConfigError(
                f"{name} has shape {tuple(param.shape)}; expected ({x.shape[-1]},), the hidden size of x"
            )
    x2 = x.contiguous().reshape(-1, x.shape[-1])
    rows, cols = x2.shape
    xq = torch.empty((rows, cols), dtype=torch.int8, device=x.device)
    amax = torch.empty((rows, 1), dtype=x.dtype, device=x.device)
    blk, single, warps = kernels.launch_config(cols) if block is None else (block, False, 4)
    if rows:
        kernels.layernorm_per_token_quant_kernel[(rows,)](
            x2, weight.contiguous(), bias.contiguous(), rows, cols, xq, amax,
            EPS=float(epsilon), BLOCK=blk, SINGLE_PASS=single, USE_LIBDEVICE=not interpreting(),
            num_warps=warps,
        )  # fmt: skip
    return xq.reshape(x.shape), amax.reshape(*x.shape[:-1], 1)


def _gemm_weights(
    w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, k: int
) -> tuple[int, torch.Tensor]:
    import torch

    if w_q.dtype != torch.int8 or w_q.ndim != 2 or w_q.shape[1] != k:
        raise ConfigError(
            f"weight has dtype {w_q.dtype} and shape {tuple(w_q.shape)}; expected int8 [N, {k}] (K = x's last axis)"
        )
    n = w_q.shape[0]
    for name, vec in (("w_scale", w_scale), ("bias", bias)):
        if vec is not None and (vec.dtype != torch.float32 or tuple(vec.shape) != (n,)):
            raise ConfigError(
                f"{name} has dtype {vec.dtype} and shape {tuple(vec.shape)}; expected float32 [{n}]"
            )
    return n, torch.zeros(n, dtype=torch.float32, device=w_q.device) if bias is None else bias.contiguous()


def _gemm_grid(rows: int, n: int, tile: TileConfig) -> tuple[int]:
    # One program per BLOCK_M x BLOCK_N output tile, as the plugin launches it.
    return (-(-rows // tile.block_m) * -(-n // tile.block_n),)


def w8a8_gemm(
    x_q: torch.Tensor,
    amax: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
    tactic: int = 0,
    accumulator: bool = False,
) -> torch.Tensor:
    """The fused W8A8 GEMM (``sq_trt::W8A8Gemm``) with the Triton kernel.

    Args:
        x_q: int8 ``[..., K]``.
        amax: ``[..., 1]`` per-token ``max |x|`` (float16 / bfloat16 / float32).
        w_q: int8 ``[N, K]``.
        w_scale: float32 ``[N]``.
        bias: float32 ``[N]`` or None.
        out_dtype: Output dtype (default ``amax``'s).
        tactic: Tile configuration (:data:`sq_trt.plugins.gemm.TILE_CONFIGS`; 0 = default).
        accumulator: Return the raw int32 accumulator ``[..., N]`` instead (tests).

    Returns:
        ``[..., N]``: see :func:`sq_trt.quant.reference.w8a8_gemm`.
    """
    require("triton", stage="kernels")
    import torch

    from sq_trt.plugins import gemm

    _check_input(amax, "amax")
    if x_q.dtype != torch.int8 or x_q.ndim == 0 or tuple(amax.shape) != (*x_q.shape[:-1], 1):
        raise ConfigError(
            f"x_q {x_q.dtype} {tuple(x_q.shape)} with amax {tuple(amax.shape)}; expected int8 [..., K] and [..., 1]"
        )
    k = x_q.shape[-1]
    n, bias_t = _gemm_weights(w_q, w_scale, bias, k)
    x2 = x_q.contiguous().reshape(-1, k)
    rows = x2.shape[0]
    dtype = torch.int32 if accumulator else (out_dtype or amax.dtype)
    y = torch.empty((rows, n), dtype=dtype, device=x_q.device)
    tile = gemm.tile_config(tactic)
    if rows:
        gemm.w8a8_gemm_kernel[_gemm_grid(rows, n, tile)](
            x2, amax.contiguous().reshape(-1), w_q.contiguous(), w_scale.contiguous(), bias_t, rows, n, k, y,
            **tile.constexprs(), HAS_BIAS=bias is not None, STORE_ACC=accumulator,
            num_warps=tile.num_warps, num_stages=tile.num_stages, enable_fp_fusion=False,
        )  # fmt: skip
    return y.reshape(*x_q.shape[:-1], n)


def quant_w8a8_gemm(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    smooth: torch.Tensor | None = None,
    tactic: int = 0,
    accumulator: bool = False,
) -> torch.Tensor:
    """The quantizing fused GEMM (``sq_trt::QuantW8A8Gemm``) with the Triton kernel.

    Args:
        x: float16 / bfloat16 / float32 ``[..., K]``.
        w_q: int8 ``[N, K]``.
        w_scale: float32 ``[N]``.
        bias: float32 ``[N]`` or None.
        smooth: float32 ``[K]`` smoothing vector (``x * smooth`` is quantized) or None.
        tactic: Tile configuration (0 = default).
        accumulator: Return the raw int32 accumulator instead (tests).

    Returns:
        ``[..., N]`` in ``x``'s dtype: see :func:`sq_trt.quant.reference.quant_w8a8_gemm`.
    """
    require("triton", stage="kernels")
    import torch

    from sq_trt.plugins import gemm

    _check_input(x, "x")
    k = x.shape[-1]
    n, bias_t = _gemm_weights(w_q, w_scale, bias, k)
    if smooth is not None and (smooth.dtype != torch.float32 or tuple(smooth.shape) != (k,)):
        raise ConfigError(
            f"smooth has dtype {smooth.dtype} and shape {tuple(smooth.shape)}; expected float32 [{k}]"
        )
    smooth_t = torch.ones(k, dtype=torch.float32, device=x.device) if smooth is None else smooth.contiguous()
    x2 = x.contiguous().reshape(-1, k)
    rows = x2.shape[0]
    y = torch.empty((rows, n), dtype=torch.int32 if accumulator else x.dtype, device=x.device)
    tile = gemm.tile_config(tactic)
    if rows:
        gemm.quant_w8a8_gemm_kernel[_gemm_grid(rows, n, tile)](
            x2, smooth_t, w_q.contiguous(), w_scale.contiguous(), bias_t, rows, n, k, y,
            **tile.constexprs(), HAS_SMOOTH=smooth is not None, HAS_BIAS=bias is not None,
            STORE_ACC=accumulator, USE_LIBDEVICE=not interpreting(),
            num_warps=tile.num_warps, num_stages=tile.num_stages, enable_fp_fusion=False,
        )  # fmt: skip
    return y.reshape(*x.shape[:-1], n)
