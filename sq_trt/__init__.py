"""sq-trt: SmoothQuant W8A8 INT8 deployment builder for TensorRT.

Stages (one module each) turn artifacts into artifacts:
calibrate -> smooth -> export -> build -> compare -> report.
"""

__version__ = "0.1.0"
