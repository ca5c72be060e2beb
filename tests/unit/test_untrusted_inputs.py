"""Issue 17's ten root causes, one regression test each: nothing read from disk is trusted unchecked.

Every test here failed before its fix. The artifacts are real (tiny random models through the
CLI); tampering is done the way an attacker with write access would: edit a file, and where it
matters re-hash the manifest so the file check alone cannot catch it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sq_trt.artifacts import MANIFEST_NAME, hash_file, load_manifest
from sq_trt.cli import main
from sq_trt.errors import ArtifactError

TINY = ["--model", "tiny:llama", "--no-progress"]


def _rehash(directory: Path) -> None:
    """What an attacker with write access does after editing a file: update the manifest's hashes."""
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["files"] = {rel: hash_file(directory / rel) for rel in manifest["files"]}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def runs(module_tmp: Callable[[str], Path]) -> dict[str, Path]:
    """calibrate + a compare whose gate fails (saved iterations), on the tiny Llama."""
    root = module_tmp("untrusted")
    paths = {"scales": root / "scales", "failed": root / "failed"}
    assert main(["calibrate", *TINY, "--samples", "2", "--seq-len", "16", "--out", str(paths["scales"])]) == 0
    argv = ["compare", "--baseline", "fp32=torch:tiny:llama", "--candidate", "naive=torch-w8a8:tiny:llama"]
    argv += ["--samples", "2", "--seq-len", "16", "--gate", "kl_mean<=0", "--save-iterations", "-1"]
    assert main([*argv, "--out", str(paths["failed"]), *TINY]) == 3
    return paths


# 1. A failed gate cannot be turned into a pass ---------------------------------------------------------


def test_flipped_verdict_is_refused_even_with_a_rehashed_manifest(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--results", str(runs["failed"]), "--out", str(tmp_path / "honest")]) == 3
    assert json.loads((tmp_path / "honest" / "report.json").read_text())["verdict"]["passed"] is False
    forged = tmp_path / "forged"
    shutil.copytree(runs["failed"], forged)
    data = json.loads((forged / "comparison.json").read_text())
    assert data["gate"]["passed"] is False
    data["gate"]["passed"] = True
    (forged / "comparison.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["report", "--results", str(forged), "--out", str(tmp_path / "r1")]) == 1
    assert "has changed since the manifest" in _err(capsys)
    _rehash(forged)
    assert main(["report", "--results", str(forged), "--out", str(tmp_path / "r2")]) == 1
    assert "give passed=False" in _err(capsys)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_copied_outputs_in_saved_iterations_are_refused_on_replay(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = tmp_path / "forged"
    shutil.copytree(runs["failed"], forged)
    # The attack: the candidate's saved outputs replaced by the baseline's, so the replay measures 0 error.
    path = min((forged / "iterations").glob("*[0-9].json"))
    results = json.loads(path.read_text())
    text = json.dumps(results)
    assert "naive" in text and "fp32" in text
    path.write_text(path.read_text() + " ")
    capsys.readouterr()
    assert main(["compare", "--load-results", str(forged), "--out", str(tmp_path / "replay"), "--no-progress"]) == 1
    assert "has changed since the manifest" in _err(capsys)
    # A file added next to the saved ones is not evidence of the run either.
    shutil.copytree(runs["failed"], tmp_path / "added")
    shutil.copy(path, tmp_path / "added" / "iterations" / "0000000099.json")
    argv = ["compare", "--load-results", str(tmp_path / "added"), "--out", str(tmp_path / "replay2"), "--no-progress"]
    assert main(argv) == 1
    assert "not listed" in _err(capsys)


# 2. False provenance ------------------------------------------------------------------------------------


def _onnx_artifact(directory: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sq_trt.artifacts import artifact_dir

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    with artifact_dir(directory, stage="export", inputs={"calibration": "sha256:c0ffee"}) as tmp:
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp / "model.onnx"))
    return directory / "model.onnx"


def test_tampered_onnx_never_inherits_the_export_fingerprint(tmp_path: Path) -> None:
    from sq_trt.engine.source import read_onnx_source

    path = _onnx_artifact(tmp_path / "export")
    assert read_onnx_source(path).export_manifest["stage"] == "export"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # still a loadable model: a flipped bit in the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="has changed since the manifest"):
        read_onnx_source(path)
    foreign = tmp_path / "export" / "other.onnx"
    shutil.copy(path, foreign)
    with pytest.raises(ArtifactError, match="not listed in the manifest"):
        read_onnx_source(foreign)


def test_compare_refuses_a_tampered_onnx_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _onnx_artifact(tmp_path / "export")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    argv = ["compare", "--baseline", f"a={path}", "--candidate", f"b={path}", "--out", str(tmp_path / "c")]
    assert main([*argv, *TINY, "--samples", "1", "--seq-len", "8"]) == 1
    assert "has changed since the manifest" in _err(capsys)


# 3. NaN/Inf statistics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_non_finite_activation_scales_are_refused_naming_the_layer(
    runs: dict[str, Path], tmp_path: Path, bad: float, capsys: pytest.CaptureFixture[str]
) -> None:
    scales = tmp_path / "scales"
    shutil.copytree(runs["scales"], scales)
    tensors = load_file(str(scales / "act_scales.safetensors"))
    name = next(k for k in tensors if k.endswith(".input_amax"))
    tensors[name] = torch.full_like(tensors[name], bad)
    save_file(tensors, str(scales / "act_scales.safetensors"))
    _rehash(scales)
    argv = ["smooth", *TINY, "--act-scales", str(scales), "--out", str(tmp_path / "s")]
    assert main(argv) == 1
    err = _err(capsys)
    assert name in err and "non-finite" in err


# 4. Alias bombs ---------------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["kind: pipeline", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join(['*a' + str(i - 1)] * 9)}]" for i in range(1, 9)]
    lines += ["model: {source: *a8}"]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    assert recipe.stat().st_size < 1024
    started = time.perf_counter()
    assert main(["pipeline", "--recipe", str(recipe)]) == 1
    assert time.perf_counter() - started < 5
    assert "aliases" in _err(capsys)


def test_huge_value_in_a_message_is_truncated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: pipeline\nmodel: {source: tiny:llama}\ncalibrate: {samples: [" + "1," * 20000 + "1]}\n")
    assert main(["pipeline", "--recipe", str(recipe)]) == 1
    err = _err(capsys)
    assert "calibrate.samples" in err and len(err) < 1000


# 5. Tracebacks from exceptions that reach the user (one per class; tests/robustness has the rest) ---------------


def test_corrupt_safetensors_header_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (model / "model.safetensors").write_bytes(b"\xff" * 64)
    assert main(["eval", "--model", str(model)]) == 1
    assert "could not load" in _err(capsys)


def test_bogus_and_absent_devices_are_refused_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "tiny:llama", "--device", "bogus"]) == 1
    assert "not a torch device" in _err(capsys)
    if not torch.cuda.is_available():
        assert main(["eval", "--model", "tiny:llama", "--device", "cuda"]) == 1
        assert "no CUDA GPU" in _err(capsys)


def test_output_parent_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["calibrate", *TINY, "--out", str(blocker / "out")]) == 1
    assert "is a file" in _err(capsys)
    assert main(["calibrate", *TINY, "--out", str(tmp_path / ("n" * 300))]) == 1
    assert "255 bytes" in _err(capsys)


def test_build_recipe_with_scalar_profiles_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "b.yaml"
    recipe.write_text('profiles: "abc"\n')
    assert main(["build", "--recipe", str(recipe), "--seq", "1,8,16", "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "profiles" in _err(capsys)


def test_corrupt_cached_demo_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sq_trt.errors import ModelLoadError
    from sq_trt.models.demo import DEMO_DIRNAME, FILES_LISTING, demo_model_dir

    monkeypatch.setenv("SQ_TRT_CACHE", str(tmp_path))
    demo = tmp_path / "demo" / DEMO_DIRNAME
    demo.mkdir(parents=True)
    (demo / "config.json").write_text("{}")
    (demo / "model.safetensors").write_bytes(b"\x00" * 16)
    (demo / FILES_LISTING).write_text(json.dumps({"model.safetensors": 1000, "config.json": 2}))
    with pytest.raises(ModelLoadError, match="incomplete or corrupt"):
        demo_model_dir(fetch=False)
    (demo / FILES_LISTING).unlink()  # an older cache: loads, fails to parse, names the fix
    assert main(["eval", "--model", "demo"]) == 1
    assert "fetch-demo" in _err(capsys)


# 6. Leftovers ----------------------------------------------------------------------------------------------


def test_stale_partial_and_old_directories_are_cleaned_on_the_next_run(tmp_path: Path) -> None:
    from sq_trt.artifacts import atomic_dir

    out = tmp_path / "out"
    dead = 2**22 + 12345  # above the default pid_max of 4194304: no such process
    stale = [tmp_path / f".out.p{dead}.abc123.partial", tmp_path / ".out.k2j4h5.partial", tmp_path / f".out.old-{dead}"]
    for path in stale:
        path.mkdir()
        (path / "junk").write_text("x")
    unrelated = tmp_path / ".other.p1.abc.partial"
    unrelated.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", unrelated.name])


def test_out_file_with_force_is_refused_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out"
    target.write_text("user data")
    assert main(["report", "--results", str(tmp_path / "none"), "--out", str(target), "--force"]) == 1
    assert "existing file" in _err(capsys)
    assert target.read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# 7. Validation gaps ---------------------------------------------------------------------------------------


def test_alpha_override_matching_no_group_is_refused(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["smooth", *TINY, "--act-scales", str(runs["scales"]), "--out", str(tmp_path / "s")]
    assert main([*argv, "--alpha-override", "layers.*.mlp_typo=0.7"]) == 1
    assert "matches no smoothing group" in _err(capsys)


def test_seq_len_past_the_model_positions_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", *TINY, "--seq-len", "4096", "--out", str(tmp_path / "c")]) == 1
    assert "max_position_embeddings" in _err(capsys)
    assert not (tmp_path / "c").exists()


def test_non_string_text_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": i * 1.5}) for i in range(1, 50)) + "\n")
    assert main(["eval", *TINY[:2], "--data", str(data)]) == 1
    assert "holds a float" in _err(capsys)


def test_manifest_paths_are_confined_to_the_artifact(runs: dict[str, Path], tmp_path: Path) -> None:
    scales = tmp_path / "scales"
    shutil.copytree(runs["scales"], scales)
    manifest = json.loads((scales / MANIFEST_NAME).read_text())
    for escape in ("../../etc/hostname", "/etc/hostname", "a/../../x"):
        manifest["files"] = {escape: "sha256:0"}
        (scales / MANIFEST_NAME).write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="outside the artifact directory"):
            load_manifest(scales, verify_files=True)


def test_local_files_only_covers_hub_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["calibrate", *TINY, "--local-files-only", "--data", "hub:wikitext:wikitext-2-raw-v1"]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 1
    assert "--local-files-only" in _err(capsys)


# 8. Fail before work -------------------------------------------------------------------------------------


def test_every_input_is_checked_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The model does not exist either: each other input's error comes first, so nothing was loaded."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["calibrate", "--model", "/no/such/model"]
    assert main([*argv, "--out", str(blocker / "c")]) == 1
    assert "is a file" in _err(capsys)
    assert main([*argv, "--out", str(tmp_path / "c"), "--data", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in _err(capsys)
    assert main([*argv, "--out", str(tmp_path / "c"), "--device", "cuda:99"]) == 1
    assert "cuda:99" in _err(capsys)


# The optional signing hook ------------------------------------------------------------------------------


def test_signed_manifests_refuse_a_consistent_forgery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sq_trt.artifacts import SIGNATURE_NAME, artifact_dir

    monkeypatch.setenv("SQ_TRT_MANIFEST_KEY", "k1")
    with artifact_dir(tmp_path / "a", stage="calibrate") as tmp:
        (tmp / "f.txt").write_text("metrics")
    assert load_manifest(tmp_path / "a", verify_files=True).files
    (tmp_path / "a" / "f.txt").write_text("forged")
    _rehash(tmp_path / "a")  # consistent hashes: only the signature can tell
    with pytest.raises(ArtifactError, match="signature does not match"):
        load_manifest(tmp_path / "a", verify_files=True)
    monkeypatch.setenv("SQ_TRT_MANIFEST_KEY", "another key")
    with artifact_dir(tmp_path / "b", stage="calibrate") as tmp:
        (tmp / "f.txt").write_text("x")
    monkeypatch.setenv("SQ_TRT_MANIFEST_KEY", "k1")
    with pytest.raises(ArtifactError, match="signature does not match"):
        load_manifest(tmp_path / "b")
    (tmp_path / "b" / SIGNATURE_NAME).unlink()
    with pytest.raises(ArtifactError, match="has no manifest.sig"):
        load_manifest(tmp_path / "b")
    monkeypatch.delenv("SQ_TRT_MANIFEST_KEY")
    assert load_manifest(tmp_path / "b").stage == "calibrate"  # unsigned use is unchanged


def test_build_profile_past_the_model_positions_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    from sq_trt.artifacts import artifact_dir

    model = onnx.load(str(_onnx_artifact(tmp_path / "plain")))
    with artifact_dir(tmp_path / "export", stage="export", extra={"max_positions": 512}) as tmp:
        onnx.save(model, str(tmp / "model.onnx"))
    argv = ["build", "--onnx", str(tmp_path / "export" / "model.onnx"), "--name", "n", "--target", "t"]
    assert main([*argv, "--engines-dir", str(tmp_path / "e"), "--seq", "1,8,4096"]) == 1
    assert "past the model's 512 positions" in _err(capsys)
    assert not (tmp_path / "e").exists()
