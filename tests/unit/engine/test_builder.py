"""The build stage on TensorRT-RTX, which builds real engines on this CPU machine.

Nothing here mocks TensorRT: every engine is built by TensorRT-RTX 1.7 from a
small ONNX (test_build_graphs.py proves what those graphs compute).
"""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sq_trt.artifacts import artifact_dir, hash_file, load_manifest
from sq_trt.engine.backends import Backend, load_tensorrt, load_tensorrt_rtx, select_backend
from sq_trt.engine.builder import build_engine
from sq_trt.engine.engine_manifest import REQUIRED_FIELDS, load_engine_record
from sq_trt.engine.gpu import visible_gpus
from sq_trt.engine.plugin_loader import register_plugins
from sq_trt.engine.recipe import resolve_settings
from sq_trt.engine.source import PluginNode
from sq_trt.errors import ArtifactError, BuildError, ConfigError, MissingDependencyError

from .test_build_graphs import GRAPHS, K, N, make_fp16, make_per_tensor

trt_rtx = pytest.importorskip(
    "tensorrt_rtx_bindings", reason="TensorRT-RTX (the `rtx` extra) is not installed"
)

PROFILE = {"name": "p0", "batch": [1, 2, 4], "seq": [1, 16, 64]}


@pytest.fixture(scope="module")
def rtx() -> Backend:
    return load_tensorrt_rtx()


def _settings(tmp_path: Path, onnx_path: Path, target: str = "rtx", **extra):
    values = {
        "onnx": onnx_path,
        "name": "m",
        "target": target,
        "engines_dir": tmp_path / "engines",
        "profiles": [PROFILE],
        **extra,
    }
    return resolve_settings({}, values, source="test")


def _build(tmp_path, rtx, kind="fp16", target="rtx", force=False, **extra):
    onnx_path = tmp_path / f"{kind}.onnx"
    if not onnx_path.exists():
        GRAPHS[kind](onnx_path)
    return build_engine(_settings(tmp_path, onnx_path, target, **extra), rtx, force=force, log=lambda _: None)


@pytest.mark.parametrize("kind", ["fp16", "per_tensor", "per_token"])
def test_rtx_builds_each_encoding_with_a_complete_manifest(tmp_path, rtx, kind):
    record = _build(tmp_path, rtx, kind)
    engine_dir = tmp_path / "engines" / "m"
    manifest = load_manifest(engine_dir, stage="build", verify_files=True)  # the plan hash must match
    raw = manifest.extra["engines"]["rtx"]
    assert set(REQUIRED_FIELDS) <= set(raw)
    assert raw["backend"] == "tensorrt_rtx" and raw["backend_version"] == trt_rtx.__version__
    assert raw["source_onnx_sha256"] == hash_file(tmp_path / f"{kind}.onnx")
    assert manifest.inputs == {"rtx.onnx": raw["source_onnx_sha256"]}
    assert raw["plan_bytes"] == (engine_dir / "rtx.plan").stat().st_size > 1000
    assert raw["builder"]["strongly_typed"] is True and raw["builder"]["opt_level"] == 3
    assert raw["gpu_target"]["kind"] == "compute_capabilities"
    assert raw["plugins"] == []
    # I/O exactly as the ONNX declares them, dynamic axes as -1.
    io = {t["name"]: t for t in raw["io"]}
    assert io["x"] == {"name": "x", "mode": "input", "dtype": "float16", "shape": [-1, -1, K]}
    assert io["y"] == {"name": "y", "mode": "output", "dtype": "float16", "shape": [-1, -1, N]}
    assert raw["profiles"] == [
        {"name": "p0", "shapes": {"x": {"min": [1, 1, K], "opt": [2, 16, K], "max": [4, 64, K]}}}
    ]
    assert record.io_source == ("engine" if visible_gpus() else "network")


def test_calibration_hash_is_taken_from_the_export_manifest(tmp_path, rtx):
    export_dir = tmp_path / "export"
    # Only the field export writes counts; an input merely named like a calibration is not guessed at.
    with artifact_dir(
        export_dir, stage="export", inputs={"calibration": "sha256:bad"}, extra={"act_scales_hash": "sha256:c0ffee"}
    ) as tmp:
        make_fp16(tmp / "model.fp16.onnx")
    record = build_engine(_settings(tmp_path, export_dir / "model.fp16.onnx"), rtx, log=lambda _: None)
    assert record.calibration_hash == "sha256:c0ffee"
    assert record.export_manifest["stage"] == "export"
    assert record.export_manifest["fingerprint"] == load_manifest(export_dir).fingerprint


def test_existing_plan_is_refused_without_force_and_other_targets_survive(tmp_path, rtx):
    _build(tmp_path, rtx, "fp16", target="a")
    _build(tmp_path, rtx, "per_token", target="b")
    engine_dir = tmp_path / "engines" / "m"
    plan_a = (engine_dir / "a.plan").read_bytes()
    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        _build(tmp_path, rtx, "per_token", target="a")
    _build(tmp_path, rtx, "per_token", target="a", force=True)
    manifest = load_manifest(engine_dir, stage="build", verify_files=True)
    assert sorted(manifest.extra["engines"]) == ["a", "b"]
    assert (engine_dir / "a.plan").read_bytes() != plan_a  # rebuilt from the other graph
    assert manifest.extra["engines"]["a"]["source_onnx"].endswith("per_token.onnx")
    assert load_engine_record(engine_dir, "b").source_onnx.endswith("per_token.onnx")


def test_a_directory_that_is_not_an_engine_dir_is_refused(tmp_path, rtx):
    (tmp_path / "engines" / "m").mkdir(parents=True)
    (tmp_path / "engines" / "m" / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not an sq-trt engine directory"):
        _build(tmp_path, rtx)


def test_compute_capability_targets_change_the_engine_and_are_recorded(tmp_path, rtx):
    default = _build(tmp_path, rtx, target="all")
    ada = _build(tmp_path, rtx, target="ada", compute_capabilities=["8.9"])
    engine_dir = tmp_path / "engines" / "m"
    assert ada.gpu_target["compute_capabilities"] == ["8.9"]
    assert "default" in default.gpu_target["compute_capabilities"]
    assert (engine_dir / "ada.plan").read_bytes() != (engine_dir / "all.plan").read_bytes()
    with pytest.raises(BuildError, match="not a TensorRT-RTX .* target"):
        _build(tmp_path, rtx, target="volta", compute_capabilities=["7.0"])


def test_rtx_has_no_timing_cache_and_its_builds_are_deterministic(tmp_path, rtx):
    """TensorRT-RTX does no build-time tuning: its timing-cache API is a deprecated no-op that
    forces a GPU query (cudaError 35 here), so the builder never calls it. What a cache would
    save is tactic timing; there is none to save, which shows as byte-identical rebuilds."""
    assert not rtx.supports_timing_cache
    cache = tmp_path / "timing.cache"
    first = _build(tmp_path, rtx, "per_token", target="one", timing_cache=cache)
    assert not cache.exists()
    assert first.builder["timing_cache"]["used"] is False
    _build(tmp_path, rtx, "per_token", target="two")
    engine_dir = tmp_path / "engines" / "m"
    digest = [hashlib.sha256((engine_dir / f"{t}.plan").read_bytes()).hexdigest() for t in ("one", "two")]
    assert digest[0] == digest[1]


def test_rtx_engine_deserializes_on_a_gpu(tmp_path, rtx):
    if not visible_gpus():
        pytest.skip(
            "TensorRT-RTX deserializes engines only with a CUDA device (on this CPU machine its runtime "
            "fails with cudaError 35); the manifest's I/O is read from the parsed network instead"
        )
    _build(tmp_path, rtx, "per_token")
    runtime = rtx.trt.Runtime(rtx.trt.Logger(rtx.trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((tmp_path / "engines" / "m" / "rtx.plan").read_bytes())
    assert engine is not None
    assert {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)} == {"x", "y"}


# ---- bad input ---------------------------------------------------------------------------------


def test_parser_errors_name_the_node(tmp_path, rtx):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", "seq", K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", "seq", K])
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery_node")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 20)]
    )
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(BuildError) as exc:
        build_engine(_settings(tmp_path, tmp_path / "bad.onnx"), rtx, log=lambda _: None)
    message = str(exc.value)
    assert "parser rejected" in message and "'mystery_node' (NoSuchOp)" in message
    assert not (tmp_path / "engines" / "m").exists()


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage that is not protobuf" * 4])
def test_corrupt_onnx_is_refused(tmp_path, rtx, content):
    (tmp_path / "corrupt.onnx").write_bytes(content)
    with pytest.raises(BuildError, match="corrupt.onnx"):
        build_engine(_settings(tmp_path, tmp_path / "corrupt.onnx"), rtx, log=lambda _: None)


def test_missing_onnx_is_refused(tmp_path, rtx):
    with pytest.raises(BuildError, match="does not exist"):
        build_engine(_settings(tmp_path, tmp_path / "none.onnx"), rtx, log=lambda _: None)


def _plugin_graph(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", "seq", K])
    x_q = helper.make_tensor_value_info("x_q", TensorProto.INT8, ["batch", "seq", K])
    amax = helper.make_tensor_value_info("amax", TensorProto.FLOAT16, ["batch", "seq", 1])
    node = helper.make_node("PerTokenQuant", ["x"], ["x_q", "amax"], name="ptq_0", domain="sq_trt")
    graph = helper.make_graph([node], "g", [x], [x_q, amax])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("sq_trt", 1)]
    )
    onnx.save(model, str(path))
    return path


def test_plugin_nodes_are_refused_on_rtx_with_the_portable_alternative(tmp_path, rtx):
    with pytest.raises(BuildError) as exc:
        build_engine(_settings(tmp_path, _plugin_graph(tmp_path / "p.onnx")), rtx, log=lambda _: None)
    assert "ptq_0 (PerTokenQuant)" in str(exc.value) and "portable per-token" in str(exc.value)


def test_plugin_registration_failure_names_plugin_version_and_extra():
    # A backend whose module is not TensorRT: whether sq_trt.plugins is installed or not, registration
    # cannot succeed, and the error must say what the engine needs.
    backend = Backend("tensorrt", types.ModuleType("not_tensorrt"), "10.13.0")
    node = PluginNode("ptq_0", "PerTokenQuant", "1", "sq_trt")
    with pytest.raises(BuildError) as exc:
        register_plugins(backend, [node])
    message = str(exc.value)
    assert "sq_trt::PerTokenQuant v1" in message and "10.9" in message and "`kernels` extra" in message


def test_required_shape_outside_profiles_is_refused_before_building(tmp_path, rtx):
    with pytest.raises(ConfigError, match="batch=8, seq=16 lies outside every profile"):
        _build(tmp_path, rtx, required_shapes=[{"batch": 8, "seq": 16}])
    _build(tmp_path, rtx, required_shapes=[{"batch": 4, "seq": 64}])  # the edge is inside


def test_profile_with_min_above_opt_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        _settings(tmp_path, tmp_path / "x.onnx", profiles=[{"batch": [4, 2, 8]}])


def test_missing_tensorrt_names_extra_container_and_rtx():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT proper is importable here; the missing-module message cannot be produced")
    with pytest.raises(MissingDependencyError) as exc:
        load_tensorrt()
    message = str(exc.value)
    assert "sq-trt[trt]" in message and "nvcr.io/nvidia/tensorrt" in message and "tensorrt_rtx" in message


def test_auto_backend_says_which_and_why():
    backend, reason = select_backend("auto")
    if visible_gpus() and backend.name == "tensorrt":
        assert "GPU" in reason
    else:
        assert backend.name == "tensorrt_rtx" and "auto:" in reason


def test_tensorrt_backend_without_gpu_is_refused_clearly(tmp_path):
    if visible_gpus():
        pytest.skip("a GPU is visible; the no-GPU refusal cannot be produced")
    backend = Backend("tensorrt", types.ModuleType("tensorrt"), "10.13.0")
    make_fp16(tmp_path / "fp16.onnx")
    with pytest.raises(BuildError, match="none is visible .* --backend tensorrt_rtx"):
        build_engine(_settings(tmp_path, tmp_path / "fp16.onnx"), backend, log=lambda _: None)


def test_cli_recipe_fills_flags_and_flags_override(tmp_path, capsys):
    from sq_trt.cli import main

    make_per_tensor(tmp_path / "pt.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"backend: tensorrt_rtx\nname: from-recipe\ntarget: rtx\nengines_dir: {tmp_path / 'engines'}\n"
        "profiles:\n  - {name: p0, batch: [1, 1, 2], seq: [1, 8, 32]}\n"
    )
    argv = [
        "build",
        "--recipe",
        str(recipe),
        "--onnx",
        str(tmp_path / "pt.onnx"),
        "--name",
        "flag",
        "--seq",
        "1,8,16",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "backend tensorrt_rtx" in out and "flag/rtx.plan" in out
    record = json.loads((tmp_path / "engines" / "flag" / "manifest.json").read_text())["extra"]["engines"][
        "rtx"
    ]
    assert record["profiles"][0]["shapes"]["x"]["max"] == [
        2,
        16,
        K,
    ]  # batch from the recipe, seq from the flag
    assert main(argv) == 1  # exists now
    assert "pass --force" in capsys.readouterr().err
    recipe.write_text("backend: tensorrt_rtx\nnmae: typo\n")
    assert main(["build", "--recipe", str(recipe)]) == 1
    assert "nmae" in capsys.readouterr().err


def test_exporter_artifact_builds_and_its_calibration_hash_reaches_the_engine_manifest(tmp_path, rtx):
    """The stage contract end to end on a tiny Llama: calibrate -> export (per-tensor) -> build."""
    from sq_trt.calibrate.stage import calibrate
    from sq_trt.export.stage import ExportConfig, export_model
    from sq_trt.models.loading import load_model

    loaded = load_model("tiny:llama")
    chunks = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    scales = calibrate(loaded, chunks, progress=False)
    exported = export_model(
        loaded, tmp_path / "export", scales=scales, config=ExportConfig(act_mode="per_tensor")
    )
    export_manifest = load_manifest(tmp_path / "export")
    for path in (exported.fp16_path, exported.int8_path):
        record = build_engine(
            _settings(tmp_path, path, target=path.stem.replace(".", "-")), rtx, log=lambda _: None
        )
        assert record.calibration_hash == export_manifest.extra["act_scales_hash"] is not None
        assert record.export_manifest == {"stage": "export", "fingerprint": export_manifest.fingerprint}
        assert {t.name: t.dtype for t in record.io} == {"input_ids": "int64", "logits": "float16"}


def test_layer_summary_finds_int8_gemms_in_inspector_json():
    from sq_trt.engine.inspect import summarize_layers

    info = {
        "Layers": [
            {
                "Name": "q_proj",
                "LayerType": "CaskGemmMatrixMultiply",
                "Inputs": [{"Format/Datatype": "Row major INT8"}],
            },
            {
                "Name": "lm_head",
                "LayerType": "CaskGemmMatrixMultiply",
                "Inputs": [{"Format/Datatype": "Row major FP16"}],
            },
            {
                "Name": "norm",
                "LayerType": "PointWiseV2",
                "Inputs": [{"Format/Datatype": "Row major Int8 format"}],
            },
            "reformat_0",
        ]
    }
    summary = summarize_layers(info)
    assert summary["int8_gemms"] == [
        "q_proj"
    ]  # an INT8 pointwise layer is not a GEMM; an FP16 GEMM is not INT8
    assert summary["layers"] == 4 and summary["layer_types"]["CaskGemmMatrixMultiply"] == 2
    assert summary["plugin_tactics"] == []


def test_layer_summary_records_each_plugin_layers_tactic_per_profile():
    # The shape of TensorRT's detailed inspector JSON for a two-profile engine (a GPU-only claim,
    # docs/GPU_HOST.md); this pins how the manifest reads it.
    from sq_trt.engine.inspect import summarize_layers

    info = {
        "Layers": [
            {"Name": "layers.0.o_proj", "LayerType": "PluginV3", "TacticValue": "0x0000000000000005"},
            {"Name": "layers.0.o_proj [profile 1]", "LayerType": "PluginV3", "TacticValue": "0x0000000000000006"},
            {"Name": "layers.0.q_proj", "LayerType": "CaskGemmMatrixMultiply", "TacticValue": "0x1"},
            {"Name": "layers.0.up_proj [profile 1]", "LayerType": "PluginV3"},
        ]
    }
    assert summarize_layers(info)["plugin_tactics"] == [
        {"layer": "layers.0.o_proj", "profile": 0, "tactic": "0x0000000000000005"},
        {"layer": "layers.0.o_proj", "profile": 1, "tactic": "0x0000000000000006"},
        {"layer": "layers.0.up_proj", "profile": 1, "tactic": None},
    ]
