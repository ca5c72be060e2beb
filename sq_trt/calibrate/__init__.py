"""Stage ``calibrate``: activation ranges of every quantizable linear (:mod:`~sq_trt.calibrate.stage`)."""
