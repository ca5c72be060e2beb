"""The PTX audit (`sq-trt plugins audit`): aligned variants pass, an unhinted one fails, with no GPU.

The PTX is compiled here exactly as the plugins' ``aot_impl`` compiles it, and NVIDIA's ``ptxas``
(the ``nvidia-cuda-nvcc-cu12`` wheel, else Triton's copy) reports registers and spills.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

from sq_trt.cli import main
from sq_trt.errors import ConfigError
from sq_trt.plugins import aot, audit, catalog, gemm

# Verbatim `ptxas -v -arch=sm_90a` output (CUDA 12.9) for an aligned W8A8Gemm variant, and for a
# kernel that spills (the wording ptxas uses for both).
_PTXAS_OK = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'w8a8_gemm_kernel' for 'sm_90a'
ptxas info    : Function properties for w8a8_gemm_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 68 registers, used 1 barriers
"""
_PTXAS_SPILL = """ptxas info    : Function properties for k
    64 bytes stack frame, 60 bytes spill stores, 52 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem, 400 bytes cmem[0]
"""


def test_ptxas_reports_are_parsed() -> None:
    assert audit.parse_ptxas_verbose(_PTXAS_OK) == audit.PtxasReport(68, 0, 0, 0)
    assert audit.parse_ptxas_verbose(_PTXAS_SPILL) == audit.PtxasReport(255, 60, 52, 1024)
    with pytest.raises(ConfigError, match="no register/spill report"):
        audit.parse_ptxas_verbose("ptxas fatal   : Unresolved extern function")


def test_load_kinds_tell_async_vector_and_byte_loads_apart() -> None:
    ptx = (
        "\tcp.async.cg.shared.global [ %r1 + 0 ], [ %rd2 + 0 ], 0x10, %r3;\n"
        "\t@%p1 cp.async.ca.shared.global [ %r4 + 0 ], [ %rd5 + 0 ], 0x4, %r6;\n"
        "\t@%p2 ld.global.v4.b32 { %r7, %r8, %r9, %r10 }, [ %rd11 + 0 ];\n"
        "\tld.global.v2.b32 { %r12, %r13 }, [ %rd14 + 0 ];\n"
        "\t@%p3 ld.global.b8 { %rs1 }, [ %rd15 + 0 ];\n"
        "\tld.global.nc.s8 %rs2, [%rd16];\n"
        "\tld.global.b16 { %rs3 }, [ %rd17 + 0 ];\n"
        "\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r1], [%rd1, {%r2, %r3}], [%r4];\n"
    )
    kinds = audit.load_kinds(ptx)
    assert kinds == {"cp.async": 2, "tma": 1, "ld.v4": 1, "ld.v2": 1, "ld.byte": 2, "ld.scalar": 1}


def test_ptxas_comes_from_nvidias_wheel_else_tritons(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.delenv(audit.PTXAS_ENV, raising=False)
    found = audit.find_ptxas()
    assert found.name == "ptxas" and found.is_file()
    real = importlib.util.find_spec

    def without_nvcc_wheel(name: str, *args: object):
        return None if name == "nvidia.cuda_nvcc" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_nvcc_wheel)
    fallback = audit.find_ptxas()
    assert fallback.parts[-4:] == ("backends", "nvidia", "bin", "ptxas") and fallback.is_file()


def test_ptxas_override_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(audit.PTXAS_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="SQ_TRT_PTXAS"):
        audit.find_ptxas()


@pytest.mark.parametrize("arch", [80, 90])
def test_an_unhinted_gemm_fails_the_audit_and_the_hinted_one_passes(
    arch: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The AOT compile as it was before the alignment contract: no tt.divisibility anywhere, so
    # Triton cannot prove 16-byte rows and loads the int8 tiles one byte at a time.
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path))
    rows = {}
    for hinted in (False, True):
        _, ptx, meta = gemm.compile_variant("w8a8_gemm_kernel", 2, arch, hinted=hinted)
        rows[hinted] = audit.audit_ptx(
            "W8A8Gemm", arch, f"hinted={hinted}", ptx, meta.shared_mem, is_gemm=True
        )
    planted = rows[False]
    assert not planted.ok and planted.loads["ld.byte"] > 0 and planted.loads["cp.async"] == 0
    assert any("scalar byte loads" in f for f in planted.failures), planted.failures
    good = rows[True]
    assert good.ok, good.failures
    assert good.loads["ld.byte"] == 0 and good.loads["cp.async"] > 0 and "s8" in good.mma
    assert good.spill_bytes == 0 and 0 < good.registers <= 255
    assert "FAIL: " in audit.format_table([planted]) and "| ok |" in audit.format_table([good])


def test_the_unaligned_fallback_is_what_fails_the_load_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path))
    rows = audit.audit(["QuantW8A8Gemm"], ["sm_89"], alignment="unaligned")
    assert len(rows) == len(gemm.TILE_CONFIGS) and all(r.variant.endswith("-unaligned") for r in rows)
    assert all(any("scalar byte loads" in f for f in r.failures) for r in rows)


def test_every_plugin_arch_and_variant_passes_the_audit() -> None:
    # The CI gate. Uses the persistent PTX and ptxas caches (~/.cache/sq-trt/ptx), so it takes
    # seconds once warm; cold, every variant is compiled once (a few minutes on 2 cores).
    rows = audit.audit([p.name for p in catalog.PLUGINS], aot.SUPPORTED_ARCHS)
    gemm_variants = 2 * len(gemm.TILE_CONFIGS)
    assert len(rows) == len(aot.SUPPORTED_ARCHS) * (gemm_variants + 3 * 2)
    failed = [r for r in rows if not r.ok]
    assert not failed, audit.format_table(failed)


def test_audit_cli_prints_the_table_and_fails_on_a_broken_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path))
    args = ["plugins", "audit", "--arch", "sm_86", "--plugin", "W8A8Gemm"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "| W8A8Gemm | sm_86 | tactic1-" in out and "audit passed" in out
    assert (tmp_path / "a.json").read_text().count('"ok": true') == len(gemm.TILE_CONFIGS)
    assert main([*args, "--alignment", "unaligned"]) == 1
    assert "audit FAILED" in capsys.readouterr().out


def test_audit_cli_refuses_unknown_names_before_compiling(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "audit", "--arch", "sm_75"]) == 1
    assert main(["plugins", "audit", "--plugin", "Nope"]) == 1
    err = capsys.readouterr().err
    assert "sm_75" in err and "Nope" in err
