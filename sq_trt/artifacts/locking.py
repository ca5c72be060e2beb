"""One writer per output: an exclusive lock beside each destination, held for the whole stage.

A writer takes ``fcntl.flock`` on ``.<name>.lock`` in the destination's parent directory
before it checks the destination, and keeps it until its result is renamed into place
(the CLI: until the command returns). A second process that asks for the same lock is
refused at once with one line, instead of doing the work and then replacing the first
writer's result. The lock file is removed by its holder on release; a lock file left by
a killed process holds no lock (the kernel drops ``flock`` locks with the process) and is
reused and then removed by the next writer.

Locks are re-entrant within a process (keyed by the lock file's absolute path), so a
command can hold its ``--out`` for the whole stage and the atomic write underneath can
ask for the same lock again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sq_trt.errors import ArtifactError

LOCK_SUFFIX = ".lock"


@dataclass
class _Held:
    fd: int
    path: Path
    count: int = 1
    created: list[Path] = field(default_factory=list)


_held: dict[str, _Held] = {}
_guard = threading.Lock()
# The CLI's open sessions: locks taken with :func:`hold_output` are released when the innermost one closes.
_sessions: list[contextlib.ExitStack] = []


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of destination ``path``: ``.<name>.lock`` beside it."""
    final = Path(os.path.abspath(path))
    return final.with_name(f".{final.name}{LOCK_SUFFIX}")


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing ancestors; return the ones created (outermost first)."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        created.append(folder)
    return created


def _holder_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return f" (pid {text})"
    return ""


def _open_locked(lock: Path, final: Path, what: str) -> int:
    """Open ``lock`` and take its exclusive lock without waiting; the descriptor once it is the live file.

    A holder removes the lock file before it unlocks, so a lock taken on a file that was
    unlinked meanwhile is worthless: retry on the file now at that path.
    """
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            raise ArtifactError(
                f"{what} {final} is being written by another sq-trt process{holder}; "
                "wait for it to finish, or pick another output"
            ) from None
        opened = os.fstat(fd)
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            os.close(fd)
            continue
        if (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


def acquire(path: str | os.PathLike[str], *, what: str = "output") -> Path:
    """Take the exclusive lock of destination ``path`` (re-entrant in this process).

    Missing parent directories are created (the lock file lives there) and removed again
    on release if they are still empty.

    Returns:
        The lock file's path (the key for :func:`release`).

    Raises:
        ArtifactError: Another process holds the lock, or the lock file cannot be created.
    """
    lock = lock_path(path)
    key = str(lock)
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return lock
        try:
            created = _make_parents(lock.parent)
            fd = _open_locked(lock, Path(path), what)
        except OSError as exc:
            raise ArtifactError(
                f"cannot lock {what} {path}: {exc.strerror or type(exc).__name__} ({lock}); "
                "check the path and its permissions"
            ) from exc
        _held[key] = _Held(fd=fd, path=lock, created=created)
    return lock


def release(lock: Path) -> None:
    """Give back one hold of ``lock``; the last one removes the lock file, then unlocks."""
    with _guard:
        held = _held.get(str(lock))
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[str(lock)]
        # Unlink while still holding the lock: a waiter that opened this file then sees it is stale.
        with contextlib.suppress(OSError):
            os.unlink(held.path)
        os.close(held.fd)
        for folder in reversed(held.created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty: the write failed before anything landed there


def release_all() -> None:
    """Release every lock this process holds (an interrupted command, on its way out)."""
    with _guard:
        locks = [held.path for held in _held.values()]
    for lock in locks:
        while is_held_lock(lock):
            release(lock)


def is_held_lock(lock: Path) -> bool:
    """Whether this process holds ``lock`` (a path from :func:`acquire`)."""
    with _guard:
        return str(lock) in _held


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str], *, what: str = "output") -> Iterator[Path]:
    """Hold the exclusive lock of destination ``path`` for the ``with`` block (see :func:`acquire`)."""
    lock = acquire(path, what=what)
    try:
        yield lock
    finally:
        release(lock)


def hold_output(path: str | os.PathLike[str], *, what: str = "output") -> None:
    """Lock destination ``path`` until the innermost :func:`output_session` ends (the CLI command).

    Outside a session the lock is held until the process exits, which releases it.
    """
    lock = acquire(path, what=what)
    if _sessions:
        _sessions[-1].callback(release, lock)


def is_held(path: str | os.PathLike[str]) -> bool:
    """Whether this process holds the lock of destination ``path``."""
    with _guard:
        return str(lock_path(path)) in _held


@contextlib.contextmanager
def output_session() -> Iterator[None]:
    """Release every lock taken with :func:`hold_output` inside the block when it ends."""
    stack = contextlib.ExitStack()
    _sessions.append(stack)
    try:
        yield
    finally:
        _sessions.remove(stack)
        stack.close()
