"""The check on a probe written the way shared builder code should be typed (docs/TRT_API_CHECK.md).

Objects passed between functions are annotated with ``tensorrt`` types imported under ``TYPE_CHECKING``
(``Any`` at run time and for the project's own mypy job); in each conformance run ``tensorrt`` is that
run's real API, TensorRT-RTX included, so calls on them are checked too, not only ``trt.X`` lookups.
"""

from __future__ import annotations

from pathlib import Path

from .conformance import conformance_errors, format_failure
from .harness import BindingsEnv

PROBE = """
from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt


def configure(trt: ModuleType, builder: tensorrt.Builder, workspace: int) -> tensorrt.IBuilderConfig:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.builder_optimization_level = 3
    return config


def serialize(builder: tensorrt.Builder, network: tensorrt.INetworkDefinition, config: tensorrt.IBuilderConfig) -> bytes:
    plan = builder.build_serialized_network(network, config)
    return b"" if plan is None else bytes(plan)
"""

TYPOS = [
    ("config.set_memory_pool_limit(", "config.set_memory_pool_limt("),
    ("builder.build_serialized_network(network, config)", "builder.build_serialized_network(network)"),
]


def _assert_probe_checked(env: BindingsEnv, work: Path) -> None:
    broken = PROBE
    for old, new in TYPOS:
        broken = broken.replace(old, new)
    sources = {"trt_api_probe_clean.py": PROBE, "trt_api_probe_broken.py": broken}
    findings, _ = conformance_errors(env, work / "probe", probe=sources)
    message = format_failure(env.label, findings)
    assert not [f for f in findings if f.path == "trt_api_probe_clean.py"], message
    broken_findings = [f for f in findings if f.path == "trt_api_probe_broken.py"]
    # A method typo on an annotated object, and a missing argument, both reported with the version.
    assert any('"set_memory_pool_limt"' in f.message for f in broken_findings), message
    assert any("build_serialized_network" in f.message for f in broken_findings), message
    assert len(broken_findings) == len(TYPOS), message
    assert env.label in message


def test_typed_probe_is_checked_against_tensorrt(trt_env: BindingsEnv, mypy_work: Path) -> None:
    _assert_probe_checked(trt_env, mypy_work)


def test_typed_probe_is_checked_against_tensorrt_rtx(rtx_env: BindingsEnv, mypy_work: Path) -> None:
    _assert_probe_checked(rtx_env, mypy_work)
