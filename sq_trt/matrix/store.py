"""The shared artifact store: directories published under their content key, on any fsspec filesystem.

Layout under the store URL (a local directory, ``s3://bucket/prefix``, ``gs://...``, an NFS path)::

    objects/<kind>/<key>/<upload>/...   the files of one upload (a fresh name per upload)
    index/<kind>/<key>.json             the commit: which upload, and every file's size and sha256

An upload is invisible until its index entry is written, and that entry is written last, in one
step (a rename on a local filesystem, a single object put on object stores). A task killed while
uploading leaves an ``objects`` folder no index names, which nothing trusts. Reading an entry
checks every file against its recorded hash; an entry that fails (a missing, truncated or altered
file) is refused with its reason, its index entry is dropped, and the caller rebuilds it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec

from sq_trt.errors import ArtifactError
from sq_trt.matrix.pipeline_adapter import hash_file

INDEX_SCHEMA = 1


class StoreRefused(ArtifactError):
    """A store entry exists but does not hold what its index says (it is not trusted)."""


def _key_name(key: str) -> str:
    return key.removeprefix("sha256:")


class ArtifactStore:
    """Publish and fetch directories by content key (see the module docstring).

    Args:
        url: fsspec URL or local path of the store root.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url)
        self.fs: Any = fs
        self.root = root.rstrip("/")
        self.local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))

    def _index(self, kind: str, key: str) -> str:
        return f"{self.root}/index/{kind}/{_key_name(key)}.json"

    def entry(self, kind: str, key: str) -> dict[str, Any] | None:
        """The index entry of ``key`` (None: never published, or an unreadable entry)."""
        try:
            with self.fs.open(self._index(kind, key), "rb") as handle:
                entry = json.loads(handle.read())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        ok = isinstance(entry, dict) and entry.get("schema") == INDEX_SCHEMA and entry.get("key") == key
        return entry if ok and isinstance(entry.get("files"), dict) else None

    def verify(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry's metadata when every file it lists is present with its recorded hash, else None.

        A refused entry's index is dropped (so it is rebuilt) and the reason returned in
        ``{"refused": reason}`` instead.
        """
        entry = self.entry(kind, key)
        if entry is None:
            return None
        try:
            for rel, (size, digest) in entry["files"].items():
                self._check_file(entry, rel, size, digest)
        except StoreRefused as exc:
            self.drop(kind, key)
            return {"refused": str(exc)}
        meta: dict[str, Any] = entry.get("meta") or {}
        return meta

    def _object(self, entry: dict[str, Any], rel: str) -> str:
        return f"{self.root}/objects/{entry['kind']}/{_key_name(entry['key'])}/{entry['upload']}/{rel}"

    def _check_file(self, entry: dict[str, Any], rel: str, size: int, digest: str) -> None:
        path = self._object(entry, rel)
        try:
            actual = self.fs.size(path)
        except FileNotFoundError:
            raise StoreRefused(f"{entry['kind']} {entry['key'][:19]}: {rel} is missing") from None
        if actual != size:
            raise StoreRefused(f"{entry['kind']} {entry['key'][:19]}: {rel} has {actual} bytes, the index says {size}")
        if self.local:
            found = hash_file(path)
        else:
            with self.fs.open(path, "rb") as handle:
                found = _hash_stream(handle)
        if found != digest:
            raise StoreRefused(f"{entry['kind']} {entry['key'][:19]}: {rel} does not match its sha256 in the index")

    def drop(self, kind: str, key: str) -> None:
        """Forget an entry (its index; the upload's files stay until the store is cleaned)."""
        try:
            self.fs.rm(self._index(kind, key))
        except FileNotFoundError:
            pass

    def publish(self, kind: str, key: str, local: Path, names: Sequence[str], meta: dict[str, Any]) -> None:
        """Upload ``names`` (files or directories under ``local``) as ``key``, then commit its index entry."""
        upload = uuid.uuid4().hex
        files: dict[str, list[Any]] = {}
        for name in names:
            top = local / name
            paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            for path in paths:
                rel = path.relative_to(local).as_posix()
                files[rel] = [path.stat().st_size, hash_file(path)]
        entry = {"schema": INDEX_SCHEMA, "kind": kind, "key": key, "upload": upload, "files": files, "meta": meta}
        for rel in files:
            target = self._object(entry, rel)
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(local / rel), target)
        self._commit(self._index(kind, key), json.dumps(entry, indent=1, sort_keys=True).encode())

    def _commit(self, path: str, data: bytes) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if not self.local:
            self.fs.pipe_file(path, data)  # one object put: visible whole or not at all
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def fetch(self, kind: str, key: str, dest: Path, only: Sequence[str] = ()) -> dict[str, Any]:
        """Copy an entry's files (those under the ``only`` prefixes, or all) into ``dest``, each verified.

        Returns:
            The entry's metadata.

        Raises:
            StoreRefused: The entry is absent, or a file is missing or altered (its index is dropped).
        """
        entry = self.entry(kind, key)
        if entry is None:
            raise StoreRefused(f"{kind} {key[:19]} is not in the store {self.url}")
        try:
            for rel, (size, digest) in entry["files"].items():
                if only and not any(rel == p.rstrip("/") or rel.startswith(p.rstrip("/") + "/") for p in only):
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.fs.get_file(self._object(entry, rel), str(target))
                except FileNotFoundError:
                    raise StoreRefused(f"{kind} {key[:19]}: {rel} is missing") from None
                if target.stat().st_size != size or hash_file(target) != digest:
                    raise StoreRefused(f"{kind} {key[:19]}: {rel} does not match its sha256 in the index")
        except StoreRefused:
            self.drop(kind, key)
            raise
        meta: dict[str, Any] = entry.get("meta") or {}
        return meta


def _hash_stream(handle: Any) -> str:
    import hashlib

    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return "sha256:" + digest.hexdigest()
