"""The exact INT8 GEMM of the searches (alpha search, hybrid plan), fast on every x86-64 CPU.

``x_q @ w_q.T`` of int8 operands with exact integer accumulation is what the deployed engine
computes (int32 accumulation). Two exact ways to get it on a CPU:

* ``float32``: float32 GEMMs over K-chunks of at most :data:`EXACT_FLOAT32_K` = 1024 input
  channels. An int8 product is at most ``128 * 127 < 2**14`` in size (only per-tensor
  activations reach -128; weights stay within ±127), so every partial sum of a chunk is an
  integer below ``2**24`` and float32 holds it exactly, whatever order the BLAS sums in.
  Chunks are added in float64 (exact: integers below ``2**53``) and rounded once to float32.
  Runs on the float32 BLAS every CPU has.
* ``int_mm``: ``torch._int_mm`` (int32 accumulation). Fast where the CPU has 8-bit dot
  products (AVX-512 VNNI, AVX-VNNI, AMX); measured 28x *slower* than a float32 GEMM on an
  AVX2-only AMD EPYC (DESIGN.md, 2026-12-07), so it is taken only where ``/proc/cpuinfo``
  lists one of those flags.

Both return the same float32 bits (one rounding of the exact integer), so the choice changes
time, never a result: searches pick the same alphas and plans on every CPU.
``SQ_TRT_INT8_GEMM=float32|int_mm`` forces a path (benchmarks; ``bench/bench_int8_gemm.py``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

# Input channels a float32 GEMM of int8 operands sums exactly: 1024 * 128 * 128 = 2**24.
EXACT_FLOAT32_K = 1024
# CPU flags (Linux /proc/cpuinfo spelling) of 8-bit integer dot-product instructions.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
GemmPath = Literal["float32", "int_mm"]
_ENV = "SQ_TRT_INT8_GEMM"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where ``/proc/cpuinfo`` is unreadable)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def gemm_path() -> GemmPath:
    """``int_mm`` on CPUs with 8-bit dot products, else ``float32``; ``SQ_TRT_INT8_GEMM`` overrides.

    Raises:
        ValueError: ``SQ_TRT_INT8_GEMM`` is set to something else than ``float32`` or ``int_mm``.
    """
    forced = os.environ.get(_ENV, "").strip()
    if forced:
        if forced not in ("float32", "int_mm"):
            raise ValueError(f"{_ENV}={forced!r}: expected 'float32' or 'int_mm'")
        return "int_mm" if forced == "int_mm" else "float32"
    return "int_mm" if cpu_flags() & VNNI_FLAGS else "float32"


def int8_matmul_float32(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """Exact ``x_q @ w_q.T`` through float32 GEMMs over K-chunks of at most 1024, as float32 ``[T, N]``."""
    k = x_q.shape[-1]
    if k <= EXACT_FLOAT32_K:
        return x_q.float() @ w_q.float().t()
    acc = None
    for start in range(0, k, EXACT_FLOAT32_K):
        end = start + EXACT_FLOAT32_K
        part = x_q[:, start:end].float() @ w_q[:, start:end].float().t()
        acc = part.double() if acc is None else acc.add_(part)
    assert acc is not None  # k >= 1 here
    return acc.float()


def int8_matmul(x_q: torch.Tensor, w_q: torch.Tensor, *, path: GemmPath | None = None) -> torch.Tensor:
    """``x_q @ w_q.T`` of int8 ``[T, K]`` and ``[N, K]`` in exact integer arithmetic, as float32 ``[T, N]``.

    Args:
        x_q: int8 activations ``[T, K]``.
        w_q: int8 weights ``[N, K]``.
        path: ``float32`` or ``int_mm``; default :func:`gemm_path` (by CPU). Same result either way.
    """
    import torch

    if (path or gemm_path()) == "int_mm":
        try:
            return torch._int_mm(x_q, w_q.t()).float()
        except (RuntimeError, NotImplementedError):
            pass  # shapes _int_mm refuses (e.g. T <= 16 on some builds): the float32 path is exact too
    return int8_matmul_float32(x_q, w_q)
