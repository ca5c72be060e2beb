"""Lazy imports of heavy optional dependencies with messages that say how to get them."""

from __future__ import annotations

import importlib
from types import ModuleType

from sq_trt.errors import MissingDependencyError

_HINTS: dict[str, str] = {
    "tensorrt": (
        "install the `trt` extra on a GPU host (pip install 'sq-trt[trt]'), or run inside NVIDIA's "
        "TensorRT container (nvcr.io/nvidia/tensorrt:<yy.mm>-py3); on a CPU-only machine use the "
        "`tensorrt_rtx` backend instead (pip install 'sq-trt[rtx]')"
    ),
    "tensorrt_rtx": "install the `rtx` extra: pip install 'sq-trt[rtx]' (TensorRT-RTX 1.7, builds on CPU)",
    "triton": "install the `kernels` extra: pip install 'sq-trt[kernels]'",
    "tritonclient": "install the `serve` extra: pip install 'sq-trt[serve]'",
}


def require(module: str, stage: str) -> ModuleType:
    """Import ``module`` or raise a :class:`MissingDependencyError` naming the stage and the fix.

    Args:
        module: Importable module name (e.g. ``"tensorrt"``).
        stage: The stage that needs it, for the message (e.g. ``"build"``).

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _HINTS.get(top, f"pip install {top}")
        raise MissingDependencyError(
            f"stage `{stage}` needs the Python module `{module}`, which is not importable ({exc}); {hint}"
        ) from exc
