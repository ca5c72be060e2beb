"""The plugin kernels on a real GPU, and the AOT plugin inside a TensorRT engine.

Needs an NVIDIA GPU (and TensorRT >= 10.9 for the engine tests); skips otherwise.
Run in NVIDIA's TensorRT container: ``pytest -m gpu tests/gpu``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sq_trt import plugin_spec
from sq_trt.plugins import LAYERNORM_PER_TOKEN_QUANT
from sq_trt.quant.reference import quantize_per_token

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (none visible)"),
]
pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

F16, BF16 = torch.float16, torch.bfloat16


def _tie_row(dtype: torch.dtype) -> torch.Tensor:
    # amax 127 -> the reference scale is exactly 1.0, so ±(k + 0.5) are exact ties.
    halves = torch.arange(127, dtype=torch.float32) + 0.5
    return torch.cat([torch.tensor([127.0]), halves, -halves]).to(dtype)[None, :]


def _inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    outlier = torch.randn(64, 4096, generator=gen)
    outlier[:, 11] = 6.0e4 if dtype == F16 else 1.0e30
    zero_rows = torch.randn(8, 576, generator=gen)
    zero_rows[::3] = 0.0
    return {
        "llm-hidden": (torch.randn(2, 128, 576, generator=gen) * 4).to(dtype),
        "outlier": outlier.to(dtype),
        "zero-rows": zero_rows.to(dtype),
        "odd-k": torch.randn(33, 1001, generator=gen).to(dtype),
        "k1": torch.randn(5, 1, generator=gen).to(dtype),
        "streaming": torch.randn(4, 12000, generator=gen).to(dtype),
        "ties": _tie_row(dtype),
    }


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["fp16", "bf16"])
def test_cuda_kernel_is_bit_exact(dtype: torch.dtype) -> None:
    from sq_trt.plugins.launch import per_token_quant

    for name, x in _inputs(dtype).items():
        ref_q, ref_amax = quantize_per_token(x)
        xq, amax = per_token_quant(x.cuda())
        assert torch.equal(xq.cpu(), ref_q), name
        assert torch.equal(amax.float().cpu(), ref_amax), name


def _norm_reference(norm: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    if norm == "rms":
        return xf * (1.0 / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + eps)) * w.float()
    d = xf - xf.mean(-1, keepdim=True)
    return d * (1.0 / torch.sqrt((d * d).mean(-1, keepdim=True) + eps)) * w.float() + b.float()


def _assert_close_quant(xq: torch.Tensor, amax: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> None:
    # Same tolerance argument as the interpreter test: only the summation order differs.
    ref_q, ref_amax = quantize_per_token(y)
    rel = (y.shape[-1] + 8) * 2.0**-24
    diff = (xq.cpu().int() - ref_q.int()).abs()
    v = y * (127 / ref_amax.clamp(min=1e-30))
    near_tie = ((v - v.floor()) - 0.5).abs() <= 127 * 2 * rel + 1e-6
    assert int(diff.max()) <= 1 and bool(((diff == 0) | near_tie).all())
    assert torch.allclose(amax.float().cpu(), ref_amax.to(dtype).float(), rtol=rel + 2**-8, atol=0)


@pytest.mark.parametrize("norm", ["rms", "ln"])
@pytest.mark.parametrize("dtype", [F16, BF16], ids=["fp16", "bf16"])
def test_cuda_fused_norm_kernels_match_torch(dtype: torch.dtype, norm: str) -> None:
    from sq_trt.plugins.launch import layernorm_per_token_quant, rmsnorm_per_token_quant

    gen = torch.Generator().manual_seed(3)
    for k in (1, 576, 2048, 9000):
        x = (torch.randn(32, k, generator=gen) * 3 + 1).to(dtype)
        w = (torch.rand(k, generator=gen) + 0.5).to(dtype)
        b = (torch.randn(k, generator=gen) * 0.1).to(dtype)
        if norm == "rms":
            xq, amax = rmsnorm_per_token_quant(x.cuda(), w.cuda(), 1e-5)
        else:
            xq, amax = layernorm_per_token_quant(x.cuda(), w.cuda(), b.cuda(), 1e-5)
        _assert_close_quant(xq, amax, _norm_reference(norm, x, w, b, 1e-5), dtype)


# --- the plugin inside a TensorRT engine -------------------------------------------------


def _onnx_model(op: str, k: int, dtype: torch.dtype, eps: float | None = None) -> bytes:
    from onnx import TensorProto, helper

    from sq_trt.plugins import onnx_node_attributes

    elem = TensorProto.FLOAT16 if dtype == F16 else TensorProto.BFLOAT16
    inputs = [helper.make_tensor_value_info("x", elem, ["tokens", k])]
    names = ["x"]
    if op != plugin_spec.PER_TOKEN_QUANT:
        inputs.append(helper.make_tensor_value_info("w", elem, [k]))
        names.append("w")
    if op == LAYERNORM_PER_TOKEN_QUANT:
        inputs.append(helper.make_tensor_value_info("b", elem, [k]))
        names.append("b")
    node = helper.make_node(
        op, names, ["x_q", "amax"], name=f"{op}_0", domain=plugin_spec.ONNX_DOMAIN,
        **onnx_node_attributes(op, epsilon=eps),
    )  # fmt: skip
    outputs = [
        helper.make_tensor_value_info("x_q", TensorProto.INT8, ["tokens", k]),
        helper.make_tensor_value_info("amax", elem, ["tokens", 1]),
    ]
    graph = helper.make_graph([node], "plugin_test", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(plugin_spec.ONNX_DOMAIN, 1)]
    )
    return model.SerializeToString()


def _build_engine(trt, onnx_bytes: bytes, k: int, vectors: tuple[str, ...] = ()) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        pytest.fail("ONNX parser rejected the plugin node: " + "; ".join(errors))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, k), (64, k), (256, k))
    for name in vectors:
        profile.set_shape(name, (k,), (k,), (k,))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT failed to build the engine"
    return bytes(plan)


def _run_engine(trt, plan: bytes, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    for name, tensor in feeds.items():
        context.set_input_shape(name, tuple(tensor.shape))
        context.set_tensor_address(name, tensor.data_ptr())
    rows, k = feeds["x"].shape
    out = {
        "x_q": torch.empty((rows, k), dtype=torch.int8, device="cuda"),
        "amax": torch.empty((rows, 1), dtype=feeds["x"].dtype, device="cuda"),
    }
    for name, tensor in out.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out


@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT proper is not installed (use NVIDIA's container)")
    from sq_trt.plugins import qdp, register

    if qdp._version_tuple(trt.__version__) < qdp.MIN_TENSORRT_VERSION:
        pytest.skip(f"TensorRT {trt.__version__} has no AOT Python plugins (needs >= 10.9)")
    register(trt)
    return trt


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["fp16", "bf16"])
def test_engine_with_per_token_plugin_is_bit_exact(trt, dtype: torch.dtype, tmp_path: Path) -> None:
    k = 576
    plan = _build_engine(trt, _onnx_model(plugin_spec.PER_TOKEN_QUANT, k, dtype), k)
    x = (torch.randn(100, k) * 3).to(dtype)
    x[7] = 0.0
    x[3, 5] = 6.0e4 if dtype == F16 else 1.0e30
    got = _run_engine(trt, plan, {"x": x.cuda()})
    ref_q, ref_amax = quantize_per_token(x)
    assert torch.equal(got["x_q"].cpu(), ref_q)
    assert torch.equal(got["amax"].float().cpu(), ref_amax)
    (tmp_path / "plugin.plan").write_bytes(plan)


def test_engine_runs_without_python_plugin_definitions(trt, tmp_path: Path) -> None:
    # The point of AOT: a fresh process that never imports sq_trt deserializes and runs it.
    k = 64
    plan_path = tmp_path / "plugin.plan"
    plan_path.write_bytes(_build_engine(trt, _onnx_model(plugin_spec.PER_TOKEN_QUANT, k, F16), k))
    code = f"""
import tensorrt as trt, torch
engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(open({str(plan_path)!r}, "rb").read())
ctx = engine.create_execution_context()
x = torch.full((2, {k}), 0.5, dtype=torch.float16, device="cuda"); x[:, 0] = 127.0
q = torch.empty((2, {k}), dtype=torch.int8, device="cuda"); a = torch.empty((2, 1), dtype=torch.float16, device="cuda")
ctx.set_input_shape("x", (2, {k}))
for n, t in (("x", x), ("x_q", q), ("amax", a)): ctx.set_tensor_address(n, t.data_ptr())
assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream); torch.cuda.synchronize()
print(q[0, :3].tolist(), a[0].item())
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    # 127 -> 127, 0.5 with amax 127 -> a tie, rounded to even 0.
    assert proc.stdout.strip().splitlines()[-1] == "[127, 0, 0] 127.0"


@pytest.mark.parametrize("op", [plugin_spec.RMSNORM_PER_TOKEN_QUANT, LAYERNORM_PER_TOKEN_QUANT])
@pytest.mark.parametrize("dtype", [F16, BF16], ids=["fp16", "bf16"])
def test_engine_with_fused_norm_plugin(trt, dtype: torch.dtype, op: str) -> None:
    k, eps = 576, 1e-5
    vectors = ("w",) if op == plugin_spec.RMSNORM_PER_TOKEN_QUANT else ("w", "b")
    plan = _build_engine(trt, _onnx_model(op, k, dtype, eps), k, vectors)
    x = (torch.randn(50, k) * 2 + 1).to(dtype)
    w = (torch.rand(k) + 0.5).to(dtype)
    b = (torch.randn(k) * 0.1).to(dtype)
    feeds = {"x": x.cuda(), "w": w.cuda(), "b": b.cuda()}
    got = _run_engine(trt, plan, {n: feeds[n] for n in ("x", *vectors)})
    y = _norm_reference(
        "rms" if len(vectors) == 1 else "ln", x, w, b, float(torch.tensor(eps, dtype=torch.float32))
    )
    _assert_close_quant(got["x_q"], got["amax"], y, dtype)
