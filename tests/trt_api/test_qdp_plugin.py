"""The project's Quickly Deployable Plugin against the real ``tensorrt.plugin`` of each TensorRT version.

``tensorrt.plugin`` is pure Python: its decorators validate the ``register`` / ``aot_impl`` signatures when
they run, and the AOT function can be called with tensor descriptors (whose shape expressions are "fake"
without TensorRT's expression builder, as TensorRT makes them outside shape calculation), so the plugin's
Triton kernel really compiles to PTX here. What TensorRT does next (launch the PTX) needs a GPU.
"""

from __future__ import annotations

import json

import pytest

from .conformance import REPO
from .harness import BindingsEnv

ARCH = 89

_SCRIPT = """
import inspect, json, os, re
os.environ["SQ_TRT_CUDA_ARCH"] = "{arch}"
import tensorrt as trt
import tensorrt.plugin as trtp
from tensorrt.plugin import _lib
from sq_trt import plugin_spec
from sq_trt.plugins import qdp

functions = qdp.register(trt, lazy=True)
report = {{"registered": sorted(k for k in _lib.QDP_REGISTRY if k.startswith(plugin_spec.PLUGIN_NAMESPACE + "::"))}}

def fake_desc(rank, dtype):
    return trtp.TensorDesc(trtp.ShapeExprs.from_tuple(tuple(trtp.ShapeExpr() for _ in range(rank))), dtype)

def fake_args(desc_function):
    # Inputs are TensorDescs (activation [B, S, K] first, then per-channel [K] parameters), attributes
    # are scalars; the register function's signature says which is which.
    args = []
    for param in inspect.signature(desc_function).parameters.values():
        if param.annotation in (float, "float"):
            args.append(1e-5)
        elif param.annotation in (int, "int"):
            args.append(1)
        else:
            args.append(fake_desc(3 if not args else 1, trt.float16))
    return tuple(args)

# The fused GEMMs (the plugins with an autotune function) are exercised by _GEMM_SCRIPT.
cases = {{
    k[: -len("_desc")]: fake_args(f)
    for k, f in functions.items()
    if k.endswith("_desc") and k[: -len("_desc")] + "_autotune" not in functions
}}
report["gemm_plugins"] = sorted(k[: -len("_autotune")] for k in functions if k.endswith("_autotune"))
for name, args in cases.items():
    outputs = functions[name + "_desc"](*args)
    # The call TensorRT makes (tensorrt/plugin/_plugin_class.py): *inputs, *attributes, outputs, tactic.
    kernel, ptx, params, extra = functions[name + "_aot"](*args, outputs, 0)
    ptx_text = ptx.decode() if isinstance(ptx, bytes) else ptx
    kernel_name = kernel.decode() if isinstance(kernel, bytes) else kernel
    report[name] = {{
        "output_dtypes": [str(o.dtype) for o in outputs],
        "input_dtype": str(args[0].dtype),
        "kernel_type": type(kernel).__name__,
        "kernel": kernel_name,
        "ptx_type": type(ptx).__name__,
        "targets": [l.split()[1] for l in ptx_text.splitlines() if l.startswith(".target")],
        "entries": [l.split(".entry", 1)[1].strip().rstrip("(").strip() for l in ptx_text.splitlines() if ".entry" in l],
        "params_type": isinstance(params, trtp.KernelLaunchParams),
        "launch_fields": {{f: type(getattr(params, f)).__name__ for f in ("grid_x", "block_x", "shared_mem")}},
        "extra_type": isinstance(extra, trtp.SymIntExprs),
        "extra_args": [type(a).__name__ for a in extra],
        "extra_all_symint32": all(isinstance(a, trtp.SymInt32) for a in extra),
        "n_inputs": sum(isinstance(a, trtp.TensorDesc) for a in args),
        "n_outputs": len(outputs),
        "entry_params": re.findall(r"\\.param\\s+\\.(\\w+)", ptx_text.split(".entry", 1)[1].split(")", 1)[0]),
    }}
print(json.dumps(report))
"""


def _run(env: BindingsEnv, code: str) -> dict:
    proc = env.run_python(code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _needs_plugin() -> None:
    if not (REPO / "plugins" / "qdp.py").exists():
        pytest.skip("plugins/qdp.py (the QDP definitions) does not exist yet")
    pytest.importorskip("triton", reason="the plugin's AOT kernel compile needs the `kernels` extra (triton)")


def test_qdp_registers_and_aot_returns_ptx(trt_env: BindingsEnv) -> None:
    report = _run(trt_env, _SCRIPT.format(arch=ARCH))
    names = [k for k in report if k not in ("registered", "gemm_plugins")]
    # One registered plugin per definition the module returns, the per-token one among them.
    assert "sq_trt::PerTokenQuant" in report["registered"]
    assert report["gemm_plugins"] == ["quant_w8a8_gemm", "w8a8_gemm"], report
    assert len(report["registered"]) == len(names) + 2 and "per_token_quant" in names, report
    for name in names:
        r = report[name]
        # plugin_spec: x_q int8, amax in x's dtype.
        assert r["output_dtypes"] == ["DataType.INT8", r["input_dtype"]], r
        # The types tensorrt/plugin/_plugin_class.py checks before handing them to TensorRT.
        assert r["kernel_type"] in ("str", "bytes") and r["ptx_type"] in ("str", "bytes"), r
        assert r["params_type"] and r["extra_type"] and r["extra_all_symint32"], r
        assert r["extra_args"], "the kernel's integer arguments (rows, columns) must be symbolic extra args"
        # PTX for the requested architecture, whose entry is the kernel name returned to TensorRT.
        assert r["targets"] == [f"sm_{ARCH}"], r
        assert r["entries"] == [r["kernel"]], r
        # TensorRT launches an AOT kernel with the input pointers, then the extra arguments, then the output
        # pointers (NVIDIA's qdp_defs.py sample: signature "*fp32, i32 x 13, *fp32"); the PTX entry must take
        # exactly that, or the kernel reads the wrong argument slots.
        ints = len(r["extra_args"])
        expected = ["u64"] * r["n_inputs"] + ["u32"] * ints + ["u64"] * r["n_outputs"]
        assert [t.replace("s32", "u32") for t in r["entry_params"]] == expected, r


_GEMM_SCRIPT = """
import json, os, re
os.environ["SQ_TRT_CUDA_ARCH"] = "{arch}"
import tensorrt as trt
import tensorrt.plugin as trtp
from sq_trt.plugins import qdp

functions = qdp.register(trt, lazy=True)

def fake_desc(rank, dtype):
    return trtp.TensorDesc(trtp.ShapeExprs.from_tuple(tuple(trtp.ShapeExpr() for _ in range(rank))), dtype)

weights = (fake_desc(2, trt.int8), fake_desc(1, trt.float32), fake_desc(1, trt.float32))
cases = {{
    # inputs per plugin_spec, then the int attributes (has_bias / has_smooth, has_bias)
    "w8a8_gemm": ((fake_desc(3, trt.int8), fake_desc(3, trt.float16), *weights), (1,)),
    "quant_w8a8_gemm": ((fake_desc(3, trt.bfloat16), fake_desc(1, trt.float32), *weights), (1, 0)),
}}
report = {{}}
for name, (inputs, attrs) in cases.items():
    outputs = functions[name + "_desc"](*inputs, *attrs)
    combos = functions[name + "_autotune"](*inputs, outputs)
    assert all(isinstance(c, trtp.AutoTuneCombination) for c in combos)
    tactics = sorted({{t for c in combos for t in c._tactics}})
    combinations = [
        [str(t) for t in comb.types] for c in combos for comb in c._get_combinations()
    ]
    per_tactic = {{}}
    for tactic in tactics:
        kernel, ptx, params, extra = functions[name + "_aot"](*inputs, *attrs, outputs, tactic)
        text = ptx.decode() if isinstance(ptx, bytes) else ptx
        head = text.split(".entry", 1)[1].split(")", 1)[0]
        per_tactic[tactic] = {{
            "kernel": kernel if isinstance(kernel, str) else kernel.decode(),
            "entries": [l.split(".entry", 1)[1].strip().rstrip("(").strip() for l in text.splitlines() if ".entry" in l],
            "targets": [l.split()[1] for l in text.splitlines() if l.startswith(".target")],
            "params_type": isinstance(params, trtp.KernelLaunchParams),
            "extra_all_symint32": isinstance(extra, trtp.SymIntExprs) and all(isinstance(a, trtp.SymInt32) for a in extra),
            "n_extra": len(extra),
            "entry_params": re.findall(r"\\.param\\s+\\.(\\w+)", head),
            "mma": sorted(set(re.findall(r"\\b(w?g?mma\\S*)", text))),
            "byte_loads": len(re.findall(r"ld\\.global\\S*\\.[sub]8\\s", text)),
        }}
    report[name] = {{
        "output_dtypes": [str(o.dtype) for o in outputs], "input_dtype": str(inputs[0].dtype),
        "amax_dtype": str(inputs[1].dtype), "tactics": tactics, "combinations": combinations,
        "per_tactic": per_tactic,
    }}
print(json.dumps(report))
"""


def test_gemm_plugins_register_autotune_and_compile_every_tactic(trt_env: BindingsEnv) -> None:
    report = _run(trt_env, _GEMM_SCRIPT.format(arch=ARCH))
    plain, quant = report["w8a8_gemm"], report["quant_w8a8_gemm"]
    # plugin_spec: W8A8Gemm's y has amax's dtype; QuantW8A8Gemm's y has x's dtype.
    assert plain["output_dtypes"] == [plain["amax_dtype"]] == ["DataType.HALF"], plain
    assert quant["output_dtypes"] == [quant["input_dtype"]] == ["DataType.BF16"], quant
    for r in (plain, quant):
        # Unknown (fake) N and K: every tile configuration is offered; tactics are positive.
        assert r["tactics"] == list(range(1, 7)), r
        # Three float types for the activation side, each tied to the same output type.
        assert len(r["combinations"]) == 3, r
        assert all(c[-1] == c[0 if r is quant else 1] for c in r["combinations"]), r
        assert all(c[2] == "DataType.INT8" and c[3] == c[4] == "DataType.FLOAT" for c in r["combinations"]), r
        for tactic, t in r["per_tactic"].items():
            assert t["targets"] == [f"sm_{ARCH}"] and t["entries"] == [t["kernel"]], (tactic, t)
            assert t["params_type"] and t["extra_all_symint32"] and t["n_extra"] == 3, (tactic, t)
            # Five input pointers, the int32 (M, N, K), one output pointer: TensorRT's AOT launch order.
            assert [p.replace("s32", "u32") for p in t["entry_params"]] == ["u64"] * 5 + ["u32"] * 3 + ["u64"]
            # Integer tensor cores and nothing else.
            assert t["mma"] and all(".s32.s8.s8.s32" in m for m in t["mma"]), (tactic, t)
            # N and K unknown here (fake shapes), so aot_impl cannot promise aligned rows: it must have
            # picked the unaligned fallback, which reads the int8 weight byte by byte (a TensorRT build
            # hands constant weight shapes, and real hidden sizes get the aligned variant).
            assert t["byte_loads"] > 0, (tactic, t)


_BAD_SIGNATURES = """
import json
import tensorrt.plugin as trtp
from typing import Tuple
out = {}
try:
    @trtp.register("sq_trt_selftest::Unannotated", lazy_register=True)
    def unannotated(x):
        return x
    out["register"] = "accepted"
except Exception as exc:
    out["register"] = type(exc).__name__ + ": " + str(exc)

@trtp.register("sq_trt_selftest::Good", lazy_register=True)
def good(x: trtp.TensorDesc) -> Tuple[trtp.TensorDesc]:
    return (x.like(),)

try:
    @trtp.aot_impl("sq_trt_selftest::Good")
    def wrong_args(y: trtp.TensorDesc, outputs: Tuple[trtp.TensorDesc], tactic: int):
        return None
    out["aot_impl"] = "accepted"
except Exception as exc:
    out["aot_impl"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_plugin_decorators_really_validate(trt_env: BindingsEnv) -> None:
    # Negative control: the same decorators the project's plugin passes reject malformed definitions here,
    # so passing them above means something.
    report = _run(trt_env, _BAD_SIGNATURES)
    assert report["register"] != "accepted", report
    assert report["aot_impl"] != "accepted", report
