"""AOT compile of the plugin kernels to PTX on a machine with no GPU, and the PTX cache."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

from sq_trt.errors import ConfigError
from sq_trt.plugins import aot, kernels

PLAIN_SIG = {"x_ptr": "*fp16", "n_rows": "i32", "n_cols": "i32", "xq_ptr": "*i8", "amax_ptr": "*fp16"}
FUSED_SIG = {
    "x_ptr": "*bf16", "w_ptr": "*fp32", "n_rows": "i32", "n_cols": "i32", "xq_ptr": "*i8", "amax_ptr": "*bf16",
}  # fmt: skip
LN_SIG = {
    "x_ptr": "*fp16", "w_ptr": "*fp16", "b_ptr": "*fp16", "n_rows": "i32", "n_cols": "i32", "xq_ptr": "*i8",
    "amax_ptr": "*fp16",
}  # fmt: skip
GPU_CONSTS = {"SINGLE_PASS": True, "USE_LIBDEVICE": True}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path))
    return tmp_path / "ptx"


def _entry_params(ptx: str, name: str) -> list[str]:
    match = re.search(rf"\.entry\s+{name}\s*\(([^)]*)\)", ptx)
    assert match, f"no .entry {name}"
    return [p.strip() for p in match.group(1).split(",") if p.strip()]


def _ptxas(arch: int) -> Path:
    # Triton ships ptxas (CUDA 12.9) and, for sm_90+, ptxas-blackwell.
    import triton

    name = "ptxas-blackwell" if arch >= 90 else "ptxas"
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


@pytest.mark.parametrize("arch", aot.SUPPORTED_ARCHS)
@pytest.mark.parametrize(
    ("kernel", "signature", "consts"),
    [
        (kernels.per_token_quant_kernel, PLAIN_SIG, {"BLOCK": 1024, **GPU_CONSTS}),
        (kernels.rmsnorm_per_token_quant_kernel, FUSED_SIG, {"EPS": 1e-5, "BLOCK": 2048, **GPU_CONSTS}),
        (kernels.layernorm_per_token_quant_kernel, LN_SIG, {"EPS": 1e-5, "BLOCK": 1024, **GPU_CONSTS}),
    ],
    ids=["plain", "rmsnorm", "layernorm"],
)
def test_ptx_for_each_arch(kernel, signature, consts, arch: int, cache: Path, tmp_path: Path) -> None:
    name, ptx, meta = aot.compile_ptx(kernel, signature, consts, arch)
    assert name == kernel.__name__ == meta.kernel_name
    suffix = "a" if arch >= 90 else ""  # Triton targets the arch-specific sm_90a on Hopper
    assert re.search(rf"^\.target sm_{arch}{suffix}\s*$", ptx, re.MULTILINE)
    assert re.search(r"^\.version 8\.4\s*$", ptx, re.MULTILINE)  # pinned ISA, loadable by CUDA 12.4+ drivers
    # Exactly the parameters TensorRT passes: input pointers, int32 scalars, output pointers.
    params = _entry_params(ptx, name)
    assert len(params) == len(signature) == meta.num_params
    assert [".u32" in p for p in params] == [t == "i32" for t in signature.values()]
    assert meta.stripped_params == 2  # Triton's global/profile scratch pointers
    # The GPU rounding primitive and the correctly rounded reciprocal, not the interpreter's trick.
    assert "cvt.rni.f32.f32" in ptx and "div.rn.f32" in ptx
    assert "0f4B400000" not in ptx  # 1.5 * 2**23, the interpreter-only magic constant
    # No line-number directives: the engine must not carry this machine's source paths.
    assert ".loc" not in ptx and ".file" not in ptx and "kernels.py" not in ptx
    assert meta.num_warps in (4, 8) and meta.arch == arch
    # The rewritten PTX still assembles for its target with NVIDIA's assembler.
    ptx_file = tmp_path / f"{name}.ptx"
    ptx_file.write_text(ptx)
    target = f"sm_{arch}{suffix}"
    proc = subprocess.run(
        [str(_ptxas(arch)), f"-arch={target}", str(ptx_file), "-o", str(tmp_path / "out.cubin")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_cache_hit_returns_same_ptx(cache: Path) -> None:
    consts = {"BLOCK": 256, **GPU_CONSTS}
    first = aot.compile_ptx(kernels.per_token_quant_kernel, PLAIN_SIG, consts, "sm_86")
    assert not first[2].cache_hit
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".ptx")
    assert not list(cache.glob(".*.tmp"))  # atomic writes leave no temp files
    meta = json.loads((cache / files[0]).read_text())
    assert meta["arch"] == 86 and meta["kernel_name"] == "per_token_quant_kernel"
    second = aot.compile_ptx(kernels.per_token_quant_kernel, PLAIN_SIG, consts, 86)
    assert second[2].cache_hit and second[1] == first[1]
    # Another architecture or constant is another entry.
    other = aot.compile_ptx(kernels.per_token_quant_kernel, PLAIN_SIG, {**consts, "BLOCK": 512}, 86)
    assert not other[2].cache_hit and len(list(cache.glob("*.ptx"))) == 2


def test_corrupt_cache_entry_is_recompiled(cache: Path) -> None:
    consts = {"BLOCK": 128, **GPU_CONSTS}
    _, ptx, _ = aot.compile_ptx(kernels.per_token_quant_kernel, PLAIN_SIG, consts, 80)
    (meta_file,) = cache.glob("*.json")
    meta_file.write_text("{not json")
    _, again, meta = aot.compile_ptx(kernels.per_token_quant_kernel, PLAIN_SIG, consts, 80)
    assert not meta.cache_hit and again == ptx
    assert json.loads(meta_file.read_text())["arch"] == 80


@pytest.mark.parametrize(
    ("given", "expected"), [(80, 80), ("86", 86), ("8.9", 89), ("sm_90a", 90), ("SM_80", 80)]
)
def test_normalize_arch(given: int | str, expected: int) -> None:
    assert aot.normalize_arch(given) == expected


@pytest.mark.parametrize("bad", ["sm_75", "100", "ampere", ""])
def test_normalize_arch_refuses(bad: str) -> None:
    with pytest.raises(ConfigError, match="architecture"):
        aot.normalize_arch(bad)


def test_signature_must_name_runtime_params_in_order(cache: Path) -> None:
    swapped = {"n_rows": "i32", "x_ptr": "*fp16", "n_cols": "i32", "xq_ptr": "*i8", "amax_ptr": "*fp16"}
    with pytest.raises(ConfigError, match="runtime parameters"):
        aot.compile_ptx(kernels.per_token_quant_kernel, swapped, {"BLOCK": 64, **GPU_CONSTS}, 80)


PTX_TEMPLATE = """.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 .ptr .global .align 1 k_param_2,
\t.param .u64 .ptr .global .align 1 k_param_3
)
{
\tld.param.b64 \t%rd1, [k_param_0];
\tld.param.b32 \t%r1, [k_param_1];
BODY}
"""


def test_strip_hidden_params_keeps_user_params() -> None:
    ptx, removed = aot.strip_hidden_params(PTX_TEMPLATE.replace("BODY", ""), "k", 2)
    assert removed == 2
    assert _entry_params(ptx, "k") == [".param .u64 .ptr .global .align 1 k_param_0", ".param .u32 k_param_1"]
    assert "ld.param.b32 \t%r1, [k_param_1];" in ptx


def test_strip_hidden_params_refuses_a_used_scratch_pointer() -> None:
    used = "\tld.param.b64 \t%rd9, [k_param_3];\n"
    with pytest.raises(aot.KernelCompileError, match="k_param_3"):
        aot.strip_hidden_params(PTX_TEMPLATE.replace("BODY", used), "k", 2)


def test_strip_hidden_params_refuses_missing_entry() -> None:
    with pytest.raises(aot.KernelCompileError, match="no `.entry other`"):
        aot.strip_hidden_params(PTX_TEMPLATE.replace("BODY", ""), "other", 2)


@pytest.mark.parametrize(
    ("n_cols", "expected"),
    [(1, (16, True, 4)), (77, (128, True, 4)), (576, (1024, True, 4)), (4096, (4096, True, 8)),
     (8192, (8192, True, 8)), (8193, (kernels.STREAM_BLOCK, False, 4)), (None, (kernels.STREAM_BLOCK, False, 4))],
)  # fmt: skip
def test_launch_config(n_cols: int | None, expected: tuple[int, bool, int]) -> None:
    assert kernels.launch_config(n_cols) == expected


def test_unwritable_cache_still_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("SQ_TRT_CACHE", str(blocker))
    name, ptx, meta = aot.compile_ptx(
        kernels.per_token_quant_kernel, PLAIN_SIG, {"BLOCK": 32, **GPU_CONSTS}, 89
    )
    assert name == "per_token_quant_kernel" and ".entry per_token_quant_kernel" in ptx and not meta.cache_hit


def test_divisibility_hints_reach_triton_and_the_cache_key(cache: Path) -> None:
    # A hint on the pointers and n_cols lets Triton prove 16-byte rows: the hinted PTX differs, its
    # metadata records the promise, and the two compiles are two cache entries.
    hints = {"x_ptr": 16, "xq_ptr": 16, "amax_ptr": 16, "n_cols": 16}
    consts = {"BLOCK": 1024, **GPU_CONSTS}
    _, plain, plain_meta = aot.compile_ptx(kernels.per_token_quant_kernel, PLAIN_SIG, consts, 80)
    _, hinted, meta = aot.compile_ptx(
        kernels.per_token_quant_kernel, PLAIN_SIG, consts, 80, divisibility=hints
    )
    assert plain_meta.divisibility == {} and meta.divisibility == dict(sorted(hints.items()))
    assert hinted != plain
    assert len(list(cache.glob("*.ptx"))) == 2
    _, again, cached = aot.compile_ptx(
        kernels.per_token_quant_kernel, PLAIN_SIG, consts, 80, divisibility=hints
    )
    assert cached.cache_hit and again == hinted and cached.divisibility == meta.divisibility


@pytest.mark.parametrize(
    ("hints", "message"),
    [
        ({"BLOCK": 16}, "not a runtime parameter"),
        ({"n_cols": 12}, "not a power of two"),
        ({"x_ptr": 0}, "power"),
    ],
)
def test_bad_divisibility_hints_are_refused(hints: dict[str, int], message: str, cache: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        aot.compile_ptx(
            kernels.per_token_quant_kernel, PLAIN_SIG, {"BLOCK": 1024, **GPU_CONSTS}, 80, divisibility=hints
        )
