"""Run the AOT PTX of the GEMM plugins through the CUDA driver API, as TensorRT launches it.

The GPU tests and ``bench/bench_gemm_plugin.py`` must time and check the PTX a TensorRT engine
embeds, not Triton's JIT variant of the same kernel: the JIT specializes on the launch arguments
(16-byte alignment of pointers and sizes) on its own, so it can be fast while the AOT PTX is not.
This module loads the PTX that :func:`sq_trt.plugins.gemm.compile_variant` returns (the function the
plugin's ``aot_impl`` calls) with ``cuModuleLoadData`` and launches it with ``cuLaunchKernel``:
the same grid, block, dynamic shared memory and argument order as TensorRT's AOT launcher
(input pointers, ``M, N, K`` as int32, the output pointer).

Needs a GPU, torch with CUDA (for the tensors and the primary context) and NVIDIA's
``cuda-bindings`` (``pip install cuda-bindings``); imports them only when called.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sq_trt.errors import SqTrtError


class DriverError(SqTrtError):
    """A CUDA driver call failed, or the driver API is not available."""


def _driver() -> Any:
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        raise DriverError(
            "running AOT PTX needs NVIDIA's cuda-bindings (pip install cuda-bindings) and a GPU"
        ) from exc
    return driver


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-bindings ``(CUresult, *values)`` tuple, raising on an error code."""
    driver = _driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise DriverError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass
class PtxKernel:
    """One kernel of a PTX module loaded into the current CUDA context."""

    name: str
    function: Any
    module: Any
    block_x: int
    shared_mem: int

    @classmethod
    def load(cls, ptx: str | bytes, name: str, *, num_warps: int, shared_mem: int) -> PtxKernel:
        """JIT-assemble ``ptx`` with the driver (as TensorRT does when the engine loads) and find ``name``.

        Raises:
            DriverError: No driver API, or the driver refused the PTX (e.g. its ISA is newer than the driver).
        """
        import torch

        driver = _driver()
        torch.cuda.init()  # torch's primary context becomes current on this thread
        text = ptx.encode() if isinstance(ptx, str) else ptx
        module = _check(driver.cuModuleLoadData(text + b"\0"), "cuModuleLoadData")
        function = _check(driver.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name})")
        if shared_mem > 48 * 1024:
            attribute = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            _check(driver.cuFuncSetAttribute(function, attribute, shared_mem), "cuFuncSetAttribute")
        return cls(name, function, module, 32 * num_warps, shared_mem)

    def launch(self, grid_x: int, args: Sequence[tuple[int, str]], stream: int = 0) -> None:
        """Launch on ``stream`` (a ``cudaStream_t`` as an int; 0 = the legacy default stream).

        Args:
            grid_x: Programs in the 1-D grid.
            args: ``(value, kind)`` per kernel parameter, ``kind`` ``"ptr"`` (device address) or ``"i32"``.
            stream: The stream handle.
        """
        driver = _driver()
        values = tuple(v for v, _ in args)
        types = tuple(ctypes.c_void_p if kind == "ptr" else ctypes.c_int32 for _, kind in args)
        _check(
            driver.cuLaunchKernel(
                self.function, grid_x, 1, 1, self.block_x, 1, 1, self.shared_mem,
                driver.CUstream(stream), (values, types), 0,
            ),
            f"cuLaunchKernel({self.name})",
        )  # fmt: skip


def gemm_grid(m: int, n: int, block_m: int, block_n: int) -> int:
    """The GEMM plugin's grid: ``max(cdiv(M, BLOCK_M), 1) * cdiv(N, BLOCK_N)`` (``qdp_gemm.launch``)."""
    return max(1, -(-m // block_m)) * -(-n // block_n)


def run_gemm(
    kernel: PtxKernel, tile: Any, inputs: Sequence[Any], y: Any, m: int, n: int, k: int, stream: int = 0
) -> None:
    """Launch a GEMM plugin's PTX on torch CUDA tensors in TensorRT's argument order.

    Args:
        kernel: The loaded variant.
        tile: Its :class:`sq_trt.plugins.gemm.TileConfig`.
        inputs: The five input tensors (``x_q, amax, weight, w_scale, bias`` for W8A8Gemm;
            ``x, smooth, weight, w_scale, bias`` for QuantW8A8Gemm), contiguous.
        y: The output tensor ``[M, N]``.
        m, n, k: The GEMM's sizes.
        stream: The stream handle.
    """
    args = [(t.data_ptr(), "ptr") for t in inputs] + [
        (m, "i32"),
        (n, "i32"),
        (k, "i32"),
        (y.data_ptr(), "ptr"),
    ]
    kernel.launch(gemm_grid(m, n, tile.block_m, tile.block_n), args, stream)
