"""The Triton kernels, run by Triton's CPU interpreter, against the reference quantizer.

``TRITON_INTERPRET=1`` must be in the environment before Triton is imported and
while kernels launch, and this pytest process imports Triton normally for the
AOT tests. So all kernels run in one subprocess (this file executed as a
script): it reads the inputs from a safetensors file, launches the kernels and
writes the outputs back; every comparison happens here, case by case.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sq_trt.quant.reference import quantize_per_token

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32


def _tie_row(dtype: torch.dtype) -> torch.Tensor:
    # amax = 127 makes the reference's scale (1/127)*127 exactly 1.0 in float32, so
    # ±(k + 0.5) land exactly on .5: half-to-even sends 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
    halves = torch.arange(127, dtype=F32) + 0.5
    return torch.cat([torch.tensor([127.0]), halves, -halves]).to(dtype)[None, :]


@functools.cache
def _plain_cases() -> dict[str, tuple[torch.Tensor, int | None]]:
    """Case name -> (x, forced streaming block or None)."""
    gen = torch.Generator().manual_seed(1234)
    cases: dict[str, tuple[torch.Tensor, int | None]] = {}
    for dt in (F16, BF16):
        tag = str(dt).removeprefix("torch.")
        scale = torch.rand(16, 1, generator=gen) * 8
        cases[f"random-{tag}"] = ((torch.randn(16, 77, generator=gen) * scale).to(dt), None)
        cases[f"rank3-{tag}"] = (torch.randn(2, 3, 1000, generator=gen).to(dt), None)
        cases[f"zeros-{tag}"] = (torch.zeros(3, 64, dtype=dt), None)
        mixed = torch.randn(4, 100, generator=gen)
        mixed[1] = 0.0
        cases[f"zero-row-{tag}"] = (mixed.to(dt), None)
        outlier = torch.randn(8, 1000, generator=gen)
        outlier[:, 17] = 6.0e4 if dt == F16 else 1.0e30
        cases[f"outlier-{tag}"] = (outlier.to(dt), None)
        for k in (1, 3):
            cases[f"k{k}-{tag}"] = (torch.randn(5, k, generator=gen).to(dt), None)
        cases[f"single-token-{tag}"] = (torch.randn(1, 4096, generator=gen).to(dt), None)
        cases[f"wide-streaming-{tag}"] = (torch.randn(2, 9000, generator=gen).to(dt), None)
        cases[f"forced-streaming-{tag}"] = (torch.randn(3, 1000, generator=gen).to(dt), 64)
        cases[f"ties-{tag}"] = (_tie_row(dt), None)
        cases[f"ties-streaming-{tag}"] = (_tie_row(dt), 32)
    # x*(1/amax)*127 and x*(127/amax) differ here (-63.499996 vs -63.500004 in float32).
    cases["scale-formula-bfloat16"] = (torch.tensor([[3.734375, -1.8671875]], dtype=BF16), None)
    cases["random-float32"] = (torch.randn(4, 333, generator=gen), None)
    return cases


@functools.cache
def _fused_cases() -> dict[str, tuple[str, torch.Tensor, tuple[torch.Tensor, ...], float, int | None]]:
    """Case name -> (norm "rms" or "ln", x, (weight[, bias]), epsilon, forced streaming block or None)."""
    gen = torch.Generator().manual_seed(99)
    cases: dict[str, tuple[str, torch.Tensor, tuple[torch.Tensor, ...], float, int | None]] = {}

    def params(norm: str, k: int, dt: torch.dtype) -> tuple[torch.Tensor, ...]:
        w = (torch.rand(k, generator=gen) + 0.5).to(dt)
        return (w,) if norm == "rms" else (w, (torch.randn(k, generator=gen) * 0.1).to(dt))

    for dt in (F16, BF16):
        tag = str(dt).removeprefix("torch.")
        for norm in ("rms", "ln"):
            for k in (1, 77, 1000, 9000):
                x = torch.randn(6, k, generator=gen) * 3 + (1.0 if norm == "ln" else 0.0)
                cases[f"{norm}-k{k}-{tag}"] = (norm, x.to(dt), params(norm, k, dt), 1e-5, None)
            x = torch.randn(4, 512, generator=gen)
            x[:, 3] = 300.0
            x[2] = 0.0
            cases[f"{norm}-outlier-zero-row-{tag}"] = (norm, x.to(dt), params(norm, 512, dt), 1e-6, None)
            x = torch.randn(3, 1000, generator=gen).to(dt)
            cases[f"{norm}-forced-streaming-{tag}"] = (norm, x, params(norm, 1000, dt), 1e-5, 128)
    return cases


def _worker(inputs_path: str, outputs_path: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sq_trt.plugins.launch import layernorm_per_token_quant, per_token_quant, rmsnorm_per_token_quant

    outputs: dict[str, torch.Tensor] = {}
    with safe_open(inputs_path, framework="pt") as handle:
        specs = json.loads(handle.metadata()["specs"])
        for name, spec in specs.items():
            x = handle.get_tensor(f"{name}.x")
            if spec["kind"] == "plain":
                xq, amax = per_token_quant(x, block=spec["block"])
            elif spec["kind"] == "rms":
                w = handle.get_tensor(f"{name}.w")
                xq, amax = rmsnorm_per_token_quant(x, w, spec["eps"], block=spec["block"])
            else:
                w, b = handle.get_tensor(f"{name}.w"), handle.get_tensor(f"{name}.b")
                xq, amax = layernorm_per_token_quant(x, w, b, spec["eps"], block=spec["block"])
            outputs[f"{name}.xq"], outputs[f"{name}.amax"] = xq.contiguous(), amax.contiguous()
    save_file(outputs, outputs_path)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Outputs of every case, computed by the kernels under ``TRITON_INTERPRET=1``."""
    from safetensors.torch import load_file, save_file

    tensors: dict[str, torch.Tensor] = {}
    specs: dict[str, dict[str, object]] = {}
    for name, (x, block) in _plain_cases().items():
        tensors[f"{name}.x"] = x.contiguous()
        specs[name] = {"kind": "plain", "block": block}
    for name, (norm, x, norm_params, eps, block) in _fused_cases().items():
        tensors[f"{name}.x"] = x.contiguous()
        for key, param in zip("wb", norm_params, strict=False):
            tensors[f"{name}.{key}"] = param.contiguous()
        specs[name] = {"kind": norm, "eps": eps, "block": block}
    folder = tmp_path_factory.mktemp("interp")
    inputs, outputs = folder / "in.safetensors", folder / "out.safetensors"
    save_file(tensors, str(inputs), metadata={"specs": json.dumps(specs)})
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(inputs), str(outputs)],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stdout}\n{proc.stderr}"
    return load_file(str(outputs))


@pytest.mark.parametrize("name", sorted(_plain_cases()))
def test_per_token_kernel_is_bit_exact(name: str, interpreted: dict[str, torch.Tensor]) -> None:
    x, _ = _plain_cases()[name]
    ref_q, ref_amax = quantize_per_token(x)
    xq, amax = interpreted[f"{name}.xq"], interpreted[f"{name}.amax"]
    assert xq.dtype == torch.int8 and xq.shape == x.shape
    assert amax.dtype == x.dtype and amax.shape == (*x.shape[:-1], 1)
    assert torch.equal(xq, ref_q)
    # amax is max|x| of values already in x's dtype, so storing it in that dtype is exact.
    assert torch.equal(amax.float(), ref_amax)


def test_tie_case_exercises_half_to_even() -> None:
    # Guards the tie cases above: the reference must see exact .5 values and round them to even.
    x = _tie_row(F16)
    q, _ = quantize_per_token(x)
    assert q[0, 1:5].tolist() == [0, 2, 2, 4]  # 0.5, 1.5, 2.5, 3.5
    assert q[0, 128:130].tolist() == [0, -2]  # -0.5, -1.5


def _norm_reference(norm: str, x: torch.Tensor, params: tuple[torch.Tensor, ...], eps: float) -> torch.Tensor:
    xf = x.float()
    if norm == "rms":
        return xf * (1.0 / torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)) * params[0].float()
    d = xf - xf.mean(dim=-1, keepdim=True)
    rstd = 1.0 / torch.sqrt((d * d).mean(dim=-1, keepdim=True) + eps)
    return d * rstd * params[0].float() + params[1].float()


@pytest.mark.parametrize("name", sorted(_fused_cases()))
def test_fused_norm_kernel_matches_torch(name: str, interpreted: dict[str, torch.Tensor]) -> None:
    norm, x, params, eps, _ = _fused_cases()[name]
    y = _norm_reference(norm, x, params, eps)
    ref_q, ref_amax = quantize_per_token(y)
    xq, amax = interpreted[f"{name}.xq"], interpreted[f"{name}.amax"]
    k = x.shape[-1]
    # The kernel sums in another order than torch: a float32 sum of K terms is off by at most
    # (K - 1) * 2^-24 of the sum of their magnitudes; mean, variance, rstd, y, amax and
    # y * 127 / amax each add a few more roundings. So the value quantized may differ by
    # `rel` relative to the scale of the row (at most 127 after scaling).
    rel = (k + 8) * 2.0**-24
    assert torch.allclose(
        amax.float(), ref_amax.to(x.dtype).float(), rtol=torch.finfo(x.dtype).eps + rel, atol=0
    )
    # (one ulp of x's dtype: the interpreter converts float32 -> bfloat16 by truncation.)
    diff = (xq.int() - ref_q.int()).abs()
    assert int(diff.max()) <= 1
    # A 1-step flip is allowed only where the reference value sits within that error of a .5 tie.
    v = y * (127 / ref_amax.clamp(min=1e-30))
    dist_to_tie = ((v - v.floor()) - 0.5).abs()
    near_tie = dist_to_tie <= 127 * 2 * rel + 1e-6
    assert bool(((diff == 0) | near_tie).all())


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
