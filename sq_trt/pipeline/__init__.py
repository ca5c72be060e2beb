"""The pipeline: a recipe of stage configs run as a chain with content-addressed reuse.

:mod:`~sq_trt.pipeline.recipe` (the recipe file), :mod:`~sq_trt.pipeline.runner` (stages,
cache keys, reuse), :mod:`~sq_trt.pipeline.context` (what one run shares between stages)
and :mod:`~sq_trt.pipeline.stages` (the recipe's stages and their adapters).
"""
