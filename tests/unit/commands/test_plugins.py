"""`sq-trt plugins list` / `sq-trt plugins ptx`: what a reviewer uses to see the kernels without a GPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sq_trt import plugin_spec
from sq_trt.cli import main

NAMES = (
    plugin_spec.PER_TOKEN_QUANT,
    plugin_spec.RMSNORM_PER_TOKEN_QUANT,
    plugin_spec.LAYERNORM_PER_TOKEN_QUANT,
    plugin_spec.W8A8_GEMM,
    plugin_spec.QUANT_W8A8_GEMM,
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sq_trt", *args], check=False, capture_output=True, text=True, timeout=300
    )


def test_list_names_every_plugin_with_its_interface(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    blocks = out.split("sq_trt::")[1:]
    assert [b.split(" ", 1)[0] for b in blocks] == list(NAMES)
    for block in blocks:
        for field in ("inputs:", "outputs:", "attributes:", "kernel:", "archs:"):
            assert field in block
        assert "sm_80, sm_86, sm_89, sm_90" in block
    gemm = blocks[3]
    assert "x_q: int8 [..., K]" in gemm and "weight: int8 [N, K]" in gemm and "has_bias" in gemm
    from sq_trt.plugins.gemm import TILE_CONFIGS

    assert f"{len(TILE_CONFIGS)} AOT variants = TensorRT autotune tactics" in gemm
    assert "has_smooth" in blocks[4] and "epsilon: float" in blocks[1]


@pytest.mark.parametrize("sub", ["list", "ptx", "audit"])
def test_subcommands_have_help(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plugins", sub, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out) > 100


def test_ptx_writes_one_file_per_tactic_with_integer_mma(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ptx"
    assert main(["plugins", "ptx", "sq_trt::w8a8gemm", "--arch", "sm_89", "--out", str(out)]) == 0
    files = sorted(out.glob("*.ptx"))
    from sq_trt.plugins.gemm import TILE_CONFIGS

    assert len(files) == len(TILE_CONFIGS) and all(
        f.name.startswith("W8A8Gemm-sm89-fp16-tactic") for f in files
    )
    for f in files:
        text = f.read_text()
        assert re.search(r"^\.target sm_89\s*$", text, re.MULTILINE)
        assert "mma.sync.aligned.m16n8k32.row.col.satfinite.s32.s8.s8.s32" in text
    index = json.loads((out / "variants.json").read_text())
    assert [v["file"] for v in index["variants"]] == [f.name for f in files]
    assert all(
        v["mma"] == ["mma.sync.aligned.m16n8k32.row.col.satfinite.s32.s8.s8.s32"] for v in index["variants"]
    )
    assert "s32.s8.s8.s32" in capsys.readouterr().out


def test_ptx_of_a_per_token_plugin_has_its_two_layouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ptx"
    args = ["plugins", "ptx", "LayerNormPerTokenQuant", "--arch", "86", "--out", str(out), "--dtype", "bf16"]
    assert main([*args, "--hidden", "576"]) == 0
    names = sorted(f.name for f in out.glob("*.ptx"))
    assert names == [
        "LayerNormPerTokenQuant-sm86-bf16-single-pass-k576.ptx",
        "LayerNormPerTokenQuant-sm86-bf16-streaming.ptx",
    ]
    assert all(".entry layernorm_per_token_quant_kernel" in (out / n).read_text() for n in names)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Nope", "--arch", "sm_90"], "no sq_trt plugin is named 'Nope'"),
        (["W8A8Gemm", "--arch", "sm_100"], "supported: sm_80, sm_86, sm_89, sm_90"),
        (["W8A8Gemm", "--arch", "volta"], "not a compute capability"),
        (["W8A8Gemm", "--arch", "sm_90", "--hidden", "0"], "--hidden 0"),
    ],
)
def test_user_errors_are_one_line_exit_1(args: list[str], message: str, tmp_path: Path) -> None:
    result = _run("plugins", "ptx", *args, "--out", str(tmp_path / "o"))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
