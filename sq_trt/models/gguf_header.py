"""Scalar metadata from a GGUF file's header, read without the gguf package or any weights.

The pipeline's preflight wants one number from a ``.gguf`` source (its context length)
before anything is loaded. ``gguf.GGUFReader`` indexes every tensor of the file to give it
(11 s for the demo's 98 MB file on the shared 2-core machine); the metadata it needs sits
at the start of the file, so this reads the key-value section only and stops as soon as
the wanted keys are found.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sq_trt.errors import ModelLoadError

MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
# GGUF value type -> struct format of its scalar (little-endian); 8 and 9 are strings and arrays.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MAX_KEYS = 1 << 20  # far above any real file's key count; a larger count is a corrupt header


class _Reader:
    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file, self.size = file, size

    def unpack(self, fmt: str) -> int | float | bool:
        data = self.file.read(struct.calcsize(fmt))
        if len(data) < struct.calcsize(fmt):
            raise ModelLoadError("the GGUF header ends early")
        value: int | float | bool = struct.unpack(fmt, data)[0]
        return value

    def length(self, item_size: int = 1) -> int:
        count = int(self.unpack("<Q"))
        if count * item_size > self.size - self.file.tell():
            raise ModelLoadError(f"the GGUF header states {count} items past the end of the file")
        return count

    def string(self) -> str:
        return self.file.read(self.length()).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.file.seek(self.length(), 1)

    def value(self, kind: int) -> int | float | bool | str | None:
        """A scalar or string value; an array is skipped (None)."""
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ModelLoadError(f"unknown GGUF value type {kind}")
        item = int(self.unpack("<I"))
        if item in _SCALARS:
            self.file.seek(self.length(struct.calcsize(_SCALARS[item])) * struct.calcsize(_SCALARS[item]), 1)
        elif item == _STRING:
            for _ in range(self.length(8)):
                self.skip_string()
        else:
            raise ModelLoadError(f"unsupported GGUF array item type {item}")
        return None


Metadata = dict[str, int | float | bool | str]


def read_gguf_metadata(path: Path, until: Callable[[Metadata], bool] | None = None) -> Metadata:
    """The scalar and string metadata of a GGUF file (arrays such as the vocabulary are skipped).

    Args:
        path: The ``.gguf`` file.
        until: Stop reading once this holds for the values read so far.

    Raises:
        ModelLoadError: Not a GGUF file (version 2 or 3), or a header that is truncated or inconsistent.
    """
    try:
        with path.open("rb") as file:
            reader = _Reader(file, path.stat().st_size)
            if file.read(4) != MAGIC:
                raise ModelLoadError(f"{path} is not a GGUF file (no GGUF magic)")
            version = reader.unpack("<I")
            if version not in (2, 3):
                raise ModelLoadError(f"{path} is GGUF version {version}; versions 2 and 3 are read")
            reader.unpack("<Q")  # the tensor count: the tensors are not read here
            count = int(reader.unpack("<Q"))
            if count > _MAX_KEYS:
                raise ModelLoadError(f"{path} states {count} metadata keys")
            values: Metadata = {}
            for _ in range(count):
                key = reader.string()
                value = reader.value(int(reader.unpack("<I")))
                if value is not None:
                    values[key] = value
                    if until is not None and until(values):
                        break
            return values
    except OSError as exc:
        raise ModelLoadError(f"could not read {path}: {exc}") from exc


def gguf_context_length(path: Path) -> int | None:
    """``<general.architecture>.context_length`` of a GGUF file, when stated.

    Raises:
        ModelLoadError: As :func:`read_gguf_metadata`.
    """

    def key(values: Metadata) -> str | None:
        architecture = values.get("general.architecture")
        return f"{architecture}.context_length" if isinstance(architecture, str) else None

    values = read_gguf_metadata(path, until=lambda values: key(values) in values)
    limit = values.get(key(values) or "")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
