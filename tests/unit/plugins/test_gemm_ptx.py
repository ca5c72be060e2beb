"""PTX proof that the fused GEMM plugins run integer tensor cores, compiled here with no GPU.

Every AOT variant (one per autotune tactic) of both GEMM kernels is compiled for each supported
architecture exactly as the plugins' ``aot_impl`` compiles it, and its PTX must contain integer MMA
instructions (``mma.sync ... .s32.s8.s8.s32`` on sm_80-sm_89; ``wgmma ... .s32.s8.s8`` on sm_90a for
the tiles a warpgroup can run) and no floating-point MMA at all: the main loop cannot have fallen
back to FP16. NVIDIA's ``ptxas`` (shipped with Triton) must assemble each one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

from sq_trt.errors import ConfigError
from sq_trt.plugins import aot, catalog, gemm

GEMMS = ("W8A8Gemm", "QuantW8A8Gemm")
_MMA_RE = re.compile(r"^\s*(w?g?mma\.\S+)", re.MULTILINE)
INT_MMA = {
    80: "mma.sync.aligned.m16n8k32.row.col.satfinite.s32.s8.s8.s32",
    86: "mma.sync.aligned.m16n8k32.row.col.satfinite.s32.s8.s8.s32",
    89: "mma.sync.aligned.m16n8k32.row.col.satfinite.s32.s8.s8.s32",
}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path))
    return tmp_path / "ptx"


def _ptxas(arch: int) -> Path:
    import triton

    name = "ptxas-blackwell" if arch >= 90 else "ptxas"
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def _assemble(ptx: str, arch: int, folder: Path) -> None:
    target = f"sm_{arch}{'a' if arch >= 90 else ''}"
    source = folder / "k.ptx"
    source.write_text(ptx)
    proc = subprocess.run(
        [str(_ptxas(arch)), f"-arch={target}", str(source), "-o", str(folder / "k.cubin")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("arch", aot.SUPPORTED_ARCHS)
@pytest.mark.parametrize("plugin", GEMMS)
def test_every_tactic_runs_integer_tensor_cores(plugin: str, arch: int, cache: Path, tmp_path: Path) -> None:
    variants = catalog.compile_variants(plugin, f"sm_{arch}")
    assert len(variants) == len(gemm.TILE_CONFIGS)
    for variant in variants:
        ptx = variant.ptx
        mmas = [m.rstrip(";") for m in _MMA_RE.findall(ptx)]
        compute = [m for m in mmas if "mma_async" in m or m.startswith("mma.sync")]
        assert compute, f"{variant.label} on sm_{arch}: no MMA instruction at all"
        # Integer operands only: no f16 / bf16 / tf32 / f32 MMA anywhere in the kernel.
        assert all(".s8.s8" in m for m in compute), (variant.label, sorted(set(compute)))
        assert not re.search(r"mma\S*\.(f16|bf16|tf32|f32)\b", ptx), variant.label
        tile = gemm.tile_config(int(variant.label.split("-")[0].removeprefix("tactic")))
        if arch == 90 and tile.block_m >= 64:
            # Hopper's warpgroup MMA on int8: m64nNk32 with int32 accumulators.
            assert all(
                re.fullmatch(r"wgmma\.mma_async\.sync\.aligned\.m64n\d+k32\.s32\.s8\.s8", m) for m in compute
            )
        elif arch == 90:
            assert set(compute) == {INT_MMA[80]}  # a 16-row tile is below a warpgroup: mma.sync
        else:
            assert set(compute) == {INT_MMA[arch]}
        # Exactly TensorRT's launch arguments: 5 input pointers, M, N, K, the output pointer.
        head = ptx.split(".entry", 1)[1].split(")", 1)[0]
        assert re.findall(r"\.param\s+\.(\w+)", head) == ["u64"] * 5 + ["u32"] * 3 + ["u64"]
        assert variant.meta.shared_mem <= 48 * 1024  # no opt-in to large dynamic shared memory needed
        if plugin == "QuantW8A8Gemm":
            # In-register quantization: the GPU rounding and the correctly rounded 127 / amax.
            assert "cvt.rni.f32.f32" in ptx and "div.rn.f32" in ptx and "0f4B400000" not in ptx
        assert "fma.rn.f32" not in ptx  # the epilogue's * w_scale + bias rounds twice, as the reference
    _assemble(variants[-1].ptx, arch, tmp_path)


@pytest.mark.parametrize("arch", ["sm_100", "sm_120", "10.0", "sm_75"])
def test_unsupported_architectures_are_refused_with_the_supported_list(arch: str, cache: Path) -> None:
    with pytest.raises(ConfigError, match=r"supported: sm_80, sm_86, sm_89, sm_90"):
        catalog.compile_variants("W8A8Gemm", arch)


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [(None, None, [1, 2, 3, 4, 5, 6]), (576, 576, [1, 2, 3, 4, 5, 6]), (40, 1536, [1, 2, 4, 6]), (8, 8, [1])],
)
def test_tactics_leave_out_tiles_bigger_than_the_weight(
    n: int | None, k: int | None, expected: list[int]
) -> None:
    assert gemm.tactics_for(n, k) == expected


def test_tactic_zero_is_a_real_tile_and_unknown_tactics_are_refused() -> None:
    assert gemm.tile_config(0) == gemm.TILE_CONFIGS[1]
    with pytest.raises(ConfigError, match="tactic 7"):
        gemm.tile_config(7)


@pytest.mark.parametrize("hidden", [576, 1536, 4096, 8960])
def test_real_hidden_sizes_take_the_aligned_variant(hidden: int) -> None:
    for out in ("fp16", "bf16", "fp32"):
        assert gemm.alignment_variant(hidden, hidden, out) == gemm.ALIGNED
        gemm.check_alignment("W8A8Gemm", hidden, hidden, out)  # no error


@pytest.mark.parametrize(
    ("n", "k", "out", "expected"),
    [
        (576, 584, "fp16", gemm.UNALIGNED),  # K = 584: a multiple of 8 only, int8 rows need 16
        (580, 576, "fp16", gemm.UNALIGNED),  # N = 580: fp16 rows of y need a multiple of 8
        (580, 576, "fp32", gemm.ALIGNED),  # ... fp32 rows only of 4
        (None, 576, "fp16", gemm.UNALIGNED),  # unknown at build time: nothing to promise
    ],
)
def test_shapes_off_the_contract_take_the_unaligned_variant(
    n: int | None, k: int, out: str, expected: str
) -> None:
    assert gemm.alignment_variant(n, k, out) == expected


def test_the_aligned_contract_is_checked_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"K=584 \(needs a multiple of 16\).*pad the weight"):
        gemm.check_alignment("QuantW8A8Gemm", 576, 584, "fp16")
    with pytest.raises(ConfigError, match=r"N=580 \(needs a multiple of 8\)"):
        gemm.check_alignment("W8A8Gemm", 580, 576, "bf16")
    with pytest.raises(ConfigError, match="alignment 'maybe'"):
        gemm.compile_variant("w8a8_gemm_kernel", 1, 80, alignment="maybe")


def test_aligned_variants_promise_exactly_the_contract(cache: Path) -> None:
    _, aligned_ptx, aligned = gemm.compile_variant("quant_w8a8_gemm_kernel", 2, 80, dtype="bf16")
    _, _, loose = gemm.compile_variant(
        "quant_w8a8_gemm_kernel", 2, 80, dtype="bf16", alignment=gemm.UNALIGNED
    )
    pointers = {"x_ptr", "s_ptr", "w_ptr", "ws_ptr", "b_ptr", "y_ptr"}
    assert aligned.divisibility == {**dict.fromkeys(pointers, 16), "K": 16, "N": 8}
    assert loose.divisibility == dict.fromkeys(pointers, 16)  # base pointers only: any K, N
    assert "cp.async.cg.shared.global" in aligned_ptx and not re.search(
        r"ld\.global\S*\.[sub]8\s", aligned_ptx
    )
