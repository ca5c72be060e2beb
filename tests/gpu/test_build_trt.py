"""The build stage with TensorRT proper on a GPU: runs in the container (docker/) or on a GPU host.

Skips here with the reason (``tensorrt`` not importable, or no GPU visible). Nothing is
mocked: these tests build real engines and read them back with TensorRT's runtime.
Run them with ``pytest tests/gpu`` inside ``sq-trt-builder`` (docker/README.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sq_trt.engine.gpu import visible_gpus

pytestmark = pytest.mark.gpu

trt = pytest.importorskip(
    "tensorrt", reason="TensorRT proper is not importable (the `trt` extra / NVIDIA's container)"
)
if not visible_gpus():
    pytest.skip("no GPU visible to the CUDA driver: TensorRT proper builds on a GPU", allow_module_level=True)

from unit.engine.test_build_graphs import GRAPHS, K, N

from sq_trt.artifacts import load_manifest
from sq_trt.engine.backends import load_tensorrt
from sq_trt.engine.builder import build_engine
from sq_trt.engine.recipe import resolve_settings

PROFILE = {"name": "p0", "batch": [1, 4, 8], "seq": [1, 64, 256]}


@pytest.fixture(scope="module")
def backend():
    return load_tensorrt()


def _settings(tmp_path, onnx_path, target, **extra):
    values = {
        "onnx": onnx_path,
        "name": "m",
        "target": target,
        "engines_dir": tmp_path / "e",
        "profiles": [PROFILE],
    }
    return resolve_settings({}, {**values, **extra}, source="gpu-test")


@pytest.mark.parametrize("kind", ["fp16", "per_tensor", "per_token"])
def test_tensorrt_builds_and_the_manifest_reads_io_from_the_engine(tmp_path, backend, kind):
    onnx_path = GRAPHS[kind](tmp_path / f"{kind}.onnx")
    record = build_engine(_settings(tmp_path, onnx_path, "gpu"), backend, log=lambda _: None)
    assert record.backend == "tensorrt" and record.io_source == "engine"
    assert record.gpu_target["compute_capability"] == visible_gpus()[0].compute_capability
    assert {(t.name, t.dtype, tuple(t.shape)) for t in record.io} == {
        ("x", "float16", (-1, -1, K)),
        ("y", "float16", (-1, -1, N)),
    }
    assert record.layer_info["available"] and record.layer_info["layers"] >= 1
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(
        (tmp_path / "e" / "m" / "gpu.plan").read_bytes()
    )
    assert [tuple(d) for d in engine.get_tensor_profile_shape("x", 0)] == [(1, 1, K), (4, 64, K), (8, 256, K)]
    if kind != "fp16":
        print(f"{kind}: INT8 GEMM layers: {record.layer_info['int8_gemms']}")


def _deep_mlp(path: Path, layers: int = 12, width: int = 1024) -> Path:
    """A stack of fp16 MatMul+Relu: enough distinct GEMMs for tactic timing to dominate the build."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", "seq", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", "seq", width])
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        inits.append(
            numpy_helper.from_array((rng.standard_normal((width, width)) * 0.02).astype(np.float16), f"w{i}")
        )
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]),
            helper.make_node("Relu", [f"h{i}"], ["y" if i == layers - 1 else f"a{i}"]),
        ]
        current = f"a{i}"
    model = helper.make_model(
        helper.make_graph(nodes, "mlp", [x], [y], inits), opset_imports=[helper.make_opsetid("", 20)]
    )
    onnx.save(model, str(path))
    return path


def test_timing_cache_is_saved_and_makes_a_rebuild_faster(tmp_path, backend):
    onnx_path = _deep_mlp(tmp_path / "mlp.onnx")
    cache = tmp_path / "timing.cache"
    start = time.perf_counter()
    cold = build_engine(
        _settings(tmp_path, onnx_path, "cold", timing_cache=cache), backend, log=lambda _: None
    )
    cold_s = time.perf_counter() - start
    assert cache.stat().st_size == cold.builder["timing_cache"]["saved_bytes"] > 0
    start = time.perf_counter()
    warm = build_engine(
        _settings(tmp_path, onnx_path, "warm", timing_cache=cache), backend, log=lambda _: None
    )
    warm_s = time.perf_counter() - start
    assert warm.builder["timing_cache"]["loaded_bytes"] == cold.builder["timing_cache"]["saved_bytes"]
    print(f"build without cache {cold_s:.2f}s, with cache {warm_s:.2f}s")
    assert warm_s < cold_s


def test_plugin_graph_builds_with_the_registered_plugin(tmp_path, backend):
    plugins = pytest.importorskip("sq_trt.plugins", reason="the sq-trt plugin package is not installed")
    pytest.importorskip("triton", reason="the plugin's AOT kernel needs Triton (the `kernels` extra)")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", "seq", K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", "seq", N])
    w_q = numpy_helper.from_array(np.ones((K, N), dtype=np.int8), "w_q")
    w_s = numpy_helper.from_array(np.full((N,), 0.01, dtype=np.float16), "w_s")
    unit = numpy_helper.from_array(np.array(1 / 127, dtype=np.float16), "unit")
    attrs = plugins.onnx_node_attributes("PerTokenQuant")
    nodes = [
        helper.make_node("PerTokenQuant", ["x"], ["x_q", "amax"], name="ptq_0", domain="sq_trt", **attrs),
        helper.make_node("DequantizeLinear", ["x_q", "unit"], ["x_unit"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"], axis=1),
        helper.make_node("MatMul", ["x_unit", "w"], ["y_unit"]),
        helper.make_node("Mul", ["y_unit", "amax"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "ptq", [x], [y], [w_q, w_s, unit]),
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("sq_trt", 1)],
    )
    onnx.save(model, str(tmp_path / "ptq.onnx"))
    record = build_engine(_settings(tmp_path, tmp_path / "ptq.onnx", "gpu"), backend, log=lambda _: None)
    assert record.plugins == [{"name": "PerTokenQuant", "version": "1", "namespace": "sq_trt", "nodes": 1}]
    load_manifest(tmp_path / "e" / "m", stage="build", verify_files=True)
    # DESIGN.md: whether TensorRT fuses the plugin's INT8 output into an INT8 GEMM is only visible here.
    print(f"INT8 GEMM layers after the plugin: {record.layer_info['int8_gemms']}")
