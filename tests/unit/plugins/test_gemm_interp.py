"""The fused W8A8 GEMM kernels, run by Triton's CPU interpreter, against exact integer arithmetic and
:mod:`sq_trt.quant.reference`.

As in ``test_kernels_interp.py``, ``TRITON_INTERPRET=1`` must be set before Triton is imported,
so every kernel runs in one subprocess (this file executed as a script) and every comparison happens
here. The kernels' ``STORE_ACC`` constant (tests only) stores the int32 accumulator of the very main
loop the plugin runs, so it is compared with numpy int64 directly.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sq_trt.quant.reference import QMAX, quant_w8a8_gemm, quantize_per_token, w8a8_gemm

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
N_TACTICS = 5


def _int8(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)


@functools.cache
def _gemm_cases() -> dict[str, dict[str, Any]]:
    """Case name -> W8A8Gemm inputs (x_q, amax, w_q, w_scale, bias or None) and launch options."""
    gen = torch.Generator().manual_seed(13)
    cases: dict[str, dict[str, Any]] = {}

    def add(name: str, m: int, n: int, k: int, dtype: torch.dtype, *, bias: bool, tactic: int = 0) -> None:
        cases[name] = {
            "x_q": _int8(gen, m, k),
            "amax": (torch.rand(m, 1, generator=gen) * 8 + 0.01).to(dtype),
            "w_q": _int8(gen, n, k),
            "w_scale": torch.rand(n, generator=gen) * 0.02 + 1e-4,
            "bias": torch.randn(n, generator=gen) if bias else None,
            "tactic": tactic,
        }

    for tactic in range(1, N_TACTICS + 1):  # every tile configuration TensorRT may pick
        add(f"random-odd-t{tactic}", 37, 45, 203, F16, bias=True, tactic=tactic)
    add("single-token", 1, 64, 576, F16, bias=True)
    add("k-above-4096", 3, 17, 4099, F16, bias=False, tactic=1)
    add("k1", 5, 9, 1, F16, bias=True)
    add("bf16", 9, 33, 130, BF16, bias=True)
    add("fp32", 9, 33, 130, F32, bias=False)
    # Saturated codes: every product is 127 * 127 (or its negative): the int32 accumulator's worst case.
    sat = {
        "x_q": torch.full((4, 4100), 127, dtype=torch.int8),
        "w_q": torch.full((16, 4100), -127, dtype=torch.int8),
    }
    sat["w_q"][1::2] = 127
    cases["outlier-saturated-k4100"] = {
        **sat, "amax": torch.full((4, 1), 6.0e4, dtype=F16), "w_scale": torch.full((16,), 1e-9),
        "bias": None, "tactic": 2,
    }  # fmt: skip
    # An outlier token (amax 900, ~200x the others) and an all-zero row.
    outlier = dict(cases["random-odd-t2"])
    outlier["amax"] = outlier["amax"].clone()
    outlier["amax"][3] = 900.0
    outlier["amax"][5] = 0.0
    outlier["x_q"] = outlier["x_q"].clone()
    outlier["x_q"][5] = 0
    cases["outlier-token"] = outlier
    cases["rank3-batch"] = {
        **cases["bf16"],
        "x_q": _int8(gen, 2, 3, 130),
        "amax": torch.rand(2, 3, 1).to(BF16),
    }
    return cases


@functools.cache
def _quant_cases() -> dict[str, dict[str, Any]]:
    """Case name -> QuantW8A8Gemm inputs (x, w_q, w_scale, bias, smooth) and launch options."""
    gen = torch.Generator().manual_seed(31)
    cases: dict[str, dict[str, Any]] = {}
    for dtype in (F16, BF16, F32):
        tag = str(dtype).removeprefix("torch.")
        x = torch.randn(19, 150, generator=gen) * (torch.rand(19, 1, generator=gen) * 6)
        x[:, 7] *= 40.0  # an outlier channel, the case SmoothQuant is for
        x[4] = 0.0  # an all-zero token
        cases[f"smooth-{tag}"] = {
            "x": x.to(dtype), "w_q": _int8(gen, 41, 150), "w_scale": torch.rand(41, generator=gen) * 1e-4,
            "bias": torch.randn(41, generator=gen), "smooth": torch.rand(150, generator=gen) + 0.25, "tactic": 0,
        }  # fmt: skip
        cases[f"plain-{tag}"] = {**cases[f"smooth-{tag}"], "smooth": None, "bias": None, "tactic": 5}
    # Identity weight: the accumulator IS the int8 codes, so codes are compared one by one.
    for name, k, tactic in (("identity-k96", 96, 2), ("identity-k300-single", 300, 1)):
        rows = 1 if "single" in name else 11
        x = (torch.randn(rows, k, generator=gen) * 3).to(F16)
        cases[name] = {
            "x": x, "w_q": torch.eye(k, dtype=torch.int8), "w_scale": torch.ones(k), "bias": None,
            "smooth": torch.rand(k, generator=gen) + 0.5, "tactic": tactic,
        }  # fmt: skip
    # Exact .5 ties after scaling: amax 127 makes 127/amax exactly 1 (half-to-even must hold).
    ties = torch.cat([torch.tensor([127.0]), torch.arange(95) + 0.5])[None, :].repeat(2, 1)
    cases["identity-ties"] = {
        "x": ties.to(F16), "w_q": torch.eye(96, dtype=torch.int8), "w_scale": torch.ones(96), "bias": None,
        "smooth": None, "tactic": 2,
    }  # fmt: skip
    # x * (1/amax) * 127 and x * (127/amax) differ here (-63.499996 vs -63.500004 in float32).
    cases["identity-scale-formula"] = {
        "x": torch.tensor([[3.734375, -1.8671875]], dtype=BF16), "w_q": torch.eye(2, dtype=torch.int8),
        "w_scale": torch.ones(2), "bias": None, "smooth": None, "tactic": 1,
    }  # fmt: skip
    x = torch.randn(2, 4099, generator=gen).to(F16)
    cases["k-above-4096"] = {
        "x": x, "w_q": _int8(gen, 9, 4099), "w_scale": torch.rand(9, generator=gen) * 0.01, "bias": None,
        "smooth": torch.rand(4099, generator=gen) + 0.5, "tactic": 1,
    }  # fmt: skip
    return cases


_TENSOR_KEYS = ("x_q", "amax", "x", "w_q", "w_scale", "bias", "smooth")


def _worker(inputs_path: str, outputs_path: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sq_trt.plugins import launch

    outputs: dict[str, torch.Tensor] = {}
    with safe_open(inputs_path, framework="pt") as handle:
        specs = json.loads(handle.metadata()["specs"])
        for name, spec in specs.items():
            t = {key: handle.get_tensor(f"{name}.{key}") for key in spec["tensors"]}
            if spec["kind"] == "gemm":
                args = (t["x_q"], t["amax"], t["w_q"], t["w_scale"], t.get("bias"))
                outputs[f"{name}.y"] = launch.w8a8_gemm(*args, tactic=spec["tactic"])
                outputs[f"{name}.acc"] = launch.w8a8_gemm(*args, tactic=spec["tactic"], accumulator=True)
            else:
                args = (t["x"], t["w_q"], t["w_scale"], t.get("bias"))
                smooth = t.get("smooth")
                outputs[f"{name}.y"] = launch.quant_w8a8_gemm(*args, smooth=smooth, tactic=spec["tactic"])
                outputs[f"{name}.acc"] = launch.quant_w8a8_gemm(
                    *args, smooth=smooth, tactic=spec["tactic"], accumulator=True
                )
    save_file({k: v.contiguous() for k, v in outputs.items()}, outputs_path)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Outputs and accumulators of every case, computed by the kernels under ``TRITON_INTERPRET=1``."""
    from safetensors.torch import load_file, save_file

    tensors: dict[str, torch.Tensor] = {}
    specs: dict[str, dict[str, object]] = {}
    for kind, cases in (("gemm", _gemm_cases()), ("quant", _quant_cases())):
        for case_name, case in cases.items():
            name = f"{kind}/{case_name}"
            present = [key for key in _TENSOR_KEYS if case.get(key) is not None]
            tensors.update({f"{name}.{key}": case[key].clone() for key in present})
            specs[name] = {"kind": kind, "tensors": present, "tactic": case["tactic"]}
    folder = tmp_path_factory.mktemp("gemm-interp")
    inputs, outputs = folder / "in.safetensors", folder / "out.safetensors"
    save_file(tensors, str(inputs), metadata={"specs": json.dumps(specs)})
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(inputs), str(outputs)],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stdout}\n{proc.stderr}"
    return load_file(str(outputs))


def _exact_acc(x_q: torch.Tensor, w_q: torch.Tensor) -> np.ndarray:
    return x_q.numpy().astype(np.int64) @ w_q.numpy().astype(np.int64).T


def _ulps(y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|y - ref| in units of ref's last place in ref's dtype."""
    mag = ref.abs()
    ulp = (torch.nextafter(mag, torch.full_like(mag, float("inf"))) - mag).float()
    return (y.float() - ref.float()).abs() / ulp


@pytest.mark.parametrize("name", sorted(_gemm_cases()))
def test_w8a8_gemm_accumulator_is_exact(name: str, interpreted: dict[str, torch.Tensor]) -> None:
    case = _gemm_cases()[name]
    acc = interpreted[f"gemm/{name}.acc"]
    assert acc.dtype == torch.int32 and acc.shape == (*case["x_q"].shape[:-1], case["w_q"].shape[0])
    assert np.array_equal(acc.numpy().astype(np.int64), _exact_acc(case["x_q"], case["w_q"]))


@pytest.mark.parametrize("name", sorted(_gemm_cases()))
def test_w8a8_gemm_output_matches_reference(name: str, interpreted: dict[str, torch.Tensor]) -> None:
    case = _gemm_cases()[name]
    ref = w8a8_gemm(case["x_q"], case["amax"], case["w_q"], case["w_scale"], case["bias"])
    y = interpreted[f"gemm/{name}.y"]
    assert y.dtype == case["amax"].dtype and y.shape == ref.shape
    assert bool(torch.isfinite(ref).all()) and bool(torch.isfinite(y).all())
    if y.dtype == F32:
        assert torch.equal(y, ref)
    else:
        # fp16 rounds float32 -> fp16 exactly as torch does; the interpreter truncates to bf16.
        assert float(_ulps(y, ref).max()) <= 1.0


def test_saturated_case_really_reaches_the_int32_worst_case() -> None:
    case = _gemm_cases()["outlier-saturated-k4100"]
    acc = _exact_acc(case["x_q"], case["w_q"])
    assert np.abs(acc).max() == 127 * 127 * 4100 and acc.min() < 0 < acc.max()


@pytest.mark.parametrize("name", sorted(_quant_cases()))
def test_quant_gemm_matches_reference_codes(name: str, interpreted: dict[str, torch.Tensor]) -> None:
    case = _quant_cases()[name]
    x = case["x"]
    xs = x.float() if case["smooth"] is None else x.float() * case["smooth"]
    ref_q, _ = quantize_per_token(xs)
    acc = interpreted[f"quant/{name}.acc"]
    assert np.array_equal(acc.numpy().astype(np.int64), _exact_acc(ref_q, case["w_q"]))
    if name.startswith("identity"):  # the accumulator is the codes themselves
        assert torch.equal(acc, ref_q.int())
    ref = quant_w8a8_gemm(x, case["w_q"], case["w_scale"], case["bias"], smooth=case["smooth"])
    y = interpreted[f"quant/{name}.y"]
    assert y.dtype == x.dtype and y.shape == ref.shape and bool(torch.isfinite(ref).all())
    if y.dtype == BF16:
        assert float(_ulps(y, ref).max()) <= 1.0
    else:
        assert torch.equal(y, ref)


def test_tie_case_reaches_exact_halves() -> None:
    x = _quant_cases()["identity-ties"]["x"]
    codes, amax = quantize_per_token(x)
    assert float(amax[0, 0]) == QMAX and codes[0, 1:5].tolist() == [0, 2, 2, 4]


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
