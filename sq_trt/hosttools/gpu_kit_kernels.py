"""INT8 GEMM or not, decided from the kernel names an engine runs (for the GPU-host kit).

Tensor types at layer boundaries mislead: LLM-style engines are mostly Myelin
regions, whose layers (``gemm``, ``kgen``, names ending ``_myl<i>_<j>``) report
``Half`` inputs and outputs even around an INT8 GEMM (TensorRT issue #4397). The
kernel (``TacticName``) says what runs: TensorRT's and CUTLASS's GEMM kernels name
their input types, e.g. ``sm80_xmma_gemm_f16f16_f16f16_f16_nn_n_tilesize32x32x64_...``
(FP16, as printed in #4397), ``..._gemm_i8i8_i8i32_f32_...``, ``cutlass_tensorop_s8_i16832gemm_s8_...``
or ``..._imma_...`` (INT8, integer tensor-core MMA).

Where the names come from, both written by TensorRT at ``ProfilingVerbosity.DETAILED``:

* the engine inspector's JSON (``LayerInformationFormat.JSON``; the build stage keeps it as
  ``<target>.layers.json``, ``trtexec --exportLayerInfo`` writes the same): ``{"Layers": [{"Name",
  "LayerType", "Inputs", "Outputs", "TacticName", ...}]}``;
* ``trtexec --dumpLayerInfo``'s log, one layer per line: ``Name: <n>, LayerType: <t>, Inputs: [...],
  Outputs: [...], TacticName: <kernel>, StreamId: 0, Metadata: ...``.

sq-trt's own plugins run their own kernels: a ``W8A8Gemm`` / ``QuantW8A8Gemm`` layer
(the fused-gemm encoding) is an INT8 GEMM by construction (its Triton kernel's
``tl.dot`` on int8 compiles to ``mma ... s8.s8.s32``, DESIGN.md).
"""

from __future__ import annotations

import re
from typing import Any

from sq_trt import plugin_spec

# Input-type tokens in GEMM kernel names. INT8 is tested first: an INT8 kernel may write an f16/f32 output.
_INT8 = re.compile(r"i8i8|s8s8|int8|imma|i8816|i16832|(?:^|_)s8(?:_|$)|_i8_|i8i32")
_FP16 = re.compile(r"f16f16|h16|hgemm|hmma|(?:^|_)f16(?:_|$)|fp16|half|bf16")
_GEMM_TYPES = ("gemm", "matrixmultiply", "matmul", "convolution", "fullyconnected")
# QuantW8A8Gemm first: "W8A8Gemm" is a substring of it.
_FUSED_GEMM_OPS = (plugin_spec.QUANT_W8A8_GEMM, plugin_spec.W8A8_GEMM)
_QUANT_OPS = (
    plugin_spec.PER_TOKEN_QUANT,
    plugin_spec.RMSNORM_PER_TOKEN_QUANT,
    plugin_spec.LAYERNORM_PER_TOKEN_QUANT,
)
_LOG_LAYER = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)*Name: (?P<name>.*?), LayerType: (?P<type>[^,]+),(?P<rest>.*)$"
)


def kernel_precision(kernel: str) -> str:
    """``"int8"``, ``"fp16"`` or ``"other"`` for a kernel (tactic) name."""
    name = kernel.lower()
    if _INT8.search(name):
        return "int8"
    if _FP16.search(name):
        return "fp16"
    return "other"


def _fused_gemm_op(layer: dict[str, Any]) -> str | None:
    text = f"{layer.get('Name', '')} {layer.get('LayerType', '')} {layer.get('PluginType', '')}"
    return next((op for op in _FUSED_GEMM_OPS if op in text), None)


def _is_gemm_layer(layer: dict[str, Any]) -> bool:
    kind = str(layer.get("LayerType", "")).lower().replace(" ", "")
    tactic = str(layer.get("TacticName", "")).lower()
    return any(word in kind for word in _GEMM_TYPES) or "gemm" in tactic or _fused_gemm_op(layer) is not None


def gemm_kernels(info: dict[str, Any]) -> list[dict[str, str]]:
    """Every GEMM layer of an engine with its kernel and that kernel's precision."""
    found = []
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict) or not _is_gemm_layer(layer):
            continue
        op = _fused_gemm_op(layer)
        kernel = str(layer.get("TacticName", "")) or (f"sq_trt::{op} plugin kernel" if op else "")
        precision = "int8" if op else kernel_precision(kernel)
        found.append({"layer": str(layer.get("Name", "")), "kernel": kernel, "precision": precision})
    return found


def encoding_of(plugins: list[dict[str, Any]]) -> str:
    """The per-token encoding an engine was built from, by the plugin nodes its manifest records."""
    names = {str(p.get("name", "")) for p in plugins}
    if names & set(_FUSED_GEMM_OPS):
        return "fused-gemm"
    if names:
        return "plugin"
    return "no plugin (portable per-token, per-tensor or FP16)"


def classify_engine(info: dict[str, Any], plugins: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether an engine runs INT8 GEMMs, from its kernel names.

    Args:
        info: Inspector JSON (or :func:`parse_layer_log` of a trtexec log).
        plugins: The engine manifest's plugin records (``name``...), for the encoding.

    Returns:
        ``encoding``, ``gemms`` (count), ``int8`` / ``fp16`` / ``other`` (GEMM kernels of each
        precision), ``int8_gemm`` (True when at least one GEMM kernel is INT8; None when the
        layer list names no kernel, e.g. not built at detailed verbosity) and ``kernels``.
    """
    kernels = gemm_kernels(info)
    counts = {p: sum(k["precision"] == p for k in kernels) for p in ("int8", "fp16", "other")}
    named = any(k["kernel"] for k in kernels)
    return {
        "encoding": encoding_of(plugins),
        "gemms": len(kernels),
        **counts,
        # The hybrid plan's point: INT8 GEMMs TensorRT runs itself (static Q/DQ) vs sq-trt plugin layers.
        "native_int8_gemms": sum(k["precision"] == "int8" and not k["kernel"].startswith("sq_trt::") for k in kernels),
        "plugin_layers": plugin_layer_count(info),
        "int8_gemm": (counts["int8"] > 0) if named else None,
        "kernels": kernels,
    }


def plugin_layer_count(info: dict[str, Any]) -> int:
    """Layers of an engine that are sq-trt plugins (each one cuts TensorRT's fusions around it)."""
    names = (*_FUSED_GEMM_OPS, *_QUANT_OPS)
    return sum(
        1
        for layer in info.get("Layers", [])
        if isinstance(layer, dict)
        and any(op in f"{layer.get('Name', '')} {layer.get('LayerType', '')} {layer.get('PluginType', '')}" for op in names)
    )


def parse_layer_log(text: str) -> dict[str, Any]:
    """``trtexec --dumpLayerInfo`` output -> ``{"Layers": [{"Name", "LayerType", "TacticName"}]}``."""
    layers = []
    for line in text.splitlines():
        match = _LOG_LAYER.match(line)
        if not match:
            continue
        tactic = re.search(r"TacticName: ([^,\s]+)", match["rest"])
        layers.append(
            {
                "Name": match["name"],
                "LayerType": match["type"].strip(),
                "TacticName": tactic.group(1) if tactic else "",
            }
        )
    return {"Layers": layers}


def verdict(classified: dict[str, Any]) -> str:
    """The kit summary's cell: ``"yes: 12/14 INT8 (2 FP16)"`` or why not."""
    if classified["gemms"] == 0:
        return "no GEMM layer found"
    if classified["int8_gemm"] is None:
        return "unknown: no kernel names (build with profiling verbosity DETAILED)"
    share = f"{classified['int8']}/{classified['gemms']} INT8, {classified['fp16']} FP16"
    return ("yes: " if classified["int8_gemm"] else "NO, FP16 GEMMs only: ") + share
