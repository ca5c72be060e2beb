"""The matrix's artifact store: atomic publish, verified reads, refused corrupt or partial entries (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sq_trt.artifacts import hash_file
from sq_trt.matrix.store import ArtifactStore, StoreRefused

KEY = "sha256:" + "ab" * 32


def _artifact(root: Path) -> Path:
    (root / "work" / "export").mkdir(parents=True)
    (root / "work" / "export" / "model.onnx").write_bytes(b"\x08\x01" * 5000)
    (root / "work" / "calibrate.json").write_text('{"x": 1}')
    (root / "cell.json").write_text("{}")
    return root


def _published(tmp_path: Path, url: str | None = None) -> ArtifactStore:
    store = ArtifactStore(url or str(tmp_path / "store"))
    store.publish("cell", KEY, _artifact(tmp_path / "src"), ["work", "cell.json"], {"node": "n1"})
    return store


def _object_file(store: ArtifactStore, rel: str) -> Path:
    entry = store.entry("cell", KEY)
    assert entry is not None
    return Path(store._object(entry, rel))


def test_published_entry_verifies_and_fetches_byte_identical(tmp_path: Path) -> None:
    store = _published(tmp_path)
    assert store.verify("cell", KEY) == {"node": "n1"}
    meta = store.fetch("cell", KEY, tmp_path / "dest")
    assert meta == {"node": "n1"}
    for rel in ("work/export/model.onnx", "work/calibrate.json", "cell.json"):
        assert hash_file(tmp_path / "dest" / rel) == hash_file(tmp_path / "src" / rel)


def test_fetch_only_copies_the_named_prefixes(tmp_path: Path) -> None:
    store = _published(tmp_path)
    store.fetch("cell", KEY, tmp_path / "dest", only=["work/export"])
    assert (tmp_path / "dest" / "work" / "export" / "model.onnx").is_file()
    assert not (tmp_path / "dest" / "work" / "calibrate.json").exists()
    assert not (tmp_path / "dest" / "cell.json").exists()


def test_unknown_key_is_absent(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    assert store.verify("cell", KEY) is None
    with pytest.raises(StoreRefused, match="not in the store"):
        store.fetch("cell", KEY, tmp_path / "dest")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_file_is_refused_and_its_entry_dropped(tmp_path: Path, damage: str) -> None:
    store = _published(tmp_path)
    target = _object_file(store, "work/export/model.onnx")
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[:100])
    elif damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        target.unlink()
    verdict = store.verify("cell", KEY)
    assert verdict is not None and "model.onnx" in verdict["refused"]
    # Dropped: the next look finds nothing, so the cell is rebuilt and republished.
    assert store.verify("cell", KEY) is None
    assert store.entry("cell", KEY) is None


def test_fetch_refuses_a_file_altered_after_verification(tmp_path: Path) -> None:
    store = _published(tmp_path)
    target = _object_file(store, "cell.json")
    target.write_text("{}\n")  # one byte longer than indexed
    with pytest.raises(StoreRefused, match="cell.json"):
        store.fetch("cell", KEY, tmp_path / "dest")
    assert store.entry("cell", KEY) is None


def test_an_upload_without_its_index_entry_is_not_trusted(tmp_path: Path) -> None:
    # What a task killed mid-upload leaves: files under objects/, no index entry.
    store = _published(tmp_path)
    index = Path(store._index("cell", KEY))
    index.unlink()
    assert any((tmp_path / "store" / "objects").rglob("model.onnx"))
    assert store.verify("cell", KEY) is None


@pytest.mark.parametrize("content", ["", "{not json", '{"schema": 1, "key": "sha256:other", "files": {}}', "[]"])
def test_a_partial_or_foreign_index_entry_is_ignored(tmp_path: Path, content: str) -> None:
    store = _published(tmp_path)
    Path(store._index("cell", KEY)).write_text(content)
    assert store.verify("cell", KEY) is None


def test_republishing_replaces_the_entry_atomically(tmp_path: Path) -> None:
    store = _published(tmp_path)
    first = store.entry("cell", KEY)
    store.publish("cell", KEY, tmp_path / "src", ["cell.json"], {"node": "n2"})
    second = store.entry("cell", KEY)
    assert first is not None and second is not None
    assert second["upload"] != first["upload"] and list(second["files"]) == ["cell.json"]
    assert store.verify("cell", KEY) == {"node": "n2"}
    assert not list(Path(store._index("cell", KEY)).parent.glob("*.tmp-*"))  # no leftover temp files


def test_an_fsspec_object_store_works_the_same(tmp_path: Path) -> None:
    # fsspec's in-memory filesystem stands for s3:// / gs://: the index is one object put.
    url = f"memory://sq-trt-test-{tmp_path.name}"
    store = _published(tmp_path, url)
    assert not store.local
    assert store.verify("cell", KEY) == {"node": "n1"}
    store.fetch("cell", KEY, tmp_path / "dest")
    assert (tmp_path / "dest" / "work" / "export" / "model.onnx").read_bytes() == b"\x08\x01" * 5000
    entry = store.entry("cell", KEY)
    assert entry is not None
    store.fs.pipe_file(store._object(entry, "cell.json"), b"[]")  # same size, other bytes
    verdict = store.verify("cell", KEY)
    assert verdict is not None and "sha256" in verdict["refused"]
    assert json.loads(json.dumps(store.entry("cell", KEY))) is None
