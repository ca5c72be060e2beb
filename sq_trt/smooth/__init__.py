"""Stage ``smooth``: SmoothQuant factors folded into the model.

:mod:`~sq_trt.smooth.config` (``SmoothConfig``, ``AlphaSearchConfig``; light to import),
:mod:`~sq_trt.smooth.stage` (factors, folding, the equivalence check, the artifact) and
:mod:`~sq_trt.smooth.search` (the per-group alpha search).
"""
