"""Which NVIDIA container release carries which TensorRT, so an engine is served by the TensorRT that built it.

A serialized TensorRT engine loads only in the TensorRT version that built it
(TensorRT's developer guide, "Version Compatibility": engines are tied to the
exact TensorRT version unless built version-compatible, which sq-trt does not
do). NVIDIA's monthly containers of one release (``nvcr.io/nvidia/tensorrt:<yy.mm>-py3``,
``nvcr.io/nvidia/tritonserver:<yy.mm>-py3``) are built on one software stack and
carry the same TensorRT, so the server release must be the build container's,
or one whose TensorRT is the same version.

Inside NVIDIA's TensorRT container, ``NVIDIA_TENSORRT_VERSION`` holds the container
release (its entry banner prints ``NVIDIA Release ${NVIDIA_TENSORRT_VERSION}``) and
``TENSORRT_VERSION`` the library version; sq-trt's own image sets
``SQ_TRT_CONTAINER_RELEASE`` (docker/Dockerfile).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from sq_trt.errors import ArtifactError

# tritonserver `<release>-py3` -> the TensorRT version it ships (major.minor.patch), for releases whose
# TensorRT sq-trt supports (>= 10.12). Source: NVIDIA's Deep Learning Frameworks Support Matrix
# (https://docs.nvidia.com/deeplearning/frameworks/support-matrix/index.html) and the per-release notes
# (https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-<yy>-<mm>.html);
# 25.10 = CUDA 13.0.2 + TensorRT 10.13.3 (DESIGN.md, from NVIDIA's container notes; the Triton 25.10
# notes give CUDA 13.0.2.006). Only releases read from those pages belong here: a wrong entry would
# refuse a good pairing or accept a bad one. An unlisted release is refused unless it is the build's own.
TRITON_TENSORRT: Mapping[str, str] = {
    "25.10": "10.13.3",
}
# The release docker/Dockerfile builds on (its TRT_RELEASE); tests keep the two equal.
BUILD_CONTAINER_RELEASE = "25.10"
CONTAINER_RELEASE_ENV = ("SQ_TRT_CONTAINER_RELEASE", "NVIDIA_TENSORRT_VERSION")
_RELEASE = re.compile(r"\d{2}\.\d{2}")


def container_release(environ: Mapping[str, str] | None = None) -> str | None:
    """The NVIDIA container release this process runs in (``"25.10"``), or None outside one."""
    env = os.environ if environ is None else environ
    for name in CONTAINER_RELEASE_ENV:
        value = env.get(name, "").strip()
        if _RELEASE.fullmatch(value):
            return value
    return None


def _same_build(tensorrt: str, shipped: str) -> bool:
    """Whether ``tensorrt`` (``10.13.3.9``) is the ``major.minor.patch`` a release ships."""
    return tensorrt.split(".")[:3] == shipped.split(".")[:3]


def serving_release(tensorrt: str, *, built_in: str | None, requested: str | None) -> str:
    """The tritonserver release that can load an engine built by TensorRT ``tensorrt``.

    Args:
        tensorrt: The TensorRT version recorded in the engine manifest.
        built_in: The container release the engine was built in (manifest), if any.
        requested: ``--triton-release``, if given.

    Returns:
        ``requested`` when it carries the engine's TensorRT (or is the build's own
        release), else the build's release, else the newest listed release with that TensorRT.

    Raises:
        ArtifactError: The requested release carries another TensorRT, or no release is
            known to carry this one; the message names both versions and what to do.
    """
    matching = sorted(r for r, v in TRITON_TENSORRT.items() if _same_build(tensorrt, v))
    if requested is not None:
        if not _RELEASE.fullmatch(requested):
            raise ArtifactError(f"--triton-release must be a release like 25.10, got {requested!r}")
        shipped = TRITON_TENSORRT.get(requested)
        if requested == built_in or (shipped is not None and _same_build(tensorrt, shipped)):
            return requested
        carries = f"carries TensorRT {shipped}" if shipped else "is not in sq-trt's release table"
        hint = f"use --triton-release {matching[-1]}" if matching else "rebuild the engine in that release"
        raise ArtifactError(
            f"tritonserver {requested}-py3 {carries}, but the engine was built by TensorRT {tensorrt} "
            f"(container release {built_in or 'unknown'}); an engine loads only in the TensorRT that built it: "
            f"{hint}"
        )
    if built_in is not None:
        shipped = TRITON_TENSORRT.get(built_in)
        if shipped is not None and not _same_build(tensorrt, shipped):
            raise ArtifactError(
                f"the engine records container release {built_in}, which ships TensorRT {shipped}, but "
                f"TensorRT {tensorrt} built it; pass --triton-release with a release that carries {tensorrt}"
            )
        return built_in
    if matching:
        return matching[-1]
    listed = ", ".join(f"{r} (TensorRT {v})" for r, v in sorted(TRITON_TENSORRT.items()))
    raise ArtifactError(
        f"no tritonserver release is known to carry TensorRT {tensorrt}, which built this engine outside "
        f"NVIDIA's containers; known: {listed}. Rebuild it in nvcr.io/nvidia/tensorrt:<release>-py3 of one "
        "of them (docker/README.md) and export that engine"
    )
