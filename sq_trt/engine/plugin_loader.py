"""Registering the sq-trt per-token plugin with TensorRT before an ONNX with ``sq_trt`` nodes is parsed.

TensorRT's ONNX parser maps a node it does not know to a registered plugin by
``op_type`` (plugin name), ``plugin_version`` and ``plugin_namespace``; the
plugin (``sq_trt.plugins``, a Quickly Deployable Plugin with an AOT Triton
kernel) must be registered with the same TensorRT module first.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from sq_trt.engine.backends import Backend
from sq_trt.engine.source import PluginNode, read_onnx_source
from sq_trt.errors import BuildError

# Quickly Deployable Plugins with an AOT implementation: TensorRT >= 10.9 (tensorrt.plugin.aot_impl).
QDP_AOT_MIN_TENSORRT = "10.9"


def _node_list(nodes: Sequence[PluginNode]) -> str:
    shown = ", ".join(f"{n.name} ({n.op_type})" for n in nodes[:5])
    return shown + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")


def refuse_plugins_on_rtx(backend: Backend, nodes: Sequence[PluginNode]) -> None:
    """Raise if ``nodes`` is not empty and the backend cannot load the plugin (TensorRT-RTX).

    Raises:
        BuildError: Names the nodes and the plugin-free encoding to use instead.
    """
    if nodes and not backend.supports_plugins:
        raise BuildError(
            f"the ONNX holds {len(nodes)} sq-trt plugin node(s) [{_node_list(nodes)}], but the `{backend.name}` "
            "backend cannot load Python-defined plugins (its network API has no add_plugin_v3); re-export with "
            "the portable per-token encoding (standard ONNX ops, no plugin) to build with TensorRT-RTX, or "
            "build this ONNX with --backend tensorrt on a GPU host / in the container"
        )


def register_plugins(backend: Backend, nodes: Sequence[PluginNode]) -> None:
    """Register the sq-trt plugin with ``backend.trt`` when the ONNX needs it (idempotent).

    Raises:
        BuildError: The plugin package is missing or its registration failed; the message
            names the plugin and says what the engine needs.
    """
    if not nodes:
        return
    refuse_plugins_on_rtx(backend, nodes)
    names = sorted({f"{n.namespace}::{n.op_type} v{n.version}" for n in nodes})
    needs = (
        f"the engine needs the sq-trt plugin {', '.join(names)}, registered with TensorRT proper >= "
        f"{QDP_AOT_MIN_TENSORRT} (Quickly Deployable Plugins with AOT kernels; sq-trt targets >= 10.12) and "
        "the `kernels` extra (pip install 'sq-trt[trt,kernels]', or use the container in docker/)"
    )
    try:
        plugins = importlib.import_module("sq_trt.plugins")
    except ImportError as exc:
        raise BuildError(f"cannot import sq_trt.plugins ({exc}); {needs}") from exc
    register = getattr(plugins, "register", None)
    if register is None:
        raise BuildError(f"sq_trt.plugins has no register() in this installation; {needs}")
    try:
        register(trt_module=backend.trt)
    except Exception as exc:  # any failure inside TensorRT/Triton registration is the user's setup
        raise BuildError(f"registering the plugin failed ({type(exc).__name__}: {exc}); {needs}") from exc
    pin_plugin_arch()


def pin_plugin_arch() -> int:
    """Resolve the GPU architecture the plugin kernels compile for, before parsing, and pin it.

    TensorRT calls the plugins' AOT compile from inside the build, where an error surfaces
    as a generic plugin failure; resolving it here (the CUDA driver's GPU, else
    ``$SQ_TRT_CUDA_ARCH``) fails early with a message naming the flag.

    Raises:
        BuildError: No GPU visible and no ``SQ_TRT_CUDA_ARCH``, or an unsupported GPU.
    """
    from sq_trt.errors import ConfigError

    qdp = importlib.import_module("sq_trt.plugins.qdp")
    try:
        arch = int(qdp.target_arch())
    except ConfigError as exc:
        raise BuildError(f"the sq-trt plugin kernels cannot be compiled: {exc}") from exc
    qdp.set_target_arch(arch)
    return arch


def register_plugins_for_onnx(trt: ModuleType, onnx_path: str | Path) -> tuple[PluginNode, ...]:
    """Register the sq-trt plugin with TensorRT proper ``trt`` if ``onnx_path`` has ``sq_trt`` nodes.

    For code that parses an ONNX outside :func:`sq_trt.engine.builder.build_engine`
    (Polygraphy's ``NetworkFromOnnxPath``): the parser can only map a node to a plugin
    already in the registry. A deserialized engine needs no registration (its AOT
    kernels are embedded), so only parsing calls this.

    Returns:
        The plugin nodes found (empty: nothing was registered).

    Raises:
        BuildError: See :func:`register_plugins`.
    """
    nodes = read_onnx_source(onnx_path).plugin_nodes
    register_plugins(Backend("tensorrt", trt, str(getattr(trt, "__version__", "0"))), nodes)
    return nodes
