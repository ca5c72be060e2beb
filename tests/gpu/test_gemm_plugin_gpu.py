"""The fused W8A8 GEMM kernels on a real GPU, and the GEMM plugins inside a TensorRT engine.

Needs an NVIDIA GPU (and TensorRT >= 10.9 for the engine tests); skips otherwise. Run in NVIDIA's
TensorRT container: ``pytest -m gpu tests/gpu``. The CPU proofs of the same kernels are
``tests/unit/plugins/test_gemm_interp.py`` (interpreter) and ``tests/unit/plugins/test_gemm_ptx.py`` (PTX).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sq_trt import plugin_spec
from sq_trt.quant.reference import quant_w8a8_gemm, quantize_per_token, quantize_weight_per_channel, w8a8_gemm

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (none visible)"),
]
pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

F16, BF16 = torch.float16, torch.bfloat16
N_TACTICS = 6


def _layer(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w_q, w_scale = quantize_weight_per_channel(torch.randn(n, k, generator=gen) * 0.05)
    return w_q, w_scale, torch.randn(n, generator=gen) * 0.1


def _activation(m: int, k: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen) * 2
    x[:, 5] *= 30.0  # an outlier channel
    x[min(3, m - 1)] = 0.0  # an all-zero token
    return x.to(dtype)


@pytest.mark.parametrize("tactic", range(1, N_TACTICS + 1))
@pytest.mark.parametrize(("m", "n", "k"), [(1, 576, 576), (2048, 1536, 576), (77, 4099, 4101)])
def test_cuda_w8a8_gemm_is_exact(tactic: int, m: int, n: int, k: int) -> None:
    from sq_trt.plugins.launch import w8a8_gemm as cuda_gemm

    x_q, amax = quantize_per_token(_activation(m, k, F16, m + n))
    w_q, w_scale, bias = _layer(n, k, k)
    args = (x_q.cuda(), amax.to(F16).cuda(), w_q.cuda(), w_scale.cuda(), bias.cuda())
    acc = cuda_gemm(*args, tactic=tactic, accumulator=True).cpu().numpy().astype(np.int64)
    assert np.array_equal(acc, x_q.numpy().astype(np.int64) @ w_q.numpy().astype(np.int64).T)
    y = cuda_gemm(*args, tactic=tactic).cpu()
    assert torch.equal(y, w8a8_gemm(x_q, amax.to(F16), w_q, w_scale, bias))


def _aot_kernel(kernel_name: str, tactic: int, dtype: str, alignment: str = "aligned"):
    """The PTX the plugin's aot_impl embeds (gemm.compile_variant), loaded through the CUDA driver API."""
    pytest.importorskip("cuda.bindings", reason="running AOT PTX needs NVIDIA's cuda-bindings")
    from sq_trt.plugins import gemm
    from sq_trt.plugins.ptx_run import PtxKernel

    major, minor = torch.cuda.get_device_capability()
    name, ptx, meta = gemm.compile_variant(
        kernel_name, tactic, f"{major}{minor}", dtype=dtype, alignment=alignment
    )
    kernel = PtxKernel.load(ptx, name, num_warps=meta.num_warps, shared_mem=meta.shared_mem)
    return kernel, gemm.tile_config(tactic)


@pytest.mark.parametrize("tactic", range(1, N_TACTICS + 1))
@pytest.mark.parametrize(
    ("m", "n", "k", "alignment"),
    [
        (1, 576, 576, "aligned"),
        (8, 1536, 576, "aligned"),
        (2048, 1536, 576, "aligned"),
        (77, 4099, 4101, "unaligned"),
    ],
)
def test_aot_ptx_w8a8_gemm_is_bit_exact(tactic: int, m: int, n: int, k: int, alignment: str) -> None:
    # The exact PTX a TensorRT engine embeds (not Triton's JIT variant, which specializes on alignment
    # by itself), launched as TensorRT launches it: decode and prefill M, aligned and fallback shapes.
    from sq_trt.plugins.ptx_run import run_gemm

    kernel, tile = _aot_kernel("w8a8_gemm_kernel", tactic, "fp16", alignment)
    x_q, amax = quantize_per_token(_activation(m, k, F16, m + n))
    w_q, w_scale, bias = _layer(n, k, k)
    inputs = [x_q.cuda(), amax.to(F16).cuda(), w_q.cuda(), w_scale.cuda(), bias.cuda()]
    y = torch.empty(m, n, dtype=F16, device="cuda")
    run_gemm(kernel, tile, inputs, y, m, n, k)
    torch.cuda.synchronize()
    assert torch.equal(y.cpu(), w8a8_gemm(x_q, amax.to(F16), w_q, w_scale, bias))


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("tactic", range(1, N_TACTICS + 1))
def test_aot_ptx_quant_w8a8_gemm_is_bit_exact(dtype: torch.dtype, tactic: int) -> None:
    from sq_trt.plugins.ptx_run import run_gemm

    m, n, k = 300, 1536, 576
    kernel, tile = _aot_kernel("quant_w8a8_gemm_kernel", tactic, "fp16" if dtype == F16 else "bf16")
    x = _activation(m, k, dtype, tactic)
    w_q, w_scale, bias = _layer(n, k, 7)
    smooth = torch.rand(k, generator=torch.Generator().manual_seed(3)) + 0.5
    inputs = [x.cuda(), smooth.cuda(), w_q.cuda(), w_scale.cuda(), bias.cuda()]
    y = torch.empty(m, n, dtype=dtype, device="cuda")
    run_gemm(kernel, tile, inputs, y, m, n, k)
    torch.cuda.synchronize()
    assert torch.equal(y.cpu(), quant_w8a8_gemm(x, w_q, w_scale, bias, smooth=smooth))


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("tactic", range(1, N_TACTICS + 1))
def test_cuda_quant_gemm_codes_and_output_are_exact(dtype: torch.dtype, tactic: int) -> None:
    from sq_trt.plugins.launch import quant_w8a8_gemm as cuda_quant_gemm

    m, k = 300, 576
    x = _activation(m, k, dtype, tactic)
    smooth = torch.rand(k, generator=torch.Generator().manual_seed(1)) + 0.5
    # Identity weight: the int32 accumulator is the int8 codes themselves.
    eye = torch.eye(k, dtype=torch.int8)
    codes = cuda_quant_gemm(
        x.cuda(), eye.cuda(), torch.ones(k).cuda(), smooth=smooth.cuda(), tactic=tactic, accumulator=True
    )
    ref_q, _ = quantize_per_token(x.float() * smooth)
    assert torch.equal(codes.cpu(), ref_q.int())
    w_q, w_scale, bias = _layer(1536, k, 2)
    y = cuda_quant_gemm(
        x.cuda(), w_q.cuda(), w_scale.cuda(), bias.cuda(), smooth=smooth.cuda(), tactic=tactic
    )
    assert torch.equal(y.cpu(), quant_w8a8_gemm(x, w_q, w_scale, bias, smooth=smooth))


# --- the GEMM plugins inside a TensorRT engine ---------------------------------------------


def _gemm_attrs(**flags: int) -> dict[str, object]:
    from sq_trt.plugins import onnx_node_attributes

    # The exporter's attributes for the GEMM node (namespace, version, aot and its flags).
    op = plugin_spec.QUANT_W8A8_GEMM if "has_smooth" in flags else plugin_spec.W8A8_GEMM
    return onnx_node_attributes(op, **flags)


def _gemm_onnx(
    k: int, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor, *, fused_quant: bool
) -> bytes:
    """``x -> PerTokenQuant -> W8A8Gemm -> y`` (codes also output), or ``x -> QuantW8A8Gemm -> y``."""
    from onnx import TensorProto, helper, numpy_helper

    from sq_trt.plugins import onnx_node_attributes

    n = w_q.shape[0]
    inits = [
        numpy_helper.from_array(w_q.numpy(), "weight"),
        numpy_helper.from_array(w_scale.numpy().astype(np.float32), "w_scale"),
        numpy_helper.from_array(bias.numpy().astype(np.float32), "bias"),
        numpy_helper.from_array(np.ones(k, dtype=np.float32), "smooth"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["tokens", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["tokens", n])
    dom = plugin_spec.ONNX_DOMAIN
    if fused_quant:
        nodes = [
            helper.make_node(
                plugin_spec.QUANT_W8A8_GEMM, ["x", "smooth", "weight", "w_scale", "bias"], ["y"], domain=dom,
                **_gemm_attrs(has_smooth=0, has_bias=1),
            )
        ]  # fmt: skip
        outputs = [y]
    else:
        nodes = [
            helper.make_node(
                plugin_spec.PER_TOKEN_QUANT, ["x"], ["x_q", "amax"], domain=dom,
                **onnx_node_attributes(plugin_spec.PER_TOKEN_QUANT),
            ),
            helper.make_node(
                plugin_spec.W8A8_GEMM, ["x_q", "amax", "weight", "w_scale", "bias"], ["y"], domain=dom,
                **_gemm_attrs(has_bias=1),
            ),
        ]  # fmt: skip
        outputs = [y, helper.make_tensor_value_info("x_q", TensorProto.INT8, ["tokens", k])]
    graph = helper.make_graph(nodes, "gemm_plugin_test", [x], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(dom, 1)])
    return model.SerializeToString()


def _build(trt, onnx_bytes: bytes, k: int) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        pytest.fail(
            "ONNX parser rejected the GEMM plugin node: "
            + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        )
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, k), (512, k), (4096, k))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT failed to build the GEMM plugin engine"
    return bytes(plan)


def _execute(
    trt, plan: bytes, x: torch.Tensor, out_shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]
) -> dict[str, torch.Tensor]:
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    context.set_input_shape("x", tuple(x.shape))
    context.set_tensor_address("x", x.data_ptr())
    out = {
        name: torch.empty(shape, dtype=dtype, device="cuda") for name, (shape, dtype) in out_shapes.items()
    }
    for name, tensor in out.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {name: t.cpu() for name, t in out.items()}


@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT proper is not installed (use NVIDIA's container)")
    from sq_trt.plugins import qdp, register

    if qdp._version_tuple(trt.__version__) < qdp.MIN_TENSORRT_VERSION:
        pytest.skip(f"TensorRT {trt.__version__} has no AOT Python plugins (needs >= 10.9)")
    register(trt)
    return trt


@pytest.mark.parametrize("tokens", [1, 37, 2048])
def test_engine_per_token_quant_into_w8a8_gemm_is_bit_exact(trt, tokens: int) -> None:
    k, n = 576, 1536
    w_q, w_scale, bias = _layer(n, k, 5)
    plan = _build(trt, _gemm_onnx(k, w_q, w_scale, bias, fused_quant=False), k)
    x = _activation(tokens, k, F16, tokens)
    got = _execute(trt, plan, x.cuda(), {"y": ((tokens, n), F16), "x_q": ((tokens, k), torch.int8)})
    ref_q, ref_amax = quantize_per_token(x)
    assert torch.equal(got["x_q"], ref_q)  # the int8 codes TensorRT's GEMM consumed
    assert torch.equal(got["y"], w8a8_gemm(ref_q, ref_amax.to(F16), w_q, w_scale, bias))


def test_engine_quant_w8a8_gemm_is_bit_exact(trt) -> None:
    k, n, tokens = 576, 1536, 300
    w_q, w_scale, bias = _layer(n, k, 6)
    plan = _build(trt, _gemm_onnx(k, w_q, w_scale, bias, fused_quant=True), k)
    x = _activation(tokens, k, F16, 9)
    got = _execute(trt, plan, x.cuda(), {"y": ((tokens, n), F16)})
    assert torch.equal(got["y"], quant_w8a8_gemm(x, w_q, w_scale, bias))


def test_engine_rmsnorm_quant_feeds_w8a8_gemm_directly(trt) -> None:
    # A norm -> linears group: the fused norm+quant plugin's int8 codes and amax go straight into the GEMM.
    from onnx import TensorProto, helper, numpy_helper

    from sq_trt.plugins import onnx_node_attributes

    k, n, tokens, eps = 576, 1536, 129, 1e-5
    w_q, w_scale, bias = _layer(n, k, 8)
    norm_w = (torch.rand(k, generator=torch.Generator().manual_seed(4)) + 0.5).to(F16)
    inits = [
        numpy_helper.from_array(norm_w.numpy(), "norm_w"),
        numpy_helper.from_array(w_q.numpy(), "weight"),
        numpy_helper.from_array(w_scale.numpy(), "w_scale"),
        numpy_helper.from_array(bias.numpy(), "bias"),
    ]
    dom = plugin_spec.ONNX_DOMAIN
    nodes = [
        helper.make_node(
            plugin_spec.RMSNORM_PER_TOKEN_QUANT, ["x", "norm_w"], ["x_q", "amax"], domain=dom,
            **onnx_node_attributes(plugin_spec.RMSNORM_PER_TOKEN_QUANT, epsilon=eps),
        ),
        helper.make_node(
            plugin_spec.W8A8_GEMM, ["x_q", "amax", "weight", "w_scale", "bias"], ["y"], domain=dom,
            **_gemm_attrs(has_bias=1),
        ),
    ]  # fmt: skip
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["tokens", n]),
        helper.make_tensor_value_info("x_q", TensorProto.INT8, ["tokens", k]),
        helper.make_tensor_value_info("amax", TensorProto.FLOAT16, ["tokens", 1]),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["tokens", k])
    graph = helper.make_graph(nodes, "norm_gemm", [x_info], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(dom, 1)])
    plan = _build(trt, model.SerializeToString(), k)
    x = _activation(tokens, k, F16, 10)
    shapes = {"y": ((tokens, n), F16), "x_q": ((tokens, k), torch.int8), "amax": ((tokens, 1), F16)}
    got = _execute(trt, plan, x.cuda(), shapes)
    # The GEMM's output is exactly the reference GEMM of the codes and amax the norm plugin produced.
    assert torch.equal(got["y"], w8a8_gemm(got["x_q"], got["amax"], w_q, w_scale, bias))
    assert int(got["x_q"].abs().max()) == 127


def _fresh_process_run(plan_path: Path, k: int, n: int) -> str:
    # Imports tensorrt and torch only: no sq_trt, no plugin registration, no Triton.
    code = f"""
import tensorrt as trt, torch
engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(open({str(plan_path)!r}, "rb").read())
assert engine is not None
ctx = engine.create_execution_context()
x = torch.ones((4, {k}), dtype=torch.float16, device="cuda")
y = torch.empty((4, {n}), dtype=torch.float16, device="cuda"); q = torch.empty((4, {k}), dtype=torch.int8, device="cuda")
ctx.set_input_shape("x", (4, {k}))
for name, t in (("x", x), ("y", y), ("x_q", q)): ctx.set_tensor_address(name, t.data_ptr())
assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream); torch.cuda.synchronize()
print(int(q.min()), int(q.max()), y[0, :2].float().tolist())
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_gemm_plan_runs_without_python(trt, tmp_path: Path) -> None:
    k, n = 64, 128
    w_q = torch.ones(n, k, dtype=torch.int8)
    w_scale, bias = torch.full((n,), 0.5), torch.zeros(n)
    plan_path = tmp_path / "gemm.plan"
    plan_path.write_bytes(_build(trt, _gemm_onnx(k, w_q, w_scale, bias, fused_quant=False), k))
    # x = 1 everywhere: codes 127, acc = 127 * 64, y = (8128 * (1 / 127)) * 0.5 = 32.
    assert _fresh_process_run(plan_path, k, n) == "127 127 [32.0, 32.0]"
    trtexec = shutil.which("trtexec") or next(
        (p for p in ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec") if Path(p).exists()), None
    )
    if trtexec is None:
        pytest.skip("trtexec is not on PATH (the fresh-process Python check above passed)")
    proc = subprocess.run(
        [trtexec, f"--loadEngine={plan_path}", f"--shapes=x:8x{k}", "--iterations=2", "--warmUp=0", "--duration=0"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "PASSED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
