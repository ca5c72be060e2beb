"""Text generation with a KV cache: one decode loop over ONNX Runtime, PyTorch and TensorRT runners.

``loop.generate`` is the only decode loop: ``sq-trt generate``, the accuracy
metrics and the Triton Python-backend model all call it with a runner from
``runners`` (ONNX Runtime, PyTorch) or ``trt_runner`` (TensorRT engines).
"""
