"""mypy over the project's TensorRT code against each TensorRT version's real API."""

from __future__ import annotations

import re
from pathlib import Path

from .conformance import (
    REPO,
    Finding,
    conformance_errors,
    format_failure,
    tensorrt_files,
    unresolved_module_names,
    untyped_tensorrt_objects,
)
from .conformance import memoized_conformance as check
from .harness import BindingsEnv

Memo = dict[str, tuple[list[Finding], list[str]]]


def test_tensorrt_code_conforms(trt_env: BindingsEnv, mypy_work: Path, conformance: Memo) -> None:
    findings, _ = check(trt_env, mypy_work, conformance)
    assert not findings, format_failure(trt_env.label, findings)


def test_tensorrt_rtx_code_conforms(rtx_env: BindingsEnv, mypy_work: Path, conformance: Memo) -> None:
    findings, _ = check(rtx_env, mypy_work, conformance)
    assert not findings, format_failure(rtx_env.label, findings)


def test_check_covers_the_builder_and_the_plugin(
    trt_env: BindingsEnv, mypy_work: Path, conformance: Memo
) -> None:
    _, checked = check(trt_env, mypy_work, conformance)
    expected = ["sq_trt/engine/backends.py", "sq_trt/engine/builder.py", "plugins/qdp.py"]
    missing = [path for path in expected if (REPO / path).exists() and path not in checked]
    assert not missing, f"not checked: {missing} (checked: {checked})"
    assert any(path.startswith("sq_trt/engine/") for path in checked)


def test_every_tensorrt_module_value_is_resolved() -> None:
    # The mypy plugin types ModuleType values named trt/trtp; another name, or `trt: Any`, is never checked.
    problems = [p for path in tensorrt_files() for p in unresolved_module_names(path)]
    assert not problems, "\n".join(problems)


def test_unresolved_module_name_is_detected(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import Any\n"
        "from types import ModuleType\n"
        "def build(rt: ModuleType) -> None:\n"
        "    rt.Builder(None)\n"
        "def engine_io(trt: Any) -> None:\n"
        "    trt.TensorIOMode.INPUT\n"
        "def load(backend) -> None:\n"
        "    trt = backend.trt\n"
        "    mod = backend.trt\n"
        "    trt.Runtime(None), mod.Runtime(None)\n"
    )
    problems = unresolved_module_names(probe)
    assert sorted(p.split(": ", 1)[0] for p in problems) == ["probe.py:3", "probe.py:5", "probe.py:9"], (
        problems
    )


# Misspellings of each kind the check must catch: an enum member, a module attribute reached through the
# backend's ModuleType, a method on a typed result, a tensorrt.plugin name, and methods called inside helpers
# that receive the TensorRT object as a parameter (typed `Any`, those escaped every check: a misspelled
# `config.set_memory_pool_limt` in `_configure(backend, builder: Any, ...)` passed all four APIs).
_TYPOS = {
    "sq_trt/engine/builder.py": [
        ("trt.MemoryPoolType.WORKSPACE", "trt.MemoryPoolType.WORKSPAC"),
        ("trt.OnnxParser(network, logger)", "trt.OnnxParsr(network, logger)"),
        ("builder.create_network(", "builder.create_netwrk("),
        ("config.set_memory_pool_limit(", "config.set_memory_pool_limt("),
        ("if config.add_optimization_profile(profile) < 0", "if config.add_optimization_profil(profile) < 0"),
        ("profile.set_shape(name, ", "profile.set_shap(name, "),
        ("cache = config.create_timing_cache(blob)", "cache = config.create_timing_cach(blob)"),
        ("err = parser.get_error(index)", "err = parser.get_eror(index)"),
        ("tensor = network.get_input(index)", "tensor = network.get_inpt(index)"),
        ("if engine.get_tensor_mode(name) ==", "if engine.get_tensor_mod(name) =="),
        (".deserialize_cuda_engine(plan)", ".deserialize_cuda_engin(plan)"),
    ],
    "sq_trt/engine/inspect.py": [
        ("raw = inspector.get_engine_information(", "raw = inspector.get_engine_informaton("),
    ],
    "plugins/qdp.py": [("trtp.KernelLaunchParams()", "trtp.KernelLaunchParam()")],
    # An attribute of a pure-Python tensorrt.plugin class guarded by __setattr__ (AttributeError at build).
    "plugins/qdp_gemm.py": [("params.grid_x = trtp.cdiv(", "params.gridx = trtp.cdiv(")],
}
# The helpers that take a TensorRT object as a parameter: each must keep at least one misspelled call above.
_HELPER_TYPOS = {
    "_configure": "set_memory_pool_limt",
    "_attach_timing_cache": "create_timing_cach",
    "_parser_errors": "get_eror",
    "_network_io": "get_inpt",
    "_engine_io": "get_tensor_mod",
    "engine_layer_info": "get_engine_informaton",
}


def test_misspelled_api_fails_naming_attribute_and_version(
    trt_env: BindingsEnv, mypy_work: Path, conformance: Memo
) -> None:
    edits: dict[str, list[tuple[str, str]]] = {}
    for path, typos in _TYPOS.items():
        text = (REPO / path).read_text() if (REPO / path).exists() else ""
        present = [typo for typo in typos if typo[0] in text]
        if present:
            edits[path] = present
    # The self-test must misspell the real builder: if it no longer contains these calls, update _TYPOS.
    assert "sq_trt/engine/builder.py" in edits, (
        "sq_trt/engine/builder.py has none of the calls _TYPOS misspells"
    )
    findings, _ = conformance_errors(trt_env, mypy_work / "selftest", edits=edits)
    message = format_failure(trt_env.label, findings)
    for path, typos in edits.items():
        for right, wrong in typos:
            # The misspelled identifier: the one word of the wrong text the right one lacks.
            (name,) = set(re.findall(r"\w+", wrong)) - set(re.findall(r"\w+", right))
            hits = [f for f in findings if f.path == path and f'"{name}"' in f.message]
            assert hits, f"misspelled {name!r} in {path} was not reported; got:\n{message}"
            assert f"{trt_env.label}: {path}:{hits[0].line}:" in message and name in message
    assert trt_env.label in message and trt_env.version in message
    # Every helper that receives a TensorRT object as a parameter had its misspelled method reported.
    for helper, wrong in _HELPER_TYPOS.items():
        assert any(f'"{wrong}"' in f.message for f in findings), (
            f"typo in {helper}() not reported:\n{message}"
        )
    # Exactly the typos are new (the misspelled lines keep their numbers, so the unedited findings match).
    unedited = {f.key() for f in check(trt_env, mypy_work, conformance)[0]}
    new = [f for f in findings if f.key() not in unedited]
    assert len(new) == sum(len(t) for t in edits.values()), message


def test_no_tensorrt_object_is_typed_any() -> None:
    # mypy checks nothing on an `Any`: builder, network, parser, config, profile, engine, inspector,
    # runtime and plugin registry must carry their tensorrt types in the project's TensorRT code.
    problems = [p for path in tensorrt_files() for p in untyped_tensorrt_objects(path)]
    assert not problems, "\n".join(problems)


def test_tensorrt_object_typed_any_is_detected(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import Any, Optional\n"
        "import tensorrt\n"
        "def configure(builder: Any, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:\n"
        "    config = builder.create_builder_config()\n"
        "    return config, {}\n"
        "def read(engine, engine_dir: str, network: tensorrt.INetworkDefinition) -> None: ...\n"
        "def inspect(inspector: 'tensorrt.EngineInspector | Any', runtime: Optional[Any]) -> None: ...\n"
        "def registry(plugin_registry: tensorrt.IPluginRegistry, profiles: list[Any]) -> Any:\n"
        "    return plugin_registry\n"
        "parser: Any = None\n"
    )
    problems = untyped_tensorrt_objects(probe)
    found = sorted((p.split(": ", 1)[0], p.split("`")[1]) for p in problems)
    assert found == [
        ("probe.py:10", "parser: Any"),
        ("probe.py:3", "builder: Any"),
        ("probe.py:3", "tuple[Any, dict[str, Any]]"),
        ("probe.py:6", "engine: (unannotated)"),
        ("probe.py:7", "inspector: 'tensorrt.EngineInspector | Any'"),
        ("probe.py:7", "runtime: Optional[Any]"),
        ("probe.py:8", "Any"),
    ], problems
