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
import errno
import glob
import hashlib
import hmac
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sq_trt.artifacts.interrupts import raise_if_interrupted
from sq_trt.artifacts.locking import hold_output, output_lock
from sq_trt.errors import ArtifactError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
# Optional HMAC of manifest.json, written and required only when SIGNING_KEY_ENV is set.
SIGNATURE_NAME = "manifest.sig"
SIGNING_KEY_ENV = "SQ_TRT_MANIFEST_KEY"

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


def signing_key() -> bytes | None:
    """The manifest signing key from ``$SQ_TRT_MANIFEST_KEY``, or None (manifests unsigned)."""
    key = os.environ.get(SIGNING_KEY_ENV)
    if key is not None and not key.strip():
        # An empty key would sign with a guessable secret, or (read as "unset") skip every check.
        raise ArtifactError(
            f"${SIGNING_KEY_ENV} is set but empty; set it to the secret key, or unset it to work unsigned"
        )
    return key.encode() if key else None


def sign_manifest(manifest_bytes: bytes, key: bytes) -> str:
    """HMAC-SHA256 of a manifest's bytes as ``hmac-sha256:<hex>``.

    A manifest lists the hash of every file, so signing it covers the whole artifact:
    without the key, a consistent forgery (edit a file, re-hash the manifest) is refused.
    """
    return "hmac-sha256:" + hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest()


def _check_signature(root: Path, manifest_bytes: bytes) -> None:
    key = signing_key()
    path = root / SIGNATURE_NAME
    if key is None:
        if path.exists() or path.is_symlink():
            raise ArtifactError(
                f"{root} is signed ({SIGNATURE_NAME}), but ${SIGNING_KEY_ENV} is unset, so the signature cannot "
                f"be checked; set the key it was signed with (or delete {SIGNATURE_NAME} to trust it unsigned)"
            )
        return
    if not path.is_file():
        raise ArtifactError(
            f"{root} has no {SIGNATURE_NAME}, but ${SIGNING_KEY_ENV} requires signed artifacts; "
            "rerun the stage that writes it with the key set"
        )
    try:
        stored = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is unreadable ({type(exc).__name__}); rerun the stage that writes it") from exc
    if not hmac.compare_digest(stored, sign_manifest(manifest_bytes, key)):
        raise ArtifactError(
            f"{root}: the manifest's signature does not match (edited, or signed with another key); "
            "rerun the stage that writes it"
        )


def _hash_tree(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in (MANIFEST_NAME, SIGNATURE_NAME):
            files[path.relative_to(root).as_posix()] = hash_file(path)
    return files


# Longest file name most file systems take (ext4, xfs, btrfs, tmpfs): 255 bytes.
_NAME_MAX = 255


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers from an earlier call in this process are never in use
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_siblings(final: Path) -> list[Path]:
    """Remove what an interrupted write of ``final`` left next to it; only names this module creates.

    ``.<name>.p<PID>.<random>.partial`` (the temp directory of :func:`atomic_dir`) and
    ``.<name>.old-<PID>`` (the previous artifact moved aside during the swap) whose
    process is gone: a SIGKILL between the two renames, or a kill during the write,
    leaves them behind and nothing else would ever delete them. Names written by
    older versions (``.<name>.<random>.partial``, no PID) are removed too.

    Returns:
        The paths removed.
    """
    if not final.parent.is_dir():
        return []
    name = re.escape(final.name)
    pattern = re.compile(rf"^\.{name}\.(?:p(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.partial$|^\.{name}\.old-(?P<old>\d+)$")
    removed: list[Path] = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        pid = match["pid"] or match["old"]
        if pid is not None and _pid_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def check_writable_output(path: str | os.PathLike[str], *, force: bool = True, what: str = "output") -> Path:
    """Refuse an output path the stage could not write, before any expensive work.

    Checks every name's length, that the nearest existing ancestor is a writable
    directory, and (without ``force``) that ``path`` does not exist yet.

    Raises:
        ArtifactError: The path exists without ``force``, an ancestor is a file, a
            name is longer than 255 bytes, or the directory is not writable.
    """
    final = Path(path)
    for part in final.parts:
        if len(os.fsencode(part)) > _NAME_MAX:
            raise ArtifactError(
                f"{what} {_short(str(final))}: the name {_short(part, 40)} is {len(os.fsencode(part))} bytes, "
                f"longer than the {_NAME_MAX} bytes file systems accept; choose a shorter name"
            )
    if final.exists() and not force:
        raise ArtifactError(f"{what} {final} already exists; pass --force to replace it")
    if final.exists() and not final.is_dir():
        raise ArtifactError(
            f"{what} {final} is an existing file, expected a directory (or nothing); remove it or pick another --out"
        )
    ancestor = final.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ArtifactError(
            f"{what} {final}: {ancestor} is a file, not a directory; pick an --out under a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ArtifactError(
            f"{what} {final}: directory {ancestor} is not writable; pick an --out you can write to"
        )
    return final


def os_error_message(exc: OSError, where: str | os.PathLike[str] | None = None) -> str:
    """One line for an operating-system error the user can fix (disk full, read-only, permissions)."""
    hints = {
        errno.ENOSPC: "free some disk space and rerun",
        errno.EDQUOT: "free some disk space (quota) and rerun",
        errno.EROFS: "the file system is read-only; pick an output on a writable one",
        errno.EACCES: "check the permissions or pick another path",
        errno.EPERM: "check the permissions or pick another path",
        errno.ENAMETOOLONG: "choose a shorter name",
        errno.ENOTDIR: "a component of the path is a file, not a directory",
        errno.EISDIR: "expected a file, found a directory",
        errno.ENOENT: "check the path",
    }
    target = where if where is not None else (exc.filename or "")
    hint = hints.get(exc.errno or -1, "check the path and the disk")
    return f"{exc.strerror or type(exc).__name__} ({_short(str(target))}); {hint}"


def _short(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, force: bool = True) -> Iterator[Path]:
    """Create a directory atomically: write into a temp sibling, rename into place on success.

    Leftovers of an earlier killed write of the same path are removed first
    (:func:`remove_stale_siblings`).

    Args:
        path: Final directory.
        force: Replace an existing directory at ``path``; when False it is an :class:`ArtifactError`.

    Yields:
        The temporary directory to write into. On error it is removed and any
        existing directory at ``path`` is left untouched.

    Raises:
        ArtifactError: ``path`` exists without ``force``, or it cannot be written (see
            :func:`check_writable_output`), or another process is writing it (see
            :mod:`sq_trt.artifacts.locking`).
    """
    check_writable_output(path, force=force)  # names and ancestors, before the lock file is created
    with output_lock(path), _atomic_dir_locked(path, force=force) as tmp:
        yield tmp


@contextlib.contextmanager
def _atomic_dir_locked(path: str | os.PathLike[str], *, force: bool) -> Iterator[Path]:
    """The body of :func:`atomic_dir`, under the destination's lock: existence is checked again here."""
    final = check_writable_output(path, force=force)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    try:
        tmp = _make_partial(final)
        yield tmp
        raise_if_interrupted()  # a Ctrl-C or SIGTERM that a library swallowed still drops the result
        if final.exists() and not force:
            # Only a writer that ignores the lock gets here; its result is never replaced.
            raise ArtifactError(f"output {final} appeared while this stage ran; it was kept, and this result dropped")
        if final.exists():
            # Move the old directory aside first so the swap never leaves a mix of both.
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        # By name, not by ``tmp``: a signal (Ctrl-C, SIGTERM) can land between mkdtemp and the assignment.
        _remove_own_partials(final)
        if old.exists() and not final.exists():
            os.replace(old, final)  # interrupted mid-swap: the previous artifact goes back
        raise


def _make_partial(final: Path) -> Path:
    """The temporary sibling ``.<name>.p<PID>.<random>.partial`` a write goes into (stale ones removed first)."""
    try:
        remove_stale_siblings(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.p{os.getpid()}.", suffix=".partial", dir=final.parent))
    except OSError as exc:
        raise ArtifactError(f"cannot write {final}: {os_error_message(exc)}") from exc


def _remove_own_partials(final: Path) -> None:
    """Remove this process's temporary siblings of ``final``."""
    with contextlib.suppress(OSError):
        for entry in final.parent.glob(f".{glob.escape(final.name)}.p{os.getpid()}.*.partial"):
            shutil.rmtree(entry, ignore_errors=True)


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
        text = manifest.to_json()
        (tmp / MANIFEST_NAME).write_text(text)
        key = signing_key()
        if key is not None:
            (tmp / SIGNATURE_NAME).write_text(sign_manifest(text.encode(), key) + "\n")


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
        manifest_bytes = manifest_path.read_bytes()
        _check_signature(root, manifest_bytes)
        raw = json.loads(manifest_bytes.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(
            f"{manifest_path} is not valid JSON ({_short(str(exc))}); rerun the stage that writes it"
        ) from exc
    except OSError as exc:
        raise ArtifactError(f"cannot read {manifest_path}: {os_error_message(exc)}") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{manifest_path} holds a {type(raw).__name__}, expected a JSON object")
    schema = raw.get("schema_version")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise ArtifactError(
            f"{manifest_path} has schema_version {_short(repr(schema), 40)}; this sq-trt reads schema {SCHEMA_VERSION}. "
            "Rerun the stage that writes it with this version"
        )
    try:
        manifest = Manifest(**raw)
    except TypeError as exc:
        raise ArtifactError(f"{manifest_path} has unexpected fields ({_short(str(exc))})") from exc
    _check_manifest_types(manifest, manifest_path)
    if stage is not None and manifest.stage != stage:
        raise ArtifactError(
            f"{root} was written by stage `{_short(manifest.stage, 60)}`, expected an artifact of stage `{stage}`"
        )
    if verify_files:
        verify_manifest_files(root, manifest)
    return manifest


# Field -> (expected type, its name in messages, type of the mapping's values or None).
_MANIFEST_TYPES: dict[str, tuple[type | tuple[type, ...], str, type | None]] = {
    "stage": (str, "a string", None),
    "config": (dict, "an object", None),
    "inputs": (dict, "an object of strings", str),
    "files": (dict, "an object of strings", str),
    "versions": (dict, "an object of strings", str),
    "extra": (dict, "an object", None),
    "created_unix": ((int, float), "a number", None),
}


def _check_manifest_types(manifest: Manifest, manifest_path: Path) -> None:
    """Refuse fields of the wrong JSON type, and file paths that leave the artifact directory."""
    for name, (kind, described, values) in _MANIFEST_TYPES.items():
        value = getattr(manifest, name)
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and values is not None:
            ok = all(isinstance(k, str) and isinstance(v, values) for k, v in value.items())
        if not ok:
            raise ArtifactError(
                f"{manifest_path}: field {name!r} holds {_short(repr(value), 60)}, expected {described}; "
                "the manifest is corrupt, rerun the stage that writes it"
            )
    for rel in manifest.files:
        if not is_confined(rel):
            raise ArtifactError(
                f"{manifest_path} lists file {_short(rel, 80)!r}, outside the artifact directory; "
                "a manifest may only name files inside its own directory. Rerun the stage that writes it"
            )


def is_confined(rel: str) -> bool:
    """Whether a manifest's file path stays inside its artifact directory (relative, no ``..``)."""
    if not rel or "\x00" in rel or "\\" in rel:
        return False
    parts = rel.split("/")
    return not rel.startswith("/") and all(part not in ("", ".", "..") for part in parts)


def verify_manifest_files(root: str | os.PathLike[str], manifest: Manifest, names: list[str] | None = None) -> None:
    """Re-hash the files a manifest lists (or only ``names``) and refuse any mismatch.

    Raises:
        ArtifactError: A listed file is missing, unreadable or changed, or a name is not listed.
    """
    root = Path(root)
    for rel in manifest.files if names is None else names:
        expected = manifest.files.get(rel)
        if expected is None:
            raise ArtifactError(
                f"{root}: file {_short(rel, 80)} is not listed in its manifest; it was not written by the stage. "
                "Rerun the stage that writes it"
            )
        file_path = root / rel
        if file_path.is_symlink() or not file_path.is_file():
            raise ArtifactError(f"{root}: file {rel} listed in the manifest is missing")
        _refuse_link_in_path(root, rel)
        try:
            actual = hash_file(file_path)
        except OSError as exc:
            raise ArtifactError(f"{root}: file {rel} cannot be read: {os_error_message(exc)}") from exc
        if actual != expected:
            raise ArtifactError(
                f"{root}: file {rel} has changed since the manifest was written ({actual} != {expected}); "
                "rerun the stage that writes it"
            )


def verified_parent_manifest(path: str | os.PathLike[str]) -> Manifest | None:
    """The manifest of the artifact directory holding file ``path``, once the file is checked against it.

    A file sitting in an artifact directory only inherits that artifact's identity
    when the manifest lists it with the same content: a tampered or foreign file
    would otherwise be recorded with the fingerprint of the artifact it replaced.
    Only ``path`` and the listed files named ``<path name>.*`` (ONNX external data)
    are re-hashed, never the whole directory.

    Returns:
        The manifest, or None when the directory has none.

    Raises:
        ArtifactError: The manifest is corrupt, does not list the file, or records other content.
    """
    file_path = Path(path)
    if not (file_path.parent / MANIFEST_NAME).is_file():
        _refuse_missing_manifest(file_path)
        return None
    try:
        manifest = load_manifest(file_path.parent)
    except ArtifactError as exc:
        raise ArtifactError(f"the artifact directory of {file_path.name} is unreadable: {exc}") from exc
    if file_path.name not in manifest.files:
        raise ArtifactError(
            f"{file_path} is not listed in the manifest of {file_path.parent}; it was not written by that "
            f"`{manifest.stage}` stage. Rewrite it with the stage, or move it out of the artifact directory"
        )
    names = sorted(n for n in manifest.files if n == file_path.name or n.startswith(file_path.name + "."))
    verify_manifest_files(file_path.parent, manifest, names)
    return manifest


def claim_output(
    path: str | os.PathLike[str],
    *,
    force: bool,
    what: str = "output",
    inputs: tuple[str | os.PathLike[str] | None, ...] = (),
) -> Path:
    """Check an output path and lock it for the rest of the command (one writer per output).

    The cheap checks of :func:`check_writable_output` run first (nothing is created for a
    path that cannot be written); then the destination's lock is taken
    (:func:`sq_trt.artifacts.locking.hold_output`, held until the CLI command ends) and the
    existence check runs again under it, so of two writers started together exactly one
    goes on.

    Args:
        path: The output.
        force: Whether an existing output may be replaced.
        what: What it is, for messages.
        inputs: The paths the command reads (``None`` for an unset flag): the output may not be,
            hold or sit inside any of them.

    Raises:
        ArtifactError: See :func:`check_writable_output`; an output overlapping an input; or
            another process holds the lock.
    """
    refuse_output_over_inputs(path, inputs, what=what)
    check_writable_output(path, force=force, what=what)
    hold_output(path, what=what)
    return check_writable_output(path, force=force, what=what)


def _refuse_link_in_path(root: Path, rel: str) -> None:
    """Refuse a listed file reached through a symbolic link (a directory inside the artifact pointing out of it)."""
    probe = root
    for part in rel.split("/"):
        probe = probe / part
        if probe.is_symlink():
            raise ArtifactError(
                f"{root}: {_short(rel, 80)} is reached through the symbolic link {probe.name}; an artifact's "
                "files must be its own. Rerun the stage that writes it"
            )


def _refuse_missing_manifest(file_path: Path) -> None:
    """With a signing key, or beside a lone signature: a file without its manifest is not trusted by path."""
    if (file_path.parent / SIGNATURE_NAME).exists():
        raise ArtifactError(
            f"{file_path.parent} has {SIGNATURE_NAME} but no {MANIFEST_NAME}: its manifest was removed. "
            "Rerun the stage that writes it"
        )
    if signing_key() is not None:
        raise ArtifactError(
            f"{file_path} is not in a signed sq-trt artifact (no {MANIFEST_NAME} beside it), and "
            f"${SIGNING_KEY_ENV} requires signed inputs; use the output of the stage that writes it, "
            "or unset the key to use foreign files"
        )


def verify_tree(root: str | os.PathLike[str], manifest: Manifest, prefix: str) -> Path:
    """Check that every file under ``root/prefix`` (a folder a consumer reads or copies whole) is listed and intact.

    A file added to the folder, a changed one, or any symbolic link (which could lead out of the
    artifact and into a served repository) is refused.

    Returns:
        ``root/prefix``.

    Raises:
        ArtifactError: As described; or the folder is not a plain directory.
    """
    base = Path(root) / prefix
    if base.is_symlink() or not base.is_dir():
        raise ArtifactError(f"{base} is not a directory of the artifact {root}; rerun the stage that writes it")
    names: list[str] = []
    for folder, dirs, files in os.walk(base):
        for entry in [*dirs, *files]:
            path = Path(folder) / entry
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise ArtifactError(
                    f"{root}: {_short(rel, 80)} is a symbolic link; an artifact's files must be its own. "
                    "Rerun the stage that writes it"
                )
            if path.is_file():
                names.append(rel)
    verify_manifest_files(root, manifest, sorted(names))
    return base


# Files only sq-trt artifacts hold: a directory with one of them but no manifest had it removed.
_ARTIFACT_MARKERS = ("act_scales.safetensors", "smoothing.safetensors")


def verify_model_dir(source: str) -> Manifest | None:
    """The check a model source gets when it is an sq-trt artifact directory (``torch:<dir>``, ``--model <dir>``).

    A directory with a manifest (or a signature) is verified like every other artifact
    (:func:`load_manifest` with ``verify_files``); one that holds sq-trt's own files without
    its manifest is refused when a signing key is set. Hub ids, ``demo``, ``tiny:`` and
    foreign model directories pass unchanged.

    Returns:
        The verified manifest, or None for a source that is not an sq-trt artifact.
    """
    root = Path(source)
    if not root.is_dir():
        return None
    if (root / MANIFEST_NAME).exists() or (root / SIGNATURE_NAME).exists():
        return load_manifest(root, verify_files=True)
    if signing_key() is not None and any((root / name).exists() for name in _ARTIFACT_MARKERS):
        raise ArtifactError(
            f"{root} holds sq-trt artifact files but no {MANIFEST_NAME}, and ${SIGNING_KEY_ENV} requires "
            "signed artifacts; rerun the stage that writes it"
        )
    return None


def refuse_output_over_inputs(
    path: str | os.PathLike[str], inputs: tuple[str | os.PathLike[str] | None, ...], *, what: str = "output"
) -> None:
    """Refuse an output that is, holds or sits inside one of the command's inputs (it would change that input).

    Only inputs that exist on disk count (a hub id or ``tiny:llama`` is no path); paths compare
    after resolving symbolic links.

    Raises:
        ArtifactError: Naming the output and the input.
    """
    target = Path(os.path.realpath(path))
    for given in inputs:
        if given is None or not str(given) or not Path(given).exists():
            continue
        source = Path(os.path.realpath(given))
        if target == source or source in target.parents or target in source.parents:
            raise ArtifactError(
                f"{what} {_short(str(path))} overlaps the input {_short(str(given))} (the same path, inside it, "
                "or holding it): writing it would change that input. Pick an output outside every input"
            )
