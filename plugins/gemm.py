"""Triton kernels of the fused W8A8 GEMM plugins (``sq_trt::W8A8Gemm``, ``sq_trt::QuantW8A8Gemm``).

Semantics are :func:`sq_trt.quant.reference.w8a8_gemm` / ``quant_w8a8_gemm``, exactly:

* main loop: int8 x int8 ``tl.dot(..., out_dtype=tl.int32)``, so the accumulator is the exact
  integer sum (``K * 127 * 127 < 2**31`` for any K below 133,144) and the GPU runs integer
  tensor-core instructions (``mma.sync ... s32.s8.s8.s32`` on sm_80-sm_89, ``wgmma ... s8`` on
  sm_90a), which :mod:`sq_trt.plugins.aot`'s PTX can show on a machine with no GPU;
* epilogue in float32, in the reference's order: ``(float32(acc) * (amax / 127)) * w_scale + bias``
  (``amax / 127`` one correctly rounded division), rounded once to the output dtype. The AOT
  compile disables FMA contraction, so ``* w_scale + bias`` is two roundings, as in the reference.

The quantizing kernel reads its float input twice per output tile: a first pass over the whole
row block (all of K) for each token's ``amax`` of ``x * smooth``, then the main loop re-reads
each ``[BLOCK_M, BLOCK_K]`` tile (from L2), quantizes it in registers with
``q = clamp(rint(x * smooth * (127 / amax)), -127, 127)`` (``127 / amax`` as one ``div_rn``, the
reference's float32 value) and feeds it to the int8 dot. The int8 activation never reaches memory.

Layouts: ``x`` is ``[M, K]`` row-major (M = all tokens, dynamic), ``weight`` is ``[N, K]``
row-major (``nn.Linear``), ``y`` is ``[M, N]`` row-major. Argument order is TensorRT's AOT
launcher's: input pointers, then the int32 scalars (``M``, ``N``, ``K``), then the output pointer,
then the compile-time constants. ``STORE_ACC`` (tests only) stores the raw int32 accumulator
into an int32 ``y`` instead of running the epilogue, so the interpreter tests can compare the
main loop with exact integer arithmetic.

This module imports Triton at import time; import it only after ``sq_trt.deps.require("triton", ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import triton
import triton.language as tl

from sq_trt.errors import ConfigError
from sq_trt.plugins.alignment import (
    ALIGNED,
    UNALIGNED,
    VECTOR_BYTES,
    alignment_divisors,
    alignment_variant,
    check_alignment,
)
from sq_trt.plugins.kernels import AMAX_EPS, QMAX, round_half_even

__all__ = ["ALIGNED", "UNALIGNED", "alignment_variant", "check_alignment"]


@triton.jit
def _tile_offsets(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # Grouped ordering: GROUP_M row blocks share each weight column block while it is in L2.
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return pid_m, offs_m, offs_n


@triton.jit
def _epilogue_store(
    acc, token_amax, ws_ptr, b_ptr, y_ptr, offs_m, offs_n, M, N,
    HAS_BIAS: tl.constexpr, STORE_ACC: tl.constexpr,
):  # fmt: skip
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask = mask_m[:, None] & mask_n[None, :]
    y_offs = offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    if STORE_ACC:
        tl.store(y_ptr + y_offs, acc, mask=mask)
    else:
        qmax = tl.full([], QMAX, tl.float32)
        token_scale = tl.div_rn(token_amax, qmax)
        w_scale = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        y = (acc.to(tl.float32) * token_scale[:, None]) * w_scale[None, :]
        if HAS_BIAS:
            y = y + tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + y_offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def w8a8_gemm_kernel(
    xq_ptr, amax_ptr, w_ptr, ws_ptr, b_ptr, M, N, K, y_ptr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    HAS_BIAS: tl.constexpr, STORE_ACC: tl.constexpr,
):  # fmt: skip
    """``y = (acc * (amax / 127)) * w_scale + bias`` with ``acc = xq @ w.T`` in int32."""
    _, offs_m, offs_n = _tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = xq_ptr + offs_m.to(tl.int64)[:, None] * K
    w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * K
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for start in range(0, K, BLOCK_K):
        ks = start + offs_k
        a = tl.load(x_rows + ks[None, :], mask=mask_m[:, None] & (ks[None, :] < K), other=0)
        b = tl.load(w_cols + ks[:, None], mask=(ks[:, None] < K) & mask_n[None, :], other=0)
        acc = tl.dot(a, b, acc=acc, out_dtype=tl.int32)
    token_amax = tl.load(amax_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)
    _epilogue_store(acc, token_amax, ws_ptr, b_ptr, y_ptr, offs_m, offs_n, M, N, HAS_BIAS, STORE_ACC)


@triton.jit
def quant_w8a8_gemm_kernel(
    x_ptr, s_ptr, w_ptr, ws_ptr, b_ptr, M, N, K, y_ptr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    HAS_SMOOTH: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_ACC: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
):  # fmt: skip
    """Quantize ``x * smooth`` per token (in registers), then :func:`w8a8_gemm_kernel`'s GEMM."""
    _, offs_m, offs_n = _tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * K
    # Pass 1: each token's amax needs its whole row before any of it can be quantized.
    row_max = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + offs_k
        xs = tl.load(x_rows + ks[None, :], mask=mask_m[:, None] & (ks[None, :] < K), other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            xs = xs * tl.load(s_ptr + ks, mask=ks < K, other=0.0)[None, :]
        row_max = tl.maximum(row_max, tl.abs(xs))
    token_amax = tl.max(row_max, axis=1)
    qmax = tl.full([], QMAX, tl.float32)
    inv = tl.div_rn(qmax, tl.maximum(token_amax, AMAX_EPS))
    # Pass 2: quantize each tile in registers and accumulate its int8 dot.
    w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * K
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for start in range(0, K, BLOCK_K):
        ks = start + offs_k
        xs = tl.load(x_rows + ks[None, :], mask=mask_m[:, None] & (ks[None, :] < K), other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            xs = xs * tl.load(s_ptr + ks, mask=ks < K, other=0.0)[None, :]
        q = round_half_even(xs * inv[:, None], USE_LIBDEVICE)
        a = tl.minimum(tl.maximum(q, -qmax), qmax).to(tl.int8)
        b = tl.load(w_cols + ks[:, None], mask=(ks[:, None] < K) & mask_n[None, :], other=0)
        acc = tl.dot(a, b, acc=acc, out_dtype=tl.int32)
    _epilogue_store(acc, token_amax, ws_ptr, b_ptr, y_ptr, offs_m, offs_n, M, N, HAS_BIAS, STORE_ACC)


@dataclass(frozen=True)
class TileConfig:
    """One compiled variant of a GEMM kernel (= one TensorRT autotune tactic)."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    group_m: int = 8

    def constexprs(self) -> dict[str, int]:
        """The tile constants of the kernels' signatures."""
        return {
            "BLOCK_M": self.block_m,
            "BLOCK_N": self.block_n,
            "BLOCK_K": self.block_k,
            "GROUP_M": self.group_m,
        }

    def label(self) -> str:
        """``m128n128k64w4s3``: the tile, warps and pipeline stages."""
        return f"m{self.block_m}n{self.block_n}k{self.block_k}w{self.num_warps}s{self.num_stages}"


# Tactic -> tile. TensorRT's tactics are positive integers (0 is "default"), so tactic t is
# TILE_CONFIGS[t - 1]. Small-M tiles serve decode (M = 1-8 tokens); tiles with BLOCK_M >= 64 reach
# the wgmma path on Hopper. Tactic 6 (16 x 32) is for decode on narrow weights, where
# N / BLOCK_N would leave most SMs idle (N = 576: 9 programs of 64 columns on 132 SMs, 18 of 32).
# Chosen from `ptxas -v` on every supported architecture (no GPU needed): 4-warp 64x128 /
# 128x64 tiles spilled 0.3-2.9 KB of registers to local memory per thread, their 8-warp versions
# and 128x128x32 spill nothing. Shared memory stays under the 48 KiB a kernel gets without an
# opt-in attribute, which TensorRT's AOT launcher may not set: with the alignment hints Triton
# really pipelines the loads into shared memory, and the quantizing kernel's 128x64x64 tile
# needed 49.7-53.8 KiB at 3 stages, so it runs 2 (`sq-trt plugins audit`, docs/PLUGIN.md).
# Which tile is fastest is for TensorRT's autotuner.
TILE_CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(16, 64, 128, num_warps=4, num_stages=3),
    TileConfig(64, 64, 64, num_warps=4, num_stages=3),
    TileConfig(64, 128, 64, num_warps=8, num_stages=3),
    TileConfig(128, 64, 64, num_warps=8, num_stages=2),
    TileConfig(128, 128, 32, num_warps=8, num_stages=3),
    TileConfig(16, 32, 128, num_warps=2, num_stages=4),
)


def tactics_for(n: int | None, k: int | None) -> list[int]:
    """The tactics worth timing for a weight of ``N`` outputs and ``K`` inputs.

    Tiles wider than ``N`` or deeper than ``K`` (rounded up to a power of two) only compute
    masked zeros, so they are left out, but never all of them.

    Args:
        n: Output channels if known at build time, else None.
        k: Input channels if known at build time, else None.

    Returns:
        Positive tactic numbers (indices into :data:`TILE_CONFIGS`, plus one).
    """
    fitting = [
        t
        for t, cfg in enumerate(TILE_CONFIGS, start=1)
        if (n is None or cfg.block_n <= max(16, triton.next_power_of_2(n)))
        and (k is None or cfg.block_k <= max(32, triton.next_power_of_2(k)))
    ]
    return fitting or [1]


def tile_config(tactic: int) -> TileConfig:
    """The tile of a tactic; TensorRT's default tactic 0 (no autotuning) gets tactic 2's."""
    index = (tactic or 2) - 1
    if not 0 <= index < len(TILE_CONFIGS):
        raise ConfigError(
            f"GEMM tactic {tactic} does not exist; expected 0 (default) or 1..{len(TILE_CONFIGS)}"
        )
    return TILE_CONFIGS[index]


def divisibility_hints(signature: dict[str, str], aligned: bool, out_dtype: str) -> dict[str, int]:
    """``tt.divisibility`` hints of one variant: every pointer 16 bytes, plus K and N if aligned."""
    hints = {name: VECTOR_BYTES for name, kind in signature.items() if kind.startswith("*")}
    if aligned:
        hints.update(alignment_divisors(out_dtype))
    return hints


def gemm_signature(kernel_name: str, activation: str, out: str) -> dict[str, str]:
    """Triton signature of a GEMM kernel's runtime parameters, in TensorRT's launch order.

    Args:
        kernel_name: ``w8a8_gemm_kernel`` or ``quant_w8a8_gemm_kernel``.
        activation: Pointer type of ``amax`` (W8A8Gemm) or of ``x`` (QuantW8A8Gemm), e.g. ``"*fp16"``.
        out: Pointer type of ``y``.
    """
    if kernel_name == "w8a8_gemm_kernel":
        head = {"xq_ptr": "*i8", "amax_ptr": activation}
    else:
        head = {"x_ptr": activation, "s_ptr": "*fp32"}
    tail = {"w_ptr": "*i8", "ws_ptr": "*fp32", "b_ptr": "*fp32", "M": "i32", "N": "i32", "K": "i32"}
    return {**head, **tail, "y_ptr": out}


def compile_variant(
    kernel_name: str,
    tactic: int,
    arch: int | str,
    *,
    dtype: str = "fp16",
    out_dtype: str | None = None,
    has_bias: bool = True,
    has_smooth: bool = True,
    alignment: str = ALIGNED,
    shape: tuple[int | None, int | None] = (None, None),
    hinted: bool = True,
) -> tuple[str, str, Any]:
    """PTX of one tactic's variant of a GEMM kernel, as the plugin's ``aot_impl`` compiles it.

    Args:
        kernel_name: ``w8a8_gemm_kernel`` or ``quant_w8a8_gemm_kernel``.
        tactic: TensorRT tactic (see :func:`tile_config`).
        arch: GPU architecture.
        dtype: Triton type of ``amax`` / ``x``: ``fp16``, ``bf16`` or ``fp32``.
        out_dtype: Triton type of ``y`` (default ``dtype``).
        has_bias: The ``has_bias`` attribute.
        has_smooth: The ``has_smooth`` attribute (quantizing kernel only).
        alignment: :data:`ALIGNED` (K and N promised multiples of :func:`alignment_divisors`)
            or :data:`UNALIGNED` (any K and N); :func:`alignment_variant` picks it per weight.
        shape: The weight's ``(N, K)`` where known at build time: the aligned variant is refused
            for a shape that breaks its contract (:func:`check_alignment`).
        hinted: False compiles with no alignment hint at all (how the AOT compile was before
            the contract; kept only to show that the PTX audit rejects it).

    Returns:
        ``(kernel_name, ptx, PtxMetadata)`` from :func:`sq_trt.plugins.aot.compile_ptx`.

    Raises:
        ConfigError: Unknown tactic or alignment, or the aligned variant for a ``shape`` off its contract.
    """
    from sq_trt.plugins.aot import compile_ptx

    tile = tile_config(tactic)
    flags: dict[str, Any] = {"HAS_BIAS": has_bias, "STORE_ACC": False}
    if kernel_name == "quant_w8a8_gemm_kernel":
        flags = {"HAS_SMOOTH": has_smooth, **flags, "USE_LIBDEVICE": True}
    if alignment not in (ALIGNED, UNALIGNED):
        raise ConfigError(f"GEMM variant alignment {alignment!r}; expected {ALIGNED!r} or {UNALIGNED!r}")
    out = out_dtype or dtype
    n, k = shape
    if alignment == ALIGNED and n is not None and k is not None:
        check_alignment(kernel_name, n, k, out)
    signature = gemm_signature(kernel_name, f"*{dtype}", f"*{out}")
    hints = divisibility_hints(signature, alignment == ALIGNED, out) if hinted else {}
    return compile_ptx(
        globals()[kernel_name], signature, {**tile.constexprs(), **flags}, arch,
        num_warps=tile.num_warps, num_stages=tile.num_stages, divisibility=hints,
    )  # fmt: skip
