"""Plugin registration, ONNX node attributes, and the QDP definitions against TensorRT's real API.

TensorRT cannot run here. The last test imports NVIDIA's real ``tensorrt.plugin``
(bindings wheel on stub C libraries, ``tests/trt_api/harness.py``) in a
subprocess, so ``@trtp.register`` / ``@trtp.aot_impl`` validate the plugin
signatures for real and the AOT implementation produces PTX from tensor
descriptors; it skips when that harness cannot be prepared.
"""

from __future__ import annotations

import importlib.util
import json
import types

import onnx
import pytest

from sq_trt import plugin_spec
from sq_trt.errors import ConfigError, MissingDependencyError
from sq_trt.plugins import onnx_node_attributes, qdp, register


def _attr_types(node: onnx.NodeProto) -> dict[str, tuple[int, object]]:
    return {a.name: (a.type, onnx.helper.get_attribute_value(a)) for a in node.attribute}


def test_onnx_attributes_map_node_to_plugin() -> None:
    attrs = onnx_node_attributes(plugin_spec.PER_TOKEN_QUANT)
    node = onnx.helper.make_node(
        plugin_spec.PER_TOKEN_QUANT, ["x"], ["x_q", "amax"], domain=plugin_spec.ONNX_DOMAIN, **attrs
    )
    A = onnx.AttributeProto
    assert _attr_types(node) == {
        "plugin_namespace": (A.STRING, b"sq_trt"),
        "plugin_version": (A.STRING, b"1"),
        "aot": (A.INT, 1),
    }


def test_onnx_attributes_of_fused_op_carry_epsilon_as_float() -> None:
    attrs = onnx_node_attributes(plugin_spec.RMSNORM_PER_TOKEN_QUANT, epsilon=1e-5, aot=False)
    node = onnx.helper.make_node(plugin_spec.RMSNORM_PER_TOKEN_QUANT, ["x", "w"], ["x_q", "amax"], **attrs)
    types_ = _attr_types(node)
    assert "aot" not in types_
    assert types_["epsilon"][0] == onnx.AttributeProto.FLOAT
    assert types_["epsilon"][1] == pytest.approx(1e-5, rel=1e-6)  # stored as float32


@pytest.mark.parametrize(
    ("op", "eps", "match"),
    [("Nope", None, "no sq_trt plugin"), (plugin_spec.RMSNORM_PER_TOKEN_QUANT, None, "positive epsilon"),
     ("LayerNormPerTokenQuant", -1.0, "positive epsilon"),
     (plugin_spec.RMSNORM_PER_TOKEN_QUANT, 0.0, "positive epsilon"), (plugin_spec.PER_TOKEN_QUANT, 1e-5, "takes no")],
)  # fmt: skip
def test_onnx_attributes_refuse_bad_requests(op: str, eps: float | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        onnx_node_attributes(op, epsilon=eps)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_register_without_tensorrt_names_the_fix() -> None:
    with pytest.raises(MissingDependencyError, match=r"sq-trt\[trt\]"):
        register()


def test_register_refuses_tensorrt_rtx() -> None:
    rtx = types.ModuleType("tensorrt_rtx_bindings")
    with pytest.raises(ConfigError, match="no Python plugin API"):
        register(rtx)


def test_register_refuses_tensorrt_before_aot_plugins() -> None:
    old = types.ModuleType("tensorrt")
    old.__version__ = "10.8.0.43"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r">= 10\.9"):
        register(old)


@pytest.mark.parametrize(("name", "expected"), [("HALF", "fp16"), ("BF16", "bf16"), ("FLOAT", "fp32")])
def test_triton_dtype(name: str, expected: str) -> None:
    assert qdp.triton_dtype(types.SimpleNamespace(name=name)) == expected


def test_triton_dtype_refuses_int8() -> None:
    with pytest.raises(ConfigError, match="INT8"):
        qdp.triton_dtype(types.SimpleNamespace(name="INT8"))


def _driver_reports(monkeypatch: pytest.MonkeyPatch, *capabilities: str) -> None:
    """Make the CUDA driver query (the boundary with the machine) report these GPUs."""
    from sq_trt.engine import gpu

    gpus = [gpu.GpuInfo(i, f"gpu{i}", cc) for i, cc in enumerate(capabilities)]
    monkeypatch.setattr(gpu, "visible_gpus", lambda: gpus)


def test_target_arch_from_env_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    _driver_reports(monkeypatch)
    monkeypatch.setenv(qdp.ARCH_ENV, "sm_86")
    assert qdp.target_arch() == 86
    qdp.set_target_arch("9.0")
    try:
        assert qdp.target_arch() == 90
    finally:
        qdp.set_target_arch(None)
    monkeypatch.setenv(qdp.ARCH_ENV, "75")
    with pytest.raises(ConfigError, match="sm_75"):
        qdp.target_arch()


def test_target_arch_takes_the_gpu_the_driver_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # Inside NVIDIA's container torch is the CPU build, so only the driver query sees the GPU.
    _driver_reports(monkeypatch, "9.0", "8.0")
    monkeypatch.delenv(qdp.ARCH_ENV, raising=False)
    assert qdp.target_arch() == 90
    # The GPU TensorRT builds on wins over the variable, which is for builds without a GPU.
    monkeypatch.setenv(qdp.ARCH_ENV, "sm_86")
    assert qdp.target_arch() == 90
    qdp.set_target_arch("8.9")
    try:
        assert qdp.target_arch() == 89
    finally:
        qdp.set_target_arch(None)


def test_target_arch_refuses_a_gpu_the_kernels_do_not_support(monkeypatch: pytest.MonkeyPatch) -> None:
    _driver_reports(monkeypatch, "10.0")
    with pytest.raises(ConfigError, match="sm_100.*supported: sm_80"):
        qdp.target_arch()


def test_target_arch_without_gpu_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    _driver_reports(monkeypatch)
    monkeypatch.delenv(qdp.ARCH_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"{qdp.ARCH_ENV}.*--gpus all|--gpus all.*{qdp.ARCH_ENV}"):
        qdp.target_arch()


_REAL_API_CHECK = r"""
import json, os
os.environ["SQ_TRT_CUDA_ARCH"] = "89"
import tensorrt as trt
import tensorrt.plugin as trtp
from sq_trt import plugins
from sq_trt.errors import ConfigError

fns = plugins.register(trt, lazy=True)  # tensorrt.plugin validates every signature here
again = plugins.register(trt, lazy=True)
try:
    plugins.register(trt, lazy=False)
    mode_switch = "accepted"
except ConfigError:
    mode_switch = "refused"
out = {"functions": sorted(fns), "idempotent": again == fns, "mode_switch": mode_switch}
def vector(dtype):
    return trtp.TensorDesc(trtp.ShapeExprs(1, _is_dummy=True), dtype)

for case, dtype in (("plain", trt.float16), ("rms", trt.bfloat16), ("ln", trt.float16)):
    x = trtp.TensorDesc(trtp.ShapeExprs(3, _is_dummy=True), dtype)
    if case == "rms":  # a float32 weight with bfloat16 activations
        w = vector(trt.float32)
        outs = fns["rmsnorm_per_token_quant_desc"](x, w, 1e-5)
        name, ptx, params, extra = fns["rmsnorm_per_token_quant_aot"](x, w, 1e-5, outs, 0)
    elif case == "ln":
        w, b = vector(dtype), vector(dtype)
        outs = fns["layernorm_per_token_quant_desc"](x, w, b, 1e-5)
        name, ptx, params, extra = fns["layernorm_per_token_quant_aot"](x, w, b, 1e-5, outs, 0)
    else:
        outs = fns["per_token_quant_desc"](x)
        name, ptx, params, extra = fns["per_token_quant_aot"](x, outs, 0)
    out[case] = {
        "out_dtypes": [str(o.dtype) for o in outs],
        "out_ranks": [len(o.shape_expr) for o in outs],
        "name": name,
        "entry": f".entry {name}(" in ptx,
        "ptx_params": ptx.split(f".entry {name}(")[1].split(")")[0].count(".param"),
        "target": [l.strip() for l in ptx.splitlines() if l.startswith(".target")],
        "launch": type(params).__name__,
        "extra": [type(e).__name__ for e in extra],
    }
print("RESULT" + json.dumps(out))
"""


def test_qdp_definitions_against_real_tensorrt_plugin(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    harness = pytest.importorskip("tests.trt_api.harness", reason="TensorRT API harness not available")
    try:
        env = harness.prepare_tensorrt(harness.TRT_VERSIONS[0])
    except (harness.HarnessUnavailable, AttributeError, OSError) as exc:
        pytest.skip(f"real tensorrt.plugin cannot be prepared here: {exc}")
    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path))  # the subprocess's PTX cache (after the harness's)
    proc = env.run_python(_REAL_API_CHECK, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, f"{env.label}:\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(lines[0].removeprefix("RESULT"))
    assert out["idempotent"] and out["mode_switch"] == "refused"
    assert out["functions"] == [
        "layernorm_per_token_quant_aot", "layernorm_per_token_quant_desc", "per_token_quant_aot",
        "per_token_quant_desc", "quant_w8a8_gemm_aot", "quant_w8a8_gemm_autotune", "quant_w8a8_gemm_desc",
        "rmsnorm_per_token_quant_aot", "rmsnorm_per_token_quant_desc",
        "w8a8_gemm_aot", "w8a8_gemm_autotune", "w8a8_gemm_desc",
    ]  # fmt: skip
    for case, input_type, kernel, params in (
        ("plain", "DataType.HALF", "per_token_quant_kernel", 5),
        ("rms", "DataType.BF16", "rmsnorm_per_token_quant_kernel", 6),
        ("ln", "DataType.HALF", "layernorm_per_token_quant_kernel", 7),
    ):
        got = out[case]
        assert got["out_dtypes"] == ["DataType.INT8", input_type]  # x_q int8, amax in x's dtype
        assert got["out_ranks"] == [3, 3]  # [..., K] and [..., 1]
        assert got["name"] == kernel and got["entry"] and got["target"] == [".target sm_89"]
        assert got["ptx_params"] == params  # inputs, (rows, K), outputs: what TensorRT passes
        assert got["launch"] == "KernelLaunchParams" and got["extra"] == ["SymInt32", "SymInt32"]


def test_builder_pins_the_plugin_arch_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    # register_plugins (called before the parser) resolves the architecture from the driver query and
    # pins it, so the compile inside TensorRT's build cannot fail with a buried error.
    from sq_trt.engine.plugin_loader import pin_plugin_arch
    from sq_trt.errors import BuildError

    monkeypatch.delenv(qdp.ARCH_ENV, raising=False)
    _driver_reports(monkeypatch, "8.9")
    try:
        assert pin_plugin_arch() == 89
        _driver_reports(monkeypatch)  # the pin holds even if the driver query changes later
        assert qdp.target_arch() == 89
    finally:
        qdp.set_target_arch(None)
    with pytest.raises(BuildError, match=qdp.ARCH_ENV):
        pin_plugin_arch()


def test_onnx_attributes_of_the_gemm_plugins_carry_their_flags() -> None:
    attrs = onnx_node_attributes(plugin_spec.QUANT_W8A8_GEMM, has_smooth=0, has_bias=1)
    assert attrs == {"plugin_namespace": "sq_trt", "plugin_version": "1", "aot": 1, "has_smooth": 0, "has_bias": 1}
    assert onnx_node_attributes(plugin_spec.W8A8_GEMM, has_bias=0)["has_bias"] == 0
    with pytest.raises(ConfigError, match="needs has_bias 0 or 1"):
        onnx_node_attributes(plugin_spec.W8A8_GEMM)
    with pytest.raises(ConfigError, match="takes no has_smooth"):
        onnx_node_attributes(plugin_spec.W8A8_GEMM, has_bias=1, has_smooth=1)
    with pytest.raises(ConfigError, match="takes no epsilon"):
        onnx_node_attributes(plugin_spec.QUANT_W8A8_GEMM, has_smooth=0, has_bias=0, epsilon=1e-5)
