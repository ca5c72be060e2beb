"""The robustness suite's machinery: one case = one bad input, run through the CLI in-process.

A case names the command line (with ``{placeholders}`` for the shared artifacts and the case's
own directory), a setup that plants the bad input in the case's directory, the exit code
expected (1 user error, 3 failed gate) and a fragment of the one-line message. :func:`check`
asserts the contract every case shares: that exit code, no traceback, stderr one line with
the fragment, and nothing on disk created, removed or changed (the case directory and the
shared artifacts hash the same before and after).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sq_trt.artifacts import MANIFEST_NAME, hash_file
from sq_trt.cli import main

Setup = Callable[["Env"], None]


@dataclass(frozen=True)
class Env:
    """Paths a case may use: the shared (read-only) artifacts and its own empty directory."""

    shared: dict[str, Path]
    case: Path

    def fmt(self, text: str) -> str:
        """Fill ``{name}`` placeholders: shared artifacts, ``{case}``, ``{out}`` (= ``{case}/out``)."""
        return text.format(case=self.case, out=self.case / "out", **self.shared)


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    id: str
    cls: str
    argv: tuple[str, ...]
    fragment: str
    setup: Setup | None = None
    code: int = 1
    tags: tuple[str, ...] = field(default_factory=tuple)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (names of directories too) with the hash of each file."""
    state: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            state[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            state[rel] = hash_file(path)
        else:
            state[rel] = "dir"
    return state


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``sq_trt.cli.main(argv)`` with stdout/stderr captured; a non-SqTrtError propagates (a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def check(case: Case, env: Env) -> None:
    """Run one case and assert the shared contract."""
    try:
        _check(case, env)
    finally:
        release_other_writers()
        restore_env()


def _check(case: Case, env: Env) -> None:
    if case.setup is not None:
        case.setup(env)
    argv = [env.fmt(a) for a in case.argv]
    before = snapshot(env.case)
    shared_before = {name: snapshot(path) if path.is_dir() else hash_file(path) for name, path in env.shared.items()}
    code, _, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == case.code and code in (1, 3), f"exit {code}, stderr: {err}"
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    assert env.fmt(case.fragment) in lines[0], f"{case.fragment!r} not in {lines[0]!r}"
    assert snapshot(env.case) == before, "the case directory changed (new entries or modified inputs)"
    shared_after = {name: snapshot(path) if path.is_dir() else hash_file(path) for name, path in env.shared.items()}
    assert shared_after == shared_before, "a shared input artifact changed"


# ----------------------------------------------------------------------------------------------- setups


def compose(*steps: Setup) -> Setup:
    """Run setups in order."""

    def run(env: Env) -> None:
        for step in steps:
            step(env)

    return run


def copy(shared: str, name: str = "x") -> Setup:
    """Copy a shared artifact into the case directory as ``name``."""

    def run(env: Env) -> None:
        shutil.copytree(env.shared[shared], env.case / name)

    return run


def write(name: str, data: bytes | str) -> Setup:
    """Write a file in the case directory (parents created)."""

    def run(env: Env) -> None:
        path = env.case / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)

    return run


def edit_manifest(change: Callable[[dict[str, Any]], Any], name: str = "x") -> Setup:
    """Edit the copied artifact's manifest as JSON (``change`` mutates it or returns a replacement)."""

    def run(env: Env) -> None:
        path = env.case / name / MANIFEST_NAME
        data = json.loads(path.read_text())
        replaced = change(data)
        path.write_text(json.dumps(data if replaced is None else replaced))

    return run


def edit_file(rel: str, change: Callable[[bytes], bytes], name: str = "x", rehash: bool = False) -> Setup:
    """Change one file of the copied artifact; ``rehash`` then updates the manifest (an attacker's move)."""

    def run(env: Env) -> None:
        root = env.case / name
        path = root / rel
        path.write_bytes(change(path.read_bytes()))
        if rehash:
            rehash_manifest(root)

    return run


def rehash_manifest(root: Path) -> None:
    """Recompute every file hash in ``root``'s manifest."""
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["files"] = {rel: hash_file(root / rel) for rel in manifest["files"] if (root / rel).is_file()}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def edit_json(rel: str, change: Callable[[Any], Any], name: str = "x") -> Setup:
    """Edit a JSON file of the copied artifact, then re-hash the manifest."""

    def run(env: Env) -> None:
        root = env.case / name
        data = json.loads((root / rel).read_text())
        replaced = change(data)
        (root / rel).write_text(json.dumps(data if replaced is None else replaced))
        rehash_manifest(root)

    return run


def remove(rel: str, name: str = "x") -> Setup:
    """Delete a file of the copied artifact."""

    def run(env: Env) -> None:
        (env.case / name / rel).unlink()

    return run


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes."""
    out = b""
    block = str(seed).encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:size]


def ids(cases: Iterable[Case]) -> list[str]:
    """Test ids of the cases (checked unique)."""
    names = [f"{c.cls}-{c.id}" for c in cases]
    assert len(names) == len(set(names)), "duplicate case ids"
    return names


# Lock files held by the "other writer" of :func:`locked_by_other_writer`, closed after each case.
_OTHER_WRITERS: list[int] = []


def locked_by_other_writer(rel: str) -> Setup:
    """Hold the lock of output ``{case}/<rel>`` as another writer would (its own open file, pid 424242).

    ``flock`` locks belong to an open file, so a second open of the same file in this process
    conflicts exactly as another process's would.
    """

    def run(env: Env) -> None:
        final = env.case / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(final.parent / f".{final.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"424242\n")
        _OTHER_WRITERS.append(fd)

    return run


def release_other_writers() -> None:
    """Close the lock files :func:`locked_by_other_writer` holds."""
    while _OTHER_WRITERS:
        os.close(_OTHER_WRITERS.pop())


_SAVED_ENV: dict[str, str | None] = {}


def set_env(name: str, value: str) -> Setup:
    """Set an environment variable for the case (``SQ_TRT_MANIFEST_KEY``); restored after it."""

    def run(env: Env) -> None:
        _SAVED_ENV.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    return run


def restore_env() -> None:
    """Undo every :func:`set_env` of the case."""
    for name, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _SAVED_ENV.clear()


def symlink(name: str, target: str) -> Setup:
    """A symbolic link ``{case}/<name>`` -> ``target`` (placeholders filled)."""

    def run(env: Env) -> None:
        link = env.case / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(env.fmt(target))

    return run
