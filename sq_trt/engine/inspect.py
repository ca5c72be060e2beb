"""Layer information from TensorRT's engine inspector, where this machine can provide it.

The inspector needs a deserialized engine, and deserializing needs a GPU (both
TensorRT and TensorRT-RTX open a CUDA stream). On a GPU host the build stage
records the layer list and whether quantized GEMMs really run in INT8, which is
how a user confirms that the per-token plugin's INT8 output was fused into an
INT8 GEMM (DESIGN.md). Elsewhere the summary says why it is missing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorrt


def summarize_layers(info: dict[str, Any]) -> dict[str, Any]:
    """Summarize the inspector's JSON (``LayerInformationFormat.JSON``, detailed verbosity).

    Returns:
        ``layers`` (count), ``layer_types`` (type -> count) and ``int8_gemms``: the
        names of matrix-multiply/convolution layers with an INT8 input format (any spelling:
        the inspector writes formats as free text such as ``"Row major linear INT8 format"``).
    """
    layers = info.get("Layers", [])
    types: Counter[str] = Counter()
    int8_gemms = []
    for layer in layers:
        if not isinstance(layer, dict):  # LAYER_NAMES_ONLY verbosity gives plain names
            types["<unknown>"] += 1
            continue
        kind = str(layer.get("LayerType", "<unknown>"))
        types[kind] += 1
        inputs = json.dumps(layer.get("Inputs", [])).lower()
        text = (kind + str(layer.get("Name", ""))).lower()
        if any(word in text for word in ("gemm", "matrix", "matmul", "convolution")) and "int8" in inputs:
            int8_gemms.append(str(layer.get("Name", "")))
    return {
        "available": True,
        "layers": len(layers),
        "layer_types": dict(types),
        "int8_gemms": int8_gemms,
        "plugin_tactics": plugin_tactics(layers),
    }


_PROFILE_SUFFIX = re.compile(r"\s*\[profile (\d+)\]\s*$")


def plugin_tactics(layers: list[Any]) -> list[dict[str, Any]]:
    """The tactic TensorRT kept for each plugin layer, per optimization profile.

    TensorRT times a plugin's tactics (the GEMM plugins' tiles) at each profile's opt shape and
    keeps one per profile; a multi-profile engine holds one copy of each layer per profile, the
    copies of profile N > 0 named ``"<name> [profile N]"``. Detailed verbosity gives
    ``TacticValue`` (both are GPU-only claims, settled by the command in docs/GPU_HOST.md).

    Returns:
        ``{"layer", "profile", "tactic"}`` per plugin layer (``tactic`` None when not reported).
    """
    found = []
    for layer in layers:
        if not isinstance(layer, dict) or "plugin" not in str(layer.get("LayerType", "")).lower():
            continue
        name = str(layer.get("Name", ""))
        match = _PROFILE_SUFFIX.search(name)
        tactic = layer.get("TacticValue")
        found.append(
            {
                "layer": _PROFILE_SUFFIX.sub("", name),
                "profile": int(match.group(1)) if match else 0,
                "tactic": None if tactic is None else str(tactic),
            }
        )
    return found


def engine_layer_info(trt: ModuleType, engine: tensorrt.ICudaEngine) -> tuple[dict[str, Any], str | None]:
    """Read a deserialized engine's layer information.

    Args:
        trt: The backend's TensorRT module.
        engine: A ``trt.ICudaEngine`` (built with detailed profiling verbosity for full detail).

    Returns:
        ``(summary, raw_json)``; ``raw_json`` is None when unavailable, and the summary
        then holds ``available: False`` and the reason.
    """
    inspector = engine.create_engine_inspector()
    raw = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return {"available": False, "reason": "the engine inspector returned no JSON"}, None
    return summarize_layers(info), raw
