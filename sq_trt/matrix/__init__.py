"""``sq-trt matrix``: models x GPU targets x INT8 candidates, built and compared on a Ray cluster.

The matrix recipe (:mod:`.config`) names pipeline recipes (the models), targets (a TensorRT
backend and how Ray places a task on a node of that GPU kind) and the candidates and gate shared
by every model. :mod:`.plan` expands it into one front-end job per model (calibrate, smooth,
export) and one cell per (model, candidate, target) (build, compare, report), each keyed by the
content hash of the pipeline stages it runs. :mod:`.tasks` runs them as Ray tasks that publish
their artifacts to a shared fsspec store (:mod:`.store`); :mod:`.stage` drives the run, shows the
live table and writes the matrix report (:mod:`.report`). Every pipeline import goes through
:mod:`.pipeline_adapter`.
"""
