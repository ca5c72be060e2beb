"""Accuracy comparison of INT8 candidates against the FP16/FP32 baseline (stage ``compare``).

Modules: :mod:`~sq_trt.compare.metrics` (pure numpy metrics and streaming
accumulators), :mod:`~sq_trt.compare.gate` (the accuracy gate),
:mod:`~sq_trt.compare.runners` (Polygraphy runners from spec strings),
:mod:`~sq_trt.compare.dataloader` (held-out text as feeds),
:mod:`~sq_trt.compare.run` (``Comparator`` streaming and metric folding),
:mod:`~sq_trt.compare.layers` (per-layer error localisation),
:mod:`~sq_trt.artifacts.comparison` (on-disk results).
"""
