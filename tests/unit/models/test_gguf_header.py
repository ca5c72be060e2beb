"""The GGUF header reader against the gguf package's own writer and reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sq_trt.errors import ModelLoadError
from sq_trt.models.demo import demo_gguf_path
from sq_trt.models.gguf_header import gguf_context_length, read_gguf_metadata

gguf = pytest.importorskip("gguf")


def _write(path: Path, *, context_length: int | None = 4096, tokenizer_first: bool = False) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    if tokenizer_first:  # arrays before the wanted key: they must be skipped, not parsed as keys
        writer.add_token_list([f"tok{i}" for i in range(300)])
        writer.add_array("test.floats", [0.5, 1.5, 2.5])
    writer.add_block_count(2)
    if context_length is not None:
        writer.add_context_length(context_length)
    writer.add_float32("test.scale", 0.25)
    writer.add_bool("test.flag", True)
    writer.add_string("test.name", "tiny é")
    writer.add_uint64("test.big", 1 << 40)
    writer.add_int32("test.negative", -7)
    if not tokenizer_first:
        writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_tensor("w", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _reference_scalars(path: Path) -> dict[str, object]:
    """Every scalar and string field as the gguf package reads it (its own parser, the whole file)."""
    reader = gguf.GGUFReader(str(path))
    values = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        values[name] = field.contents()
    return values


@pytest.mark.parametrize("tokenizer_first", [False, True])
def test_metadata_equals_the_gguf_packages_reading(tmp_path: Path, tokenizer_first: bool) -> None:
    path = _write(tmp_path / "m.gguf", tokenizer_first=tokenizer_first)
    ours = read_gguf_metadata(path)
    reference = _reference_scalars(path)
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value) if isinstance(value, float) else ours[key] == value, key
    assert gguf_context_length(path) == 4096


def test_missing_context_length_is_none(tmp_path: Path) -> None:
    assert gguf_context_length(_write(tmp_path / "m.gguf", context_length=None)) is None


def test_truncated_or_foreign_files_are_one_clear_error(tmp_path: Path) -> None:
    whole = _write(tmp_path / "m.gguf", tokenizer_first=True).read_bytes()
    for size in (0, 3, 10, 30, 200):
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(whole[:size])
        with pytest.raises(ModelLoadError):
            read_gguf_metadata(cut)
    foreign = tmp_path / "r.gguf"
    foreign.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        read_gguf_metadata(foreign)
    # A header claiming more keys than could fit is refused before any loop over them.
    bogus = tmp_path / "count.gguf"
    bogus.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1 << 62).to_bytes(8, "little"))
    with pytest.raises(ModelLoadError, match="metadata keys"):
        read_gguf_metadata(bogus)


def test_the_demo_gguf_if_fetched() -> None:
    path = demo_gguf_path()
    if not path.is_file():
        pytest.skip(f"the demo GGUF is not fetched ({path}); `sq-trt fetch-demo` fetches it")
    reader = gguf.GGUFReader(str(path))
    architecture = reader.get_field("general.architecture").contents()
    assert gguf_context_length(path) == reader.get_field(f"{architecture}.context_length").contents()
