"""What GPU this process sees, asked of the CUDA driver directly.

The build stage must know whether a GPU is present (``--backend auto``, TensorRT
proper needs one) and which one (the engine manifest records its name and
compute capability) without importing torch's CUDA build or TensorRT. The CUDA
driver API (``libcuda.so.1``) answers both and is present wherever a GPU is
usable; where it is missing or reports no device, there is no GPU.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

# CUdevice_attribute values from cuda.h.
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76


@dataclass(frozen=True)
class GpuInfo:
    """One visible CUDA device."""

    index: int
    name: str
    compute_capability: str  # "9.0"


def _driver() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    if lib.cuInit(0) != 0:
        return None
    return lib


def visible_gpus() -> list[GpuInfo]:
    """The CUDA devices visible to this process (empty on a CPU-only machine)."""
    lib = _driver()
    if lib is None:
        return []
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    gpus = []
    for index in range(count.value):
        device = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(device), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, len(name), device)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device)
        gpus.append(GpuInfo(index, name.value.decode(errors="replace"), f"{major.value}.{minor.value}"))
    return gpus
