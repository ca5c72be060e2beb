import json

import pytest

from sq_trt.artifacts import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    artifact_dir,
    atomic_write_text,
    hash_bytes,
    hash_file,
    load_manifest,
)
from sq_trt.errors import ArtifactError


def _write(path, **kw):
    with artifact_dir(path, stage="calibrate", config={"alpha": 0.5}, inputs={"model": "sha256:x"}, **kw) as tmp:
        (tmp / "a.bin").write_bytes(b"hello")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("world")


def test_round_trip_records_everything(tmp_path):
    out = tmp_path / "scales"
    _write(out)
    manifest = load_manifest(out, stage="calibrate", verify_files=True)
    assert manifest.schema_version == SCHEMA_VERSION
    assert manifest.config == {"alpha": 0.5}
    assert manifest.inputs == {"model": "sha256:x"}
    # Hashes are of the content, computed independently here.
    assert manifest.files == {"a.bin": hash_bytes(b"hello"), "sub/b.txt": hash_bytes(b"world")}
    assert "torch" in manifest.versions
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dirs left behind"


def test_interrupted_write_leaves_old_artifact_untouched(tmp_path):
    out = tmp_path / "scales"
    _write(out)
    before = (out / MANIFEST_NAME).read_text()
    with pytest.raises(RuntimeError), artifact_dir(out, stage="calibrate") as tmp:
        (tmp / "a.bin").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert (out / MANIFEST_NAME).read_text() == before
    assert (out / "a.bin").read_bytes() == b"hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scales"]


def test_interrupted_first_write_leaves_nothing(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt), artifact_dir(out, stage="smooth") as tmp:
        (tmp / "x").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_without_force(tmp_path):
    out = tmp_path / "a"
    _write(out)
    with pytest.raises(ArtifactError, match="already exists"):
        _write(out, force=False)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: (d / MANIFEST_NAME).unlink(), "no manifest.json"),
        (lambda d: (d / MANIFEST_NAME).write_text("{not json"), "not valid JSON"),
        (lambda d: (d / MANIFEST_NAME).write_text("[1, 2]"), "expected a JSON object"),
        (
            lambda d: (d / MANIFEST_NAME).write_text(
                json.dumps({**json.loads((d / MANIFEST_NAME).read_text()), "schema_version": 999})
            ),
            "schema_version 999",
        ),
        (lambda d: (d / "a.bin").write_bytes(b"tampered"), "has changed"),
        (lambda d: (d / "sub" / "b.txt").unlink(), "is missing"),
    ],
)
def test_refusals(tmp_path, mutate, message):
    out = tmp_path / "a"
    _write(out)
    mutate(out)
    with pytest.raises(ArtifactError, match=message):
        load_manifest(out, verify_files=True)


def test_refuses_other_stage_and_missing_dir(tmp_path):
    out = tmp_path / "a"
    _write(out)
    with pytest.raises(ArtifactError, match="stage `calibrate`, expected .* `smooth`"):
        load_manifest(out, stage="smooth")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_manifest(tmp_path / "nope")


def test_atomic_write_and_hash(tmp_path):
    path = atomic_write_text(tmp_path / "d" / "f.txt", "abc")
    assert path.read_text() == "abc"
    assert hash_file(path) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]
