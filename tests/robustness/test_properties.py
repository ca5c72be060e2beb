"""Property-based fuzzing (hypothesis) of manifests, pipeline recipes and ``--set`` values.

Whatever the bytes, a consumer either accepts an input that is provably fine or refuses it with
one line and exit 1; it never raises anything else, never hangs, and never writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sq_trt.artifacts import MANIFEST_NAME, Manifest, is_confined, load_manifest
from sq_trt.errors import ArtifactError

from .cases import TINY
from .harness import run_cli, snapshot

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["stage", "config", "inputs", "files", "versions", "extra", "schema_version", "created_unix", "other"]


@pytest.fixture(scope="module")
def scales(module_tmp: Callable[[str], Path]) -> Path:
    out = module_tmp("properties") / "scales"
    code, _, err = run_cli(["calibrate", *TINY, "--samples", "1", "--seq-len", "16", "--out", str(out)])
    assert code == 0, err
    return out


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_mutated_manifest_loads_only_when_sound(scales: Path, tmp_path_factory, field: str, value: object) -> None:
    root = tmp_path_factory.mktemp("m") / "a"
    shutil.copytree(scales, root)
    raw = json.loads((root / MANIFEST_NAME).read_text())
    raw[field] = value
    (root / MANIFEST_NAME).write_text(json.dumps(raw))
    try:
        manifest = load_manifest(root, stage="calibrate", verify_files=True)
    except ArtifactError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
        return
    assert isinstance(manifest, Manifest)
    assert isinstance(manifest.files, dict) and all(is_confined(rel) for rel in manifest.files)
    assert manifest.stage == "calibrate" and manifest.schema_version == 1


@SETTINGS
@given(data=st.binary(max_size=400) | JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_manifest_bytes_are_refused_in_one_line(scales: Path, tmp_path_factory, data: bytes) -> None:
    root = tmp_path_factory.mktemp("b") / "a"
    shutil.copytree(scales, root)
    (root / MANIFEST_NAME).write_bytes(data)
    before = snapshot(root.parent)
    code, _, err = run_cli(["smooth", *TINY, "--act-scales", str(root), "--out", str(root.parent / "out")])
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(root.parent) == before


_KEYS = st.sampled_from(
    ["name", "kind", "model.source", "model.dtype", "data.source", "data.calib_fraction", "calibrate.samples",
     "calibrate.seq_len", "smooth.alpha", "smooth.overrides", "candidates", "candidates.0.name", "export.opset",
     "build.profiles", "build.profiles.0.seq", "compare.samples", "gate", "gate.0", "report", "nope.x"]
) | st.text(alphabet="abc._019", min_size=1, max_size=12)  # fmt: skip
_VALUES = st.text(max_size=40) | JSON.map(json.dumps)


@SETTINGS
@given(sets=st.lists(st.tuples(_KEYS, _VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1, max_size=3))
def test_set_values_never_escape_as_tracebacks(tmp_path_factory, sets: list[str]) -> None:
    """A valid recipe whose work dir sits under a file: any --set fails in parsing, validation or preflight."""
    root = tmp_path_factory.mktemp("s")
    (root / "r.yaml").write_text("kind: pipeline\nname: t\nmodel: {source: tiny:llama}\n")
    (root / "file").write_text("x")
    before = snapshot(root)
    argv = ["pipeline", "--recipe", str(root / "r.yaml"), "--quiet", "--out", str(root / "file" / "w")]
    for text in sets:
        argv += ["--set", text]
    code, _, err = run_cli(argv)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(root) == before


@SETTINGS
@given(text=st.text(max_size=300) | JSON.map(lambda v: json.dumps({"kind": "pipeline", "model": v})))
def test_arbitrary_recipe_text_is_refused_in_one_line(tmp_path_factory, text: str) -> None:
    root = tmp_path_factory.mktemp("r")
    (root / "r.yaml").write_text(text, encoding="utf-8")
    (root / "file").write_text("x")
    before = snapshot(root)
    code, _, err = run_cli(["pipeline", "--recipe", str(root / "r.yaml"), "--quiet", "--out", str(root / "file" / "w")])
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(root) == before



# Duplicate keys (issue 28): any mapping at any depth that repeats a key is refused, naming both lines.
_NAMES = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
_TREE = st.recursive(
    st.integers(-5, 5) | _NAMES,
    lambda inner: st.dictionaries(_NAMES, inner, min_size=1, max_size=4),
    max_leaves=12,
).filter(lambda v: isinstance(v, dict))


def _block_yaml(value: object, indent: int = 0) -> list[str]:
    """Block-style YAML, one key per line (so every key has its own line number)."""
    lines: list[str] = []
    for key, item in value.items():  # type: ignore[attr-defined]
        if isinstance(item, dict):
            lines.append(" " * indent + f"{key}:")
            lines += _block_yaml(item, indent + 2)
        else:
            lines.append(" " * indent + f"{key}: {json.dumps(item)}")
    return lines


@SETTINGS
@given(tree=_TREE, pick=st.integers(0, 10_000))
def test_a_repeated_key_at_any_depth_is_refused_with_both_lines(tree: dict, pick: int) -> None:  # type: ignore[type-arg]
    from sq_trt.errors import ConfigError
    from sq_trt.yaml_io import safe_load_bounded

    lines = _block_yaml(tree)
    assert safe_load_bounded("\n".join(lines) + "\n", "r.yaml") == tree  # no duplicate: loads unchanged
    keyed = [i for i, line in enumerate(lines) if not line.endswith(":")]
    first = keyed[pick % len(keyed)]
    indent = len(lines[first]) - len(lines[first].lstrip())
    # The same key again as the last entry of the same mapping: after its last descendant line.
    end = first + 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) == indent and not lines[end].endswith(":"):
        end += 1
    duplicate = lines[first].split(":")[0] + ": 0"
    text = "\n".join([*lines[:end], duplicate, *lines[end:]]) + "\n"
    with pytest.raises(ConfigError) as info:
        safe_load_bounded(text, "r.yaml")
    assert f"lines {first + 1} and {end + 1}" in str(info.value) and "\n" not in str(info.value)
