"""The check on a probe written the way shared builder code should be typed (docs/TRT_API_CHECK.md).

Objects passed between functions are annotated with ``tensorrt`` types imported under ``TYPE_CHECKING``
(``Any`` at run time and for the project's own mypy job); in each conformance run ``tensorrt`` is that
run's real API, TensorRT-RTX included, so calls on them are checked too, not only ``trt.X`` lookups.
"""

from __future__ import annotations

import hashlib
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


def _check(env: BindingsEnv, work: Path, source: str) -> list:
    # One directory per source text, so mypy's cache stays valid for both between runs.
    return conformance_errors(
        env, work / f"probe-{hashlib.sha256(source.encode()).hexdigest()[:8]}", probe=source
    )[0]


def _assert_probe_checked(env: BindingsEnv, work: Path) -> None:
    broken = PROBE
    for old, new in TYPOS:
        broken = broken.replace(old, new)
    clean = _check(env, work, PROBE)
    assert not clean, format_failure(env.label, clean)
    findings = _check(env, work, broken)
    message = format_failure(env.label, findings)
    # A method typo on an annotated object, and a missing argument, both reported with the version.
    assert any('"set_memory_pool_limt"' in f.message for f in findings), message
    assert any("build_serialized_network" in f.message for f in findings), message
    assert len(findings) == len(TYPOS), message
    assert env.label in message


def test_typed_probe_is_checked_against_tensorrt(trt_env: BindingsEnv, mypy_work: Path) -> None:
    _assert_probe_checked(trt_env, mypy_work)


def test_typed_probe_is_checked_against_tensorrt_rtx(rtx_env: BindingsEnv, mypy_work: Path) -> None:
    _assert_probe_checked(rtx_env, mypy_work)
