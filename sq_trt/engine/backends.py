"""The TensorRT module that builds an engine, as a parameter: ``tensorrt`` or ``tensorrt_rtx``.

Both expose the same Python API for what the build stage uses (Builder,
OnnxParser, IBuilderConfig, strongly typed networks), so the builder is written
once against a :class:`Backend`. Where they differ, :class:`Backend` says so
explicitly instead of letting a call fail half-way:

* TensorRT proper (>= 10.12 for ``STRONGLY_TYPED`` with the features used here;
  11.x only builds strongly typed networks) needs a GPU to build, tunes kernels
  with a timing cache, and loads the sq-trt plugin (a Quickly Deployable Plugin).
* TensorRT-RTX 1.7 builds ahead of time on a CPU, targets a list of compute
  capabilities, has no build-time tuning: its timing-cache API is a deprecated
  no-op that forces a GPU query (so it is never called), and it cannot load the
  Python-defined plugin (no ``add_plugin_v3``; a Python IPluginV3 crashed its
  parser on CPU), so it builds plugin-free graphs only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from sq_trt.deps import require
from sq_trt.engine.gpu import visible_gpus
from sq_trt.errors import BuildError, MissingDependencyError

BackendName = Literal["tensorrt", "tensorrt_rtx"]
BACKEND_CHOICES = ("tensorrt", "tensorrt_rtx", "auto")
MIN_TENSORRT = (10, 12)
RTX_SERIES = (1, 7)

_RTX_HINT = (
    "install the `rtx` extra: pip install 'sq-trt[rtx]' (tensorrt-rtx-cu12-libs and "
    "tensorrt-rtx-cu12-bindings 1.7; they build engines on a CPU-only machine)"
)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True)
class Backend:
    """A TensorRT flavour and its module.

    Attributes:
        name: ``"tensorrt"`` or ``"tensorrt_rtx"``.
        trt: The imported TensorRT Python module (the same API for both).
        version: The module's ``__version__``.
    """

    name: BackendName
    trt: ModuleType
    version: str

    @property
    def is_rtx(self) -> bool:
        """True for TensorRT-RTX."""
        return self.name == "tensorrt_rtx"

    @property
    def supports_timing_cache(self) -> bool:
        """TensorRT proper tunes tactics and caches timings; TensorRT-RTX does not (no-op API)."""
        return not self.is_rtx

    @property
    def supports_plugins(self) -> bool:
        """Whether this backend can load the sq-trt per-token plugin."""
        return not self.is_rtx

    @property
    def needs_gpu_to_build(self) -> bool:
        """TensorRT proper builds on a GPU; TensorRT-RTX builds ahead of time on a CPU."""
        return not self.is_rtx

    def network_flags(self) -> int:
        """``create_network`` flags for a strongly typed network.

        TensorRT 10.x builds strongly typed only with ``STRONGLY_TYPED``; from 11 every
        network is strongly typed and the flag is deprecated (a later major may drop it),
        so it is passed to 10.x and TensorRT-RTX only, looked up by name.

        Raises:
            BuildError: A TensorRT 10.x / TensorRT-RTX without the flag.
        """
        if not self.is_rtx and _version_tuple(self.version)[:1] >= (11,):
            return 0
        flag = getattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if flag is None:
            raise BuildError(
                f"{self.name} {self.version} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED, which sq-trt "
                f"needs before TensorRT 11; use TensorRT >= {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]}"
            )
        return 1 << int(flag)

    def compute_capability_enum(self, capability: str) -> object:
        """``"8.9"`` -> ``trt.ComputeCapability.SM89`` (TensorRT-RTX only).

        Raises:
            BuildError: Not TensorRT-RTX, or a capability this TensorRT-RTX cannot target.
        """
        if not self.is_rtx:
            raise BuildError(
                f"compute capabilities {capability!r} were requested, but the `{self.name}` backend builds for "
                "the GPU it runs on; drop --compute-capability or use --backend tensorrt_rtx"
            )
        known = {
            name[2:]: member
            for name, member in self.trt.ComputeCapability.__members__.items()
            if name.startswith("SM")
        }
        key = capability.replace(".", "")
        if key not in known:
            choices = ", ".join(f"{k[:-1]}.{k[-1]}" for k in sorted(known, key=int))
            raise BuildError(
                f"compute capability {capability!r} is not a TensorRT-RTX {self.version} target; "
                f"expected one of {choices}"
            )
        return known[key]


def load_tensorrt() -> Backend:
    """Import TensorRT proper and check its version.

    Raises:
        MissingDependencyError: ``tensorrt`` is not importable (names the ``trt`` extra,
            NVIDIA's container and the ``tensorrt_rtx`` backend).
        BuildError: Its version is older than 10.12.
    """
    trt = require("tensorrt", "build")
    version = str(getattr(trt, "__version__", "0"))
    if _version_tuple(version)[:2] < MIN_TENSORRT:
        raise BuildError(
            f"TensorRT {version} is installed; sq-trt builds strongly typed networks and needs TensorRT >= "
            f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]}: upgrade (pip install 'sq-trt[trt]'), use NVIDIA's "
            "container (see docker/README.md), or use --backend tensorrt_rtx"
        )
    return Backend("tensorrt", trt, version)


def load_tensorrt_rtx() -> Backend:
    """Import TensorRT-RTX (``tensorrt_rtx_libs`` loads the shared libraries first).

    Raises:
        MissingDependencyError: The TensorRT-RTX wheels are not installed.
    """
    try:
        importlib.import_module("tensorrt_rtx_libs")
        trt = importlib.import_module("tensorrt_rtx_bindings")
    except ImportError as exc:
        raise MissingDependencyError(
            f"stage `build` with --backend tensorrt_rtx needs TensorRT-RTX, which is not importable ({exc}); "
            + _RTX_HINT
        ) from exc
    version = str(getattr(trt, "__version__", "0"))
    if _version_tuple(version)[:2] != RTX_SERIES:
        raise BuildError(
            f"TensorRT-RTX {version} is installed; sq-trt is tested with {RTX_SERIES[0]}.{RTX_SERIES[1]}.x: "
            + _RTX_HINT
        )
    return Backend("tensorrt_rtx", trt, version)


def select_backend(name: str) -> tuple[Backend, str]:
    """Resolve ``--backend`` to a loaded backend.

    ``auto`` takes TensorRT proper when it is importable and a GPU is visible,
    else TensorRT-RTX.

    Args:
        name: ``"tensorrt"``, ``"tensorrt_rtx"`` or ``"auto"``.

    Returns:
        The backend and a sentence saying why it was chosen (to print).

    Raises:
        BuildError: An unknown name.
        MissingDependencyError: The requested backend is not installed.
    """
    if name == "tensorrt":
        return load_tensorrt(), "backend tensorrt (requested)"
    if name == "tensorrt_rtx":
        return load_tensorrt_rtx(), "backend tensorrt_rtx (requested)"
    if name != "auto":
        raise BuildError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_CHOICES)}")
    gpus = visible_gpus()
    try:
        backend = load_tensorrt()
    except MissingDependencyError as exc:
        reason = f"`tensorrt` is not importable ({exc.__cause__})"
    except BuildError as exc:
        reason = str(exc).split(";")[0]
    else:
        if gpus:
            return (
                backend,
                f"backend tensorrt {backend.version} (auto: importable, GPU {gpus[0].name} visible)",
            )
        reason = "`tensorrt` is importable but no GPU is visible"
    rtx = load_tensorrt_rtx()
    return rtx, f"backend tensorrt_rtx {rtx.version} (auto: {reason})"
