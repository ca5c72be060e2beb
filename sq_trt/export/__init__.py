"""ONNX export: the FP16 baseline and the W8A8 Q/DQ graph, their lint, and a CPU executor.

* :func:`export_model` (stage): model + act_scales -> ``model.fp16.onnx``, ``model.int8.onnx``, manifest.
* :func:`export_float_onnx`: torch -> float ONNX (dynamo exporter, dynamic batch/seq).
* :func:`quantize_graph`: float ONNX -> INT8 Q/DQ (per-tensor, per-token plugin or portable).
* :func:`lint_qdq`: TensorRT's Q/DQ rules; a failure names the node.
* :func:`session_from_onnx`, :class:`OnnxModelRunner`: ONNX Runtime on CPU, plugin nodes expanded.
"""

from sq_trt.export.lint import find_qdq_problems, lint_qdq
from sq_trt.export.onnx_export import export_float_onnx, graph_io
from sq_trt.export.qdq import QuantTarget, quantize_graph
from sq_trt.export.stage import ExportConfig, ExportResult, export_model
from sq_trt.runtime.onnx import OnnxModelRunner, expand_plugin_nodes, session_from_onnx

__all__ = [
    "ExportConfig",
    "ExportResult",
    "OnnxModelRunner",
    "QuantTarget",
    "expand_plugin_nodes",
    "export_float_onnx",
    "export_model",
    "find_qdq_problems",
    "graph_io",
    "lint_qdq",
    "quantize_graph",
    "session_from_onnx",
]
