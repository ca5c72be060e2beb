"""Artifact directories and their ``manifest.json``: the contracts between stages.

Every stage writes its output into a directory with a manifest that records the
schema version, the stage, the resolved config, library versions, the hashes of
its inputs and of its own files. Directories are written under a temporary name
and renamed into place, so an interrupted run never leaves an artifact that a
later stage would trust. Loading refuses a manifest of another schema or stage,
and (when asked) files whose hashes do not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sq_trt.errors import ArtifactError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Libraries whose versions are worth recording in every manifest (if installed).
_TRACKED_LIBRARIES = (
    "sq-trt",
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "polygraphy",
    "tensorrt",
    "tensorrt-rtx-cu12-bindings",
    "triton",
)


def library_versions() -> dict[str, str]:
    """Versions of the tracked libraries that are installed."""
    versions: dict[str, str] = {}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hash_bytes(data: bytes) -> str:
    """SHA-256 of ``data`` as ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hash_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's content as ``sha256:<hex>``, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def hash_json(value: Any) -> str:
    """Stable hash of a JSON-serialisable value (sorted keys)."""
    return hash_bytes(json.dumps(value, sort_keys=True, default=str).encode())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@dataclass
class Manifest:
    """The ``manifest.json`` of one artifact directory."""

    stage: str
    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    created_unix: float = 0.0

    def to_json(self) -> str:
        """Serialise with sorted keys (stable diffs, stable hashes)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @property
    def fingerprint(self) -> str:
        """Hash identifying this artifact's content: stage, config, inputs and files."""
        return hash_json(
            {"stage": self.stage, "config": self.config, "inputs": self.inputs, "files": self.files}
        )


def _hash_tree(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            files[path.relative_to(root).as_posix()] = hash_file(path)
    return files


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, force: bool = True) -> Iterator[Path]:
    """Create a directory atomically: write into a temp sibling, rename into place on success.

    Args:
        path: Final directory.
        force: Replace an existing directory at ``path``; when False it is an :class:`ArtifactError`.

    Yields:
        The temporary directory to write into. On error it is removed and any
        existing directory at ``path`` is left untouched.
    """
    final = Path(path)
    if final.exists() and not force:
        raise ArtifactError(f"output {final} already exists; pass --force to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            # Move the old directory aside first so the swap never leaves a mix of both.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def artifact_dir(
    path: str | os.PathLike[str],
    *,
    stage: str,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    force: bool = True,
) -> Iterator[Path]:
    """Create an artifact directory atomically, with its manifest.

    Yields a temporary directory next to ``path``; the caller writes its files
    there. On normal exit the files are hashed, ``manifest.json`` is written and
    the directory is renamed to ``path`` (see :func:`atomic_dir`). On error
    nothing is kept and any existing artifact at ``path`` is left untouched.

    Args:
        path: Final artifact directory.
        stage: Name of the stage writing it (``"calibrate"``, ``"smooth"``...).
        config: Resolved config of the stage (JSON-serialisable).
        inputs: Name -> hash of every input the artifact depends on.
        extra: Stage-specific metadata for later stages.
        force: Replace an existing artifact at ``path``. When False, an existing
            directory is an :class:`ArtifactError`.

    Yields:
        The temporary directory to write into.
    """
    with atomic_dir(path, force=force) as tmp:
        yield tmp
        manifest = Manifest(
            stage=stage,
            config=dict(config or {}),
            inputs=dict(inputs or {}),
            files=_hash_tree(tmp),
            versions=library_versions(),
            extra=dict(extra or {}),
            created_unix=time.time(),
        )
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())


def load_manifest(
    path: str | os.PathLike[str], *, stage: str | None = None, verify_files: bool = False
) -> Manifest:
    """Read and validate an artifact directory's manifest.

    Args:
        path: The artifact directory.
        stage: If given, the stage that must have written it.
        verify_files: Re-hash every listed file and refuse on a mismatch.

    Returns:
        The manifest.

    Raises:
        ArtifactError: Missing directory or manifest, corrupt JSON, other schema
            version, other stage, missing or modified files.
    """
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} does not exist; run the stage that writes it first")
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{root} has no {MANIFEST_NAME}: it is not an sq-trt artifact or its write was interrupted; "
            "rerun the stage that writes it"
        )
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{manifest_path} is not valid JSON ({exc}); rerun the stage that writes it"
        ) from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{manifest_path} holds a {type(raw).__name__}, expected a JSON object")
    schema = raw.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ArtifactError(
            f"{manifest_path} has schema_version {schema!r}; this sq-trt reads schema {SCHEMA_VERSION}. "
            "Rerun the stage that writes it with this version"
        )
    try:
        manifest = Manifest(**raw)
    except TypeError as exc:
        raise ArtifactError(f"{manifest_path} has unexpected fields ({exc})") from exc
    if stage is not None and manifest.stage != stage:
        raise ArtifactError(
            f"{root} was written by stage `{manifest.stage}`, expected an artifact of stage `{stage}`"
        )
    if verify_files:
        for rel, expected in manifest.files.items():
            file_path = root / rel
            if not file_path.is_file():
                raise ArtifactError(f"{root}: file {rel} listed in the manifest is missing")
            actual = hash_file(file_path)
            if actual != expected:
                raise ArtifactError(
                    f"{root}: file {rel} has changed since the manifest was written ({actual} != {expected}); "
                    "rerun the stage that writes it"
                )
    return manifest
