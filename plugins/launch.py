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
