"""SIGTERM handled like Ctrl-C, and an interrupt that a library swallowed still stops the write.

While a CLI command runs, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) where the
process is, so the same unwinding as Ctrl-C removes temporary files. Both signals are also
remembered: third-party code that catches ``KeyboardInterrupt`` (a retrying exporter) could
otherwise let the command run on and publish its artifact; :func:`raise_if_interrupted`, called
before every final rename, raises the interrupt again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is: the same unwinding as Ctrl-C (temporary files removed)."""


_received: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if signum == signal.SIGTERM:
        # A second SIGTERM must not interrupt the cleanup the first one started.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise the interrupt again if SIGTERM or Ctrl-C came during this command (even if it was swallowed)."""
    if signal.SIGTERM in _received:
        raise Terminated
    if _received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` and remember SIGINT while a command runs (main thread only)."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received.clear()
