"""The engine manifest: what ``engines/<name>/manifest.json`` records for each ``<target>.plan``.

One engine directory holds the engines of one model variant for several targets
(``rtx.plan``, ``h100.plan``); its manifest (written by
:func:`sq_trt.artifacts.artifact_dir`, stage ``build``) carries one
:class:`EngineRecord` per target under ``extra["engines"][<target>]``, and the
source ONNX hash of each under ``inputs["<target>.onnx"]``. Later stages
(``export-triton``, ``compare``) read a record back with :func:`load_engine_record`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sq_trt.artifacts import Manifest, load_manifest
from sq_trt.errors import ArtifactError

STAGE = "build"

# TensorRT DataType member name -> the numpy-style name recorded in manifests.
DTYPE_NAMES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "FP8": "float8e4m3",
    "INT4": "int4",
    "FP4": "float4e2m1",
}


def dtype_name(trt_dtype: object) -> str:
    """``trt.DataType.HALF`` -> ``"float16"`` (unknown members keep their lower-case name)."""
    member = str(trt_dtype).rsplit(".", 1)[-1]
    return DTYPE_NAMES.get(member, member.lower())


@dataclass
class IoTensor:
    """One engine input or output."""

    name: str
    mode: str  # "input" | "output"
    dtype: str
    shape: list[int]  # -1 = dynamic


@dataclass
class EngineRecord:
    """Everything recorded about one built ``.plan``.

    Attributes:
        target: The ``.plan``'s stem.
        plan: File name of the engine inside the directory.
        plan_bytes: Its size.
        backend: ``tensorrt`` or ``tensorrt_rtx``.
        backend_version: The TensorRT / TensorRT-RTX version that built it.
        gpu_target: For TensorRT-RTX ``{"compute_capabilities": [...]}`` (``"default"`` = its
            default set); for TensorRT the device it was built on (name, compute capability).
        profiles: Optimization profiles, in engine order (profile *i* is Triton's profile "i").
        io: Inputs and outputs with dtypes and shapes.
        io_source: ``"engine"`` (read from the deserialized engine) or ``"network"`` (the
            parsed network, when this machine cannot deserialize: TensorRT-RTX on a CPU).
        plugins: Plugin nodes compiled in (name, version, namespace, count).
        source_onnx: Path of the ONNX it was built from.
        source_onnx_sha256: That ONNX's content hash.
        calibration_hash: The calibration hash from the ONNX's export manifest (None if absent).
        export_manifest: Stage and fingerprint of the ONNX's artifact directory (empty if none).
        builder: Settings that shaped the build (optimization level, workspace, timing cache...).
        build_seconds: Wall time of the TensorRT build call.
        layer_info: Engine-inspector summary, or why it is unavailable.
    """

    target: str
    plan: str
    plan_bytes: int
    backend: str
    backend_version: str
    gpu_target: dict[str, Any]
    profiles: list[dict[str, Any]]
    io: list[IoTensor]
    io_source: str
    plugins: list[dict[str, Any]]
    source_onnx: str
    source_onnx_sha256: str
    calibration_hash: str | None
    export_manifest: dict[str, str]
    builder: dict[str, Any]
    build_seconds: float
    layer_info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in the manifest."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EngineRecord:
        """Inverse of :meth:`to_json`; raises ``TypeError``/``KeyError`` on a malformed record."""
        data = dict(raw)
        data["io"] = [IoTensor(**tensor) for tensor in data["io"]]
        return cls(**data)

    @property
    def inputs(self) -> list[IoTensor]:
        """The engine's inputs."""
        return [t for t in self.io if t.mode == "input"]

    @property
    def outputs(self) -> list[IoTensor]:
        """The engine's outputs."""
        return [t for t in self.io if t.mode == "output"]


REQUIRED_FIELDS = tuple(f.name for f in dataclasses.fields(EngineRecord))


def engine_records(manifest: Manifest) -> dict[str, EngineRecord]:
    """Every target's record in an engine directory's manifest.

    Raises:
        ArtifactError: A record is malformed.
    """
    records = {}
    engines = manifest.extra.get("engines", {})
    if not isinstance(engines, dict):
        raise ArtifactError(
            f"engine manifest field 'engines' is a {type(engines).__name__}, expected an object; "
            "rebuild it with `sq-trt build --force`"
        )
    for target, raw in engines.items():
        try:
            records[target] = EngineRecord.from_json(raw)
        except (TypeError, KeyError) as exc:
            raise ArtifactError(
                f"engine manifest entry {target!r} is malformed ({exc}); rebuild it with `sq-trt build --force`"
            ) from exc
    return records


def load_engine_record(engine_dir: str | Path, target: str, *, verify: bool = True) -> EngineRecord:
    """Read one target's record (and check its ``.plan`` is the one that was built).

    Raises:
        ArtifactError: Not an engine directory, no such target, or a modified/missing plan.
    """
    manifest = load_manifest(engine_dir, stage=STAGE, verify_files=verify)
    records = engine_records(manifest)
    if target not in records:
        raise ArtifactError(
            f"{engine_dir} has no engine for target {target!r} (targets: {sorted(records) or 'none'}); "
            "build it with `sq-trt build --target ...`"
        )
    record = records[target]
    if record.plan not in manifest.files:
        # The plan a consumer copies or loads must be a file of this artifact, listed (and, with
        # verify, hash-checked): never a path the record points elsewhere (``../../x``).
        raise ArtifactError(
            f"{engine_dir}: target {target!r} names plan {str(record.plan)[:80]!r}, which the manifest does not "
            "list; rebuild it with `sq-trt build --force`"
        )
    return record
