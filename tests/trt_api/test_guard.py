"""The harness cannot fake a run: anything that reaches TensorRT's C libraries gets null and fails."""

from __future__ import annotations

import json
from pathlib import Path

from .conformance import BACKEND_CONDITIONS
from .harness import BindingsEnv


def test_building_through_the_stubs_fails(trt_env: BindingsEnv) -> None:
    proc = trt_env.run_python(
        "import json, tensorrt as trt\n"
        "logger = trt.Logger()\n"
        "out = {}\n"
        "for name, make in (('Builder', lambda: trt.Builder(logger)), ('Runtime', lambda: trt.Runtime(logger))):\n"
        "    try:\n"
        "        out[name] = 'returned ' + repr(make())\n"
        "    except Exception as exc:\n"
        "        out[name] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(out))"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("Builder", "Runtime"):
        assert "nullptr" in result[name], f"{name} through the stub libraries did not fail: {result[name]}"


def test_project_backend_sees_the_real_version(trt_env: BindingsEnv) -> None:
    # The builder's version gate runs against the real module of each version (pure Python, no C calls),
    # and the Backend properties the conformance check fixes per backend have the values it assumes.
    proc = trt_env.run_python(
        "import json\n"
        "from sq_trt.engine.backends import load_tensorrt\n"
        "from sq_trt.errors import BuildError\n"
        "b = load_tensorrt()\n"
        "try:\n"
        "    b.compute_capability_enum('8.9'); refused = False\n"
        "except BuildError:\n"
        "    refused = True\n"
        f"conditions = {{n: getattr(b, n) for n, _ in {BACKEND_CONDITIONS!r}}}\n"
        "print(json.dumps({'name': b.name, 'version': b.version, 'cc_refused': refused, 'conditions': conditions}))"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["name"] == "tensorrt" and result["version"] == trt_env.version and result["cc_refused"]
    assert result["conditions"] == dict(BACKEND_CONDITIONS), result


def test_backend_conditions_flip_for_tensorrt_rtx(rtx_env: BindingsEnv) -> None:
    from sq_trt.engine.backends import load_tensorrt_rtx

    backend = load_tensorrt_rtx()
    assert backend.version == rtx_env.version
    assert {name: getattr(backend, name) for name, _ in BACKEND_CONDITIONS} == {
        name: not value for name, value in BACKEND_CONDITIONS
    }


def test_network_flags_follow_the_real_versions_api(trt_env: BindingsEnv) -> None:
    # 10.x needs STRONGLY_TYPED; 11 is always strongly typed and deprecates the flag (12 may drop it),
    # so the builder passes it only where the real module needs it.
    proc = trt_env.run_python(
        "import json\n"
        "import tensorrt as trt\n"
        "from sq_trt.engine.backends import load_tensorrt\n"
        "flag = getattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED', None)\n"
        "print(json.dumps({'flags': load_tensorrt().network_flags(),\n"
        "                  'member': None if flag is None else int(flag)}))"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if trt_env.major >= 11:
        assert result["flags"] == 0, result
    else:
        assert result["member"] is not None and result["flags"] == 1 << result["member"], result


def test_network_flags_keep_strongly_typed_for_tensorrt_rtx(rtx_env: BindingsEnv) -> None:
    from sq_trt.engine.backends import load_tensorrt_rtx

    backend = load_tensorrt_rtx()
    assert backend.network_flags() == 1 << int(backend.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


_BUILD_THROUGH_STUBS = """
import json, sys
from pathlib import Path
import onnx
from onnx import TensorProto, helper
from sq_trt.engine import builder
from sq_trt.engine.backends import load_tensorrt
from sq_trt.engine.gpu import GpuInfo
from sq_trt.engine.recipe import BuildSettings

out = Path(sys.argv[1])
graph = helper.make_graph(
    [helper.make_node("Identity", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])],
)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out / "tiny.onnx")
# Pretend a GPU is visible so the build goes past its GPU check and reaches TensorRT itself.
builder.visible_gpus = lambda: [GpuInfo(0, "pretend", "9.0")]
settings = BuildSettings(onnx=out / "tiny.onnx", name="guard", target="h100", engines_dir=out / "engines")
try:
    builder.build_engine(settings, load_tensorrt(), log=lambda *_: None)
    result = "built"
except Exception as exc:
    result = f"{type(exc).__name__}: {exc}"
print(json.dumps({"result": result, "plans": [str(p) for p in out.rglob("*.plan")]}))
"""


def test_project_build_through_the_stubs_fails(trt_env: BindingsEnv, tmp_path: Path) -> None:
    proc = trt_env.run_python(_BUILD_THROUGH_STUBS.replace("sys.argv[1]", repr(str(tmp_path))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["result"] != "built" and "nullptr" in report["result"], report
    assert report["plans"] == [], "a failed build must leave no .plan behind"


_DEBUG_TENSORS_THROUGH_STUBS = """
import json, sys
from pathlib import Path
import numpy as np
import onnx
from onnx import TensorProto, helper
from sq_trt.compare.layers import trt_debug_tensors
from sq_trt.export.qdq import plugin_per_token_node

out = Path(sys.argv[1])
nodes = [helper.make_node("Identity", ["x"], ["y"])]
if sys.argv[2] == "plugin":
    nodes = [plugin_per_token_node("x", "x_q", "amax", "quant"), helper.make_node("Identity", ["amax"], ["y"])]
graph = helper.make_graph(
    nodes, "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4 if sys.argv[2] != "plugin" else 1])],
)
opsets = [helper.make_opsetid("", 17), helper.make_opsetid("sq_trt", 1)]
onnx.save(helper.make_model(graph, opset_imports=opsets), out / "g.onnx")
try:
    trt_debug_tensors(str(out / "g.onnx"), ["y"], {"x": np.zeros((1, 4), np.float16)})
    result = "ran"
except Exception as exc:
    result = f"{type(exc).__name__}: {exc}"
print(json.dumps({"result": result}))
"""


def _debug_tensors_through_stubs(trt_env: BindingsEnv, tmp_path: Path, graph: str) -> str:
    code = _DEBUG_TENSORS_THROUGH_STUBS.replace("sys.argv[1]", repr(str(tmp_path)))
    proc = trt_env.run_python(code.replace("sys.argv[2]", repr(graph)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(json.loads(proc.stdout.strip().splitlines()[-1])["result"])


def test_compare_registers_the_plugin_before_parsing(trt_env: BindingsEnv, tmp_path: Path) -> None:
    # compare/layers.py parses the ONNX itself (Polygraphy); TensorRT's parser maps sq_trt nodes only to
    # registered plugins. Through the stubs the registration is the first thing to reach TensorRT: the
    # real tensorrt.plugin gets a null plugin registry, before any parser or builder exists.
    result = _debug_tensors_through_stubs(trt_env, tmp_path, "plugin")
    assert "registering the plugin failed" in result and "register_creator" in result, result
    assert "sq_trt::PerTokenQuant v1" in result


def test_compare_registers_nothing_for_a_plugin_free_graph(trt_env: BindingsEnv, tmp_path: Path) -> None:
    result = _debug_tensors_through_stubs(trt_env, tmp_path, "plain")
    assert "registering" not in result and "nullptr" in result, result
