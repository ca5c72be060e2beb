"""Quantization: the PyTorch W8A8 reference (numerical ground truth)."""
