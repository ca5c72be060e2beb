"""The searches' exact INT8 GEMM: both paths equal the integer product bit for bit, on any CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sq_trt.quant import intgemm


def _exact(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """The integer product in int64, rounded once to float32 (the reference)."""
    return (x_q.long() @ w_q.long().t()).double().float()


@pytest.mark.parametrize("path", ["float32", "int_mm"])
@pytest.mark.parametrize(("tokens", "k", "n"), [(1, 1, 1), (7, 33, 5), (64, 576, 192), (32, 1536, 24), (17, 3000, 8)])
def test_int8_matmul_is_the_exact_integer_product(path: str, tokens: int, k: int, n: int) -> None:
    generator = torch.Generator().manual_seed(k)
    x_q = torch.randint(-128, 128, (tokens, k), dtype=torch.int8, generator=generator)  # -128: per-tensor saturation
    w_q = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=generator)
    assert torch.equal(intgemm.int8_matmul(x_q, w_q, path=path), _exact(x_q, w_q))  # type: ignore[arg-type]


def test_float32_path_is_exact_at_the_largest_products() -> None:
    """Extreme products (-128 * -127) over K = 4096: sums near 2**26, past float32's
    exact range as one GEMM, so only the 1024-chunking keeps it exact (a plain float32 GEMM would round)."""
    k = 4096
    x_q = torch.full((3, k), -128, dtype=torch.int8)
    w_q = torch.full((2, k), -127, dtype=torch.int8)
    w_q[1, ::3] = 127  # a sum with cancellation too
    w_q[1, 5] = 1  # and an odd term, so the exact value needs every low bit
    exact = _exact(x_q, w_q)
    assert torch.equal(intgemm.int8_matmul_float32(x_q, w_q), exact)
    assert int(exact[0, 0]) == k * 128 * 127


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    assert intgemm.cpu_flags(info) == frozenset({"fpu", "avx2", "avx512_vnni"})
    assert intgemm.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("value", "expected"), [("float32", "float32"), ("int_mm", "int_mm")])
def test_gemm_path_can_be_forced(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    intgemm.gemm_path.cache_clear()
    monkeypatch.setenv("SQ_TRT_INT8_GEMM", value)
    try:
        assert intgemm.gemm_path() == expected
    finally:
        intgemm.gemm_path.cache_clear()


def test_gemm_path_refuses_an_unknown_value(monkeypatch: pytest.MonkeyPatch) -> None:
    intgemm.gemm_path.cache_clear()
    monkeypatch.setenv("SQ_TRT_INT8_GEMM", "int4")
    try:
        with pytest.raises(ValueError, match="SQ_TRT_INT8_GEMM"):
            intgemm.gemm_path()
    finally:
        intgemm.gemm_path.cache_clear()


def test_gemm_path_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    intgemm.gemm_path.cache_clear()
    monkeypatch.delenv("SQ_TRT_INT8_GEMM", raising=False)
    try:
        has_vnni = bool(intgemm.cpu_flags() & intgemm.VNNI_FLAGS)
        assert intgemm.gemm_path() == ("int_mm" if has_vnni else "float32")
    finally:
        intgemm.gemm_path.cache_clear()
