"""Tools for GPU hosts and containers: the GPU-host kit's analysis and the smoke checks.

:mod:`~sq_trt.hosttools.gpu_kit` (``python -m sq_trt.hosttools.gpu_kit``),
:mod:`~sq_trt.hosttools.gpu_kit_kernels` (INT8 or not from kernel names) and
:mod:`~sq_trt.hosttools.smoke` (the steps of ``docker/smoke.sh``).
"""
