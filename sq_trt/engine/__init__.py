"""The build stage: ONNX -> strongly typed TensorRT / TensorRT-RTX network -> ``.plan`` + engine manifest.

Modules, one concern each:

* :mod:`~sq_trt.engine.backends` — which TensorRT module builds (``tensorrt`` or
  ``tensorrt_rtx``), its version and what it can do;
* :mod:`~sq_trt.engine.gpu` — what GPU (if any) this process sees, via the CUDA driver;
* :mod:`~sq_trt.engine.profiles` — optimization profiles (min/opt/max) and their validation;
* :mod:`~sq_trt.engine.recipe` — the validated build settings, from a YAML recipe and CLI flags;
* :mod:`~sq_trt.engine.source` — what the ONNX holds (plugin nodes, inputs, its export manifest);
* :mod:`~sq_trt.engine.builder` — the build itself and the atomic engine directory;
* :mod:`~sq_trt.engine.engine_manifest` — the engine manifest schema, read back by later stages;
* :mod:`~sq_trt.engine.inspect` — layer information from TensorRT's engine inspector;
* :mod:`~sq_trt.engine.triton_repo` — a Triton Inference Server model repository for a built engine.
"""
