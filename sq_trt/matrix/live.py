"""The live table of cells: queued / running on which node (and which stage) / done / cached / failed.

On a terminal the table is redrawn in place; otherwise each change is one line, so a log file
reads as the run's history.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

_STATUS_OF_EVENT = {"queued": "queued", "running": "running", "stage": "running", "cached": "cached", "done": "done", "failed": "failed"}


class LiveTable:
    """Cell states, shown as they change.

    Args:
        labels: The cells (``model/candidate@target``) in report order.
        log: Where lines go.
        tty: Redraw in place (default: whether stderr is a terminal).
    """

    def __init__(self, labels: list[str], log: Callable[[str], None], tty: bool | None = None) -> None:
        self.rows: dict[str, dict[str, Any]] = {label: {"status": "queued", "attempts": 0} for label in labels}
        self.log = log
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self._drawn = 0

    def note(self, line: str) -> None:
        """A line outside the table (a refused store entry)."""
        self.log(f"[matrix] {line}")

    def update(self, label: str, event: str, info: dict[str, Any]) -> None:
        """Apply one event (``queued``, ``running``, ``stage``, ``cached``, ``done``, ``failed``)."""
        self.events.append((label, event, info))
        row = self.rows.setdefault(label, {"status": "queued", "attempts": 0})
        row["status"] = _STATUS_OF_EVENT.get(event, row["status"])
        if event == "running":
            row["attempts"] += 1
            row["node"] = str(info.get("node", ""))[:8]
            row["stage"] = ""
        elif event == "stage":
            row["stage"] = info.get("stage", "")
        elif event == "failed":
            row["stage"] = info.get("error", "")
        elif event in ("done", "cached"):
            row["node"] = str(info.get("node", row.get("node", "")))[:8]
            row["stage"] = "(from the store)" if info.get("cached") or event == "cached" else ""
        self._show(label)

    def _line(self, label: str) -> str:
        row = self.rows[label]
        retry = f" (attempt {row['attempts']})" if row.get("attempts", 0) > 1 else ""
        node = f" on {row['node']}" if row.get("node") else ""
        stage = f" {row['stage']}" if row.get("stage") else ""
        return f"{label:<40} {row['status']}{node}{retry}{stage}"

    def _show(self, label: str) -> None:
        if not self.tty:
            if label in self.rows:
                self.log(f"[matrix] {self._line(label)}")
            return
        up = f"\x1b[{self._drawn}A" if self._drawn else ""
        lines = [self._line(name) for name in self.rows if "/front" not in name or self.rows[name]["status"] == "running"]
        counts = {s: sum(r["status"] == s for r in self.rows.values()) for s in ("queued", "running", "done", "cached", "failed")}
        lines.append("  ".join(f"{k} {v}" for k, v in counts.items()))
        sys.stderr.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        sys.stderr.flush()
        self._drawn = len(lines)

    def finish(self, line: str) -> None:
        """The last line, below the table."""
        self._drawn = 0
        self.log(f"[matrix] {line}")
