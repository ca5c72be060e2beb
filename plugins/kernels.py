"""Triton kernels for per-token INT8 quantization (plain, and fused with RMSNorm or LayerNorm).

One program handles one token row ``[K]`` of a contiguous ``[rows, K]`` view.
Semantics are those of :mod:`sq_trt.quant.reference`: ``amax = max |x|`` in
float32, ``x_q = clamp(round_half_even(x_f32 * inv), -127, 127)`` with
``inv = 127 / max(amax, 1e-30)`` as one correctly rounded float32 division
(``div_rn``), exactly as the reference computes it, so the kernel rounds the same
float32 value as the reference and the int8 output is bit-exact.

Kernel argument order is the one TensorRT's AOT plugin launcher uses: input
pointers, then the int32 scalars (``n_rows``, ``n_cols``), then output pointers,
then compile-time constants. Two layouts, chosen at compile time:

* ``SINGLE_PASS``: ``BLOCK >= K``; the row is loaded once and kept in registers.
* otherwise the row is streamed in ``BLOCK``-sized chunks, once for the
  statistics and once more to quantize (the second read hits L2).

The rounding primitive differs between the GPU and Triton's CPU interpreter
(``TRITON_INTERPRET=1`` cannot run libdevice calls), so it sits behind
:func:`round_half_even` and is chosen by the ``USE_LIBDEVICE`` constant.

This module imports Triton at import time; import it only after
``sq_trt.deps.require("triton", ...)``.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

QMAX = tl.constexpr(127.0)
AMAX_EPS = tl.constexpr(1e-30)
# 1.5 * 2**23: adding it pushes every fraction bit out of the float32 mantissa, so the
# FPU's round-to-nearest-even rounds to an integer; subtracting it back is exact.
# Valid for |x| < 2**22, far above the |x| <= ~127 this module rounds.
_RNE_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def round_half_even(x, USE_LIBDEVICE: tl.constexpr):
    """Round float32 ``x`` to the nearest integer, ties to even.

    On the GPU this is libdevice ``rint`` (PTX ``cvt.rni.f32.f32``). Triton's
    interpreter has no libdevice, so there the magic-number addition is used,
    which numpy evaluates in IEEE float32 with round-to-nearest-even.
    """
    if USE_LIBDEVICE:
        return libdevice.rint(x)
    else:
        return (x + _RNE_MAGIC) - _RNE_MAGIC


@triton.jit
def _quantize(x, inv, USE_LIBDEVICE: tl.constexpr):
    q = round_half_even(x * inv, USE_LIBDEVICE)
    q = tl.minimum(tl.maximum(q, -QMAX), QMAX)
    return q.to(tl.int8)


@triton.jit
def _inverse_scale(amax):
    # The reference's exact float32 value: one correctly rounded division 127 / amax (the
    # same value ONNX `Div(127, amax)` gives), not reciprocal-then-multiply.
    qmax = tl.full([], QMAX, tl.float32)
    return tl.div_rn(qmax, tl.maximum(amax, AMAX_EPS))


@triton.jit
def per_token_quant_kernel(
    x_ptr,
    n_rows,
    n_cols,
    xq_ptr,
    amax_ptr,
    BLOCK: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
):
    """Quantize each row of ``x [n_rows, n_cols]`` to int8 with its own scale."""
    row = tl.program_id(0)
    if row < n_rows:
        base = row.to(tl.int64) * n_cols
        offs = tl.arange(0, BLOCK)
        if SINGLE_PASS:
            mask = offs < n_cols
            x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            amax = tl.max(tl.abs(x), axis=0)
            inv = _inverse_scale(amax)
            tl.store(xq_ptr + base + offs, _quantize(x, inv, USE_LIBDEVICE), mask=mask)
        else:
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                x = tl.load(x_ptr + base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
                acc = tl.maximum(acc, tl.abs(x))
            amax = tl.max(acc, axis=0)
            inv = _inverse_scale(amax)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                mask = cols < n_cols
                x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
                tl.store(xq_ptr + base + cols, _quantize(x, inv, USE_LIBDEVICE), mask=mask)
        tl.store(amax_ptr + row, amax.to(amax_ptr.dtype.element_ty))


@triton.jit
def _rms_inverse(sum_sq, n_cols, EPS: tl.constexpr):
    mean_sq = tl.div_rn(sum_sq, n_cols.to(tl.float32))
    one = tl.full([], 1.0, tl.float32)
    return tl.div_rn(one, tl.sqrt_rn(mean_sq + EPS))


@triton.jit
def rmsnorm_per_token_quant_kernel(
    x_ptr,
    w_ptr,
    n_rows,
    n_cols,
    xq_ptr,
    amax_ptr,
    EPS: tl.constexpr,
    BLOCK: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
):
    """RMSNorm each row of ``x`` (times ``w``), then quantize it per token.

    ``y = x * (1 / sqrt(mean(x^2) + EPS)) * w``, all in float32 (``y`` is never
    rounded to the input dtype); ``x_q``/``amax`` are those of ``y``. ``EPS`` is
    a compile-time constant because TensorRT's AOT launcher passes only integer
    scalars.
    """
    row = tl.program_id(0)
    if row < n_rows:
        base = row.to(tl.int64) * n_cols
        offs = tl.arange(0, BLOCK)
        if SINGLE_PASS:
            mask = offs < n_cols
            x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            rstd = _rms_inverse(tl.sum(x * x, axis=0), n_cols, EPS)
            y = x * rstd * w
            amax = tl.max(tl.abs(y), axis=0)
            inv = _inverse_scale(amax)
            tl.store(xq_ptr + base + offs, _quantize(y, inv, USE_LIBDEVICE), mask=mask)
        else:
            acc_sq = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                x = tl.load(x_ptr + base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
                acc_sq += x * x
            rstd = _rms_inverse(tl.sum(acc_sq, axis=0), n_cols, EPS)
            acc_max = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                mask = cols < n_cols
                x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
                w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                acc_max = tl.maximum(acc_max, tl.abs(x * rstd * w))
            amax = tl.max(acc_max, axis=0)
            inv = _inverse_scale(amax)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                mask = cols < n_cols
                x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
                w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                tl.store(xq_ptr + base + cols, _quantize(x * rstd * w, inv, USE_LIBDEVICE), mask=mask)
        tl.store(amax_ptr + row, amax.to(amax_ptr.dtype.element_ty))


@triton.jit
def layernorm_per_token_quant_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    n_rows,
    n_cols,
    xq_ptr,
    amax_ptr,
    EPS: tl.constexpr,
    BLOCK: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
):
    """LayerNorm each row of ``x`` (``* w + b``), then quantize it per token.

    ``mean = sum(x) / K``, ``var = sum((x - mean)^2) / K`` (two passes, not
    ``E[x^2] - mean^2``), ``y = (x - mean) * (1 / sqrt(var + EPS)) * w + b``, all in
    float32; ``x_q``/``amax`` are those of ``y``.
    """
    row = tl.program_id(0)
    if row < n_rows:
        base = row.to(tl.int64) * n_cols
        offs = tl.arange(0, BLOCK)
        k = n_cols.to(tl.float32)
        one = tl.full([], 1.0, tl.float32)
        if SINGLE_PASS:
            mask = offs < n_cols
            x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            mean = tl.div_rn(tl.sum(x, axis=0), k)
            d = tl.where(mask, x - mean, 0.0)
            rstd = tl.div_rn(one, tl.sqrt_rn(tl.div_rn(tl.sum(d * d, axis=0), k) + EPS))
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = d * rstd * w + b
            amax = tl.max(tl.abs(y), axis=0)
            inv = _inverse_scale(amax)
            tl.store(xq_ptr + base + offs, _quantize(y, inv, USE_LIBDEVICE), mask=mask)
        else:
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                acc += tl.load(x_ptr + base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            mean = tl.div_rn(tl.sum(acc, axis=0), k)
            acc_sq = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                mask = cols < n_cols
                x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
                d = tl.where(mask, x - mean, 0.0)
                acc_sq += d * d
            rstd = tl.div_rn(one, tl.sqrt_rn(tl.div_rn(tl.sum(acc_sq, axis=0), k) + EPS))
            acc_max = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                mask = cols < n_cols
                x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
                w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                acc_max = tl.maximum(acc_max, tl.abs((x - mean) * rstd * w + b))
            amax = tl.max(acc_max, axis=0)
            inv = _inverse_scale(amax)
            for start in range(0, n_cols, BLOCK):
                cols = start + offs
                mask = cols < n_cols
                x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
                w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                y = (x - mean) * rstd * w + b
                tl.store(xq_ptr + base + cols, _quantize(y, inv, USE_LIBDEVICE), mask=mask)
        tl.store(amax_ptr + row, amax.to(amax_ptr.dtype.element_ty))


# Largest row kept in registers by the single-pass layout (fp32 values per program).
MAX_SINGLE_PASS_BLOCK = 8192
# Chunk size of the streaming layout, for hidden sizes above that or unknown at compile time.
STREAM_BLOCK = 2048


def launch_config(n_cols: int | None) -> tuple[int, bool, int]:
    """Compile-time layout for rows of ``n_cols`` elements.

    Args:
        n_cols: The hidden size if known when compiling, else None (dynamic).

    Returns:
        ``(BLOCK, SINGLE_PASS, num_warps)``.
    """
    if n_cols is not None and n_cols <= MAX_SINGLE_PASS_BLOCK:
        block = max(16, triton.next_power_of_2(max(n_cols, 1)))
        single_pass = True
    else:
        block, single_pass = STREAM_BLOCK, False
    num_warps = 4 if block <= 2048 else 8
    return block, single_pass, num_warps
