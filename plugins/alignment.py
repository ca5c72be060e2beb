"""The fused GEMM plugins' alignment contract (no Triton import: the engine builder reads it too).

TensorRT hands the plugin bare pointers and M, N, K, so the AOT compile must be told what Triton's
JIT would learn from the launch arguments: that every row starts on a 16-byte boundary. Then each
int8 tile is loaded with ``cp.async`` / 16-byte vector loads; without it, one byte at a time
(docs/PLUGIN.md, "Alignment contract"). Rows of the int8 operands (``x_q``, ``weight``, and ``x``
of QuantW8A8Gemm) are K elements long, rows of ``y`` are N: K must be a multiple of 16 and N of
16 bytes' worth of ``y``'s dtype (8 for fp16/bf16, 4 for fp32). Base pointers: TensorRT allocates
tensors at 256-byte boundaries (a claim only a GPU run settles, docs/GPU_HOST.md).

A weight that breaks the contract gets the ``unaligned`` variant (same kernel, no K/N hint), chosen
at build time from the weight's constant shape and named in the engine manifest.
"""

from __future__ import annotations

from sq_trt.errors import ConfigError

VECTOR_BYTES = 16
_ITEMSIZE = {"i8": 1, "fp16": 2, "bf16": 2, "fp32": 4}
ALIGNED = "aligned"
UNALIGNED = "unaligned"


def alignment_divisors(out_dtype: str) -> dict[str, int]:
    """What K and N must be multiples of for the aligned variant, given ``y``'s Triton type."""
    if out_dtype not in _ITEMSIZE:
        raise ConfigError(f"GEMM output type {out_dtype!r} is not one of fp16, bf16, fp32")
    return {"K": VECTOR_BYTES // _ITEMSIZE["i8"], "N": VECTOR_BYTES // _ITEMSIZE[out_dtype]}


def alignment_variant(n: int | None, k: int | None, out_dtype: str) -> str:
    """:data:`ALIGNED` when the weight's (N, K) meets the contract, else :data:`UNALIGNED`.

    A dimension unknown at build time cannot be promised, so it takes the unaligned variant.
    """
    need = alignment_divisors(out_dtype)
    ok = n is not None and k is not None and n % need["N"] == 0 and k % need["K"] == 0
    return ALIGNED if ok else UNALIGNED


def check_alignment(plugin: str, n: int, k: int, out_dtype: str) -> None:
    """Refuse to use the aligned variant for a shape that breaks its contract.

    Raises:
        ConfigError: K or N is not a multiple of what the aligned PTX assumes; the aligned
            kernel would read misaligned rows with instructions that require alignment.
    """
    need = alignment_divisors(out_dtype)
    bad = [f"{d}={v} (needs a multiple of {need[d]})" for d, v in (("K", k), ("N", n)) if v % need[d]]
    if bad:
        raise ConfigError(
            f"{plugin}: weight [N={n}, K={k}] does not meet the aligned GEMM's contract: {', '.join(bad)}; "
            f"pad the weight at export, or build the {UNALIGNED} variant (slow: byte-wise loads)"
        )
