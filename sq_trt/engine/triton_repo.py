"""A Triton Inference Server model repository for a built engine.

Layout (Triton's TensorRT backend, platform ``tensorrt_plan``)::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/1/model.plan

The config is generated from the engine manifest (never from file names): I/O
names, dtypes and dims exactly as the engine has them, dynamic dims as ``-1``,
``max_batch_size: 0`` because the batch is an explicit dimension of every
tensor, and an instance group listing the engine's optimization profiles
(TensorRT names profile *i* ``"i"``). Triton's TensorRT backend loads engines of
TensorRT proper built with the same TensorRT version as the server; a
TensorRT-RTX engine is refused.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sq_trt.artifacts import atomic_dir
from sq_trt.deps import require
from sq_trt.engine.engine_manifest import EngineRecord, IoTensor, load_engine_record
from sq_trt.engine.releases import serving_release
from sq_trt.errors import ArtifactError

if TYPE_CHECKING:
    from google.protobuf.message import Message

TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float32": "TYPE_FP32",
}


@dataclass(frozen=True)
class TritonModel:
    """What :func:`write_model_repository` wrote and how to serve it."""

    model_dir: Path
    config_path: Path
    plan_path: Path
    serve_command: str


def model_config_module() -> ModuleType:
    """Triton's own ``ModelConfig`` protobuf module (``tritonclient``, the ``serve`` extra)."""
    return require("tritonclient.grpc.model_config_pb2", "export-triton")


def config_text(config: Message) -> str:
    """A ``ModelConfig`` as ``config.pbtxt``: protobuf's text serializer escapes every string, so no
    name (a model name with a quote and a newline, a tensor name from a manifest) can add a field."""
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    # proto3 omits a zero; Triton reads an absent max_batch_size as 0 too, but the file should say it.
    return ("max_batch_size: 0\n" + text) if getattr(config, "max_batch_size", None) == 0 else text


def check_model_name(name: str) -> None:
    """Refuse a Triton model name that is not a plain directory name (no path, no control characters).

    Raises:
        ArtifactError: Naming what is wrong.
    """
    if not name or "/" in name or "\\" in name or name.startswith(".") or not name.isprintable():
        raise ArtifactError(
            f"Triton model name must be a plain directory name (no '/', no leading '.', no control "
            f"characters), got {name[:80]!r}"
        )


def add_tensor(field: Any, tensor: IoTensor) -> None:
    """One ``input``/``output`` entry with the engine's name, dtype and dims (dynamic = -1)."""
    if tensor.dtype not in TRITON_DTYPES:
        raise ArtifactError(
            f"engine tensor {tensor.name[:80]!r} has dtype {tensor.dtype!r:.40}, which Triton's config cannot "
            f"express (supported: {', '.join(TRITON_DTYPES)})"
        )
    entry = field.add(name=tensor.name, dims=[int(d) for d in tensor.shape])
    entry.data_type = model_config_module().DataType.Value(TRITON_DTYPES[tensor.dtype])


def render_config(name: str, record: EngineRecord, *, instances: int = 1) -> str:
    """The ``config.pbtxt`` text for ``record`` served as model ``name`` (through Triton's ``ModelConfig``)."""
    pb = model_config_module()
    config = pb.ModelConfig(name=name, platform="tensorrt_plan", max_batch_size=0)
    for tensor in record.inputs:
        add_tensor(config.input, tensor)
    for tensor in record.outputs:
        add_tensor(config.output, tensor)
    group = config.instance_group.add(count=instances, profile=[str(i) for i in range(len(record.profiles))])
    group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_GPU")
    config.version_policy.latest.num_versions = 1
    return config_text(config)


def serve_command(repo: Path, release: str) -> str:
    """The ``docker run ... tritonserver`` command that serves ``repo``."""
    repo_abs = repo.resolve()
    return (
        f"docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo_abs}:/models "
        f"nvcr.io/nvidia/tritonserver:{release}-py3 tritonserver --model-repository=/models"
    )


def write_model_repository(
    engine_dir: str | Path,
    target: str,
    repo: str | Path,
    name: str,
    *,
    instances: int = 1,
    release: str | None = None,
    force: bool = False,
) -> TritonModel:
    """Write ``<repo>/<name>/{config.pbtxt,1/model.plan}`` for one built engine, atomically.

    Args:
        engine_dir: ``engines/<name>`` written by the build stage.
        target: Which ``.plan`` in it.
        repo: The model repository root (created if missing).
        name: Triton model name.
        instances: Instances per GPU.
        release: Triton container release (``yy.mm``); default: the one the engine was built in,
            else the newest release known to carry the engine's TensorRT
            (:func:`sq_trt.engine.releases.serving_release`).
        force: Replace an existing ``<repo>/<name>``.

    Raises:
        ArtifactError: No such engine, a TensorRT-RTX engine, a server release whose TensorRT
            is not the engine's, an existing model without ``force``, or a dtype Triton cannot express.
    """
    check_model_name(name)
    if instances < 1:
        raise ArtifactError(f"--instances must be >= 1, got {instances}")
    record = load_engine_record(engine_dir, target)
    if record.backend != "tensorrt":
        raise ArtifactError(
            f"engine {Path(engine_dir) / record.plan} was built by {record.backend} {record.backend_version}; "
            "Triton's tensorrt_plan backend loads TensorRT engines built by the same TensorRT version as the "
            "server: rebuild with --backend tensorrt (docker/README.md) and export that target"
        )
    # Refuse before writing anything: a server whose TensorRT differs cannot load the engine.
    chosen = serving_release(
        record.backend_version, built_in=record.builder.get("container_release"), requested=release
    )
    config = render_config(name, record, instances=instances)
    repo_root = Path(repo)
    final = repo_root / name
    if final.exists() and not force:
        raise ArtifactError(f"Triton model {final} already exists; pass --force to replace it")
    with atomic_dir(final, force=force) as tmp:
        (tmp / "config.pbtxt").write_text(config)
        (tmp / "1").mkdir()
        shutil.copy2(Path(engine_dir) / record.plan, tmp / "1" / "model.plan")
    return TritonModel(
        final, final / "config.pbtxt", final / "1" / "model.plan", serve_command(repo_root, chosen)
    )
