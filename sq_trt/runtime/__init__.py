"""Running exported graphs on the CPU: ONNX Runtime sessions and perplexity.

:mod:`~sq_trt.runtime.onnx` (sessions with the sq-trt plugin nodes expanded),
:mod:`~sq_trt.runtime.fused_cpu` (the plugin nodes' ONNX subgraphs) and
:mod:`~sq_trt.runtime.perplexity` (the one perplexity / next-token NLL).
"""
