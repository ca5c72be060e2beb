"""The Triton model repository: config.pbtxt checked by parsing it into Triton's own ModelConfig protobuf."""

from __future__ import annotations

import pytest

from sq_trt.artifacts import artifact_dir
from sq_trt.engine.engine_manifest import EngineRecord, IoTensor
from sq_trt.engine.releases import TRITON_TENSORRT, container_release, serving_release
from sq_trt.engine.triton_repo import write_model_repository
from sq_trt.errors import ArtifactError

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (the `serve` extra) is not installed"
)
text_format = pytest.importorskip("google.protobuf.text_format")

PLAN = b"serialized-engine-bytes"  # the repository writer only copies the plan; its content is opaque here


def _record(
    backend: str = "tensorrt", release: str | None = None, tensorrt: str = "10.13.3.9"
) -> EngineRecord:
    return EngineRecord(
        target="h100",
        plan="h100.plan",
        plan_bytes=len(PLAN),
        backend=backend,
        backend_version=tensorrt,
        gpu_target={"kind": "device", "name": "NVIDIA H100", "compute_capability": "9.0"},
        profiles=[
            {"name": "small", "shapes": {"input_ids": {"min": [1, 1], "opt": [1, 128], "max": [4, 512]}}},
            {"name": "large", "shapes": {"input_ids": {"min": [4, 1], "opt": [8, 256], "max": [16, 512]}}},
        ],
        io=[
            IoTensor("input_ids", "input", "int64", [-1, -1]),
            IoTensor("logits", "output", "float16", [-1, -1, 49152]),
        ],
        io_source="engine",
        plugins=[],
        source_onnx="model.int8.onnx",
        source_onnx_sha256="sha256:00",
        calibration_hash=None,
        export_manifest={},
        builder={"opt_level": 3, "container_release": release},
        build_seconds=1.0,
    )


def _engine_dir(tmp_path, record: EngineRecord):
    engine_dir = tmp_path / "engines" / "m"
    with artifact_dir(engine_dir, stage="build", extra={"engines": {record.target: record.to_json()}}) as tmp:
        (tmp / record.plan).write_bytes(PLAN)
    return engine_dir


def _parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_config_parses_into_model_config_with_engine_io(tmp_path):
    engine_dir = _engine_dir(tmp_path, _record())
    model = write_model_repository(engine_dir, "h100", tmp_path / "repo", "smollm2")
    config = _parse(model.config_path.read_text())
    assert config.name == "smollm2" and config.platform == "tensorrt_plan"
    assert config.max_batch_size == 0  # the batch is an explicit, dynamic dim
    (inp,) = config.input
    assert (
        inp.name == "input_ids"
        and inp.data_type == model_config_pb2.TYPE_INT64
        and list(inp.dims) == [-1, -1]
    )
    (out,) = config.output
    assert out.data_type == model_config_pb2.TYPE_FP16 and list(out.dims) == [-1, -1, 49152]
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and list(group.profile) == ["0", "1"]
    assert (tmp_path / "repo" / "smollm2" / "1" / "model.plan").read_bytes() == PLAN
    # No build container recorded: the newest release whose TensorRT is the engine's (10.13.3).
    assert "tritonserver:25.10-py3" in model.serve_command
    assert "--model-repository=/models" in model.serve_command


def test_misspelled_field_fails_to_parse(tmp_path):
    engine_dir = _engine_dir(tmp_path, _record())
    text = write_model_repository(engine_dir, "h100", tmp_path / "repo", "m").config_path.read_text()
    _parse(text)
    with pytest.raises(text_format.ParseError):
        _parse(text.replace("max_batch_size", "max_batch_sise"))
    with pytest.raises(text_format.ParseError):
        _parse(text.replace("TYPE_FP16", "TYPE_HALF"))


def test_release_recorded_by_the_build_container_is_used(tmp_path):
    engine_dir = _engine_dir(tmp_path, _record(release="25.12"))
    model = write_model_repository(engine_dir, "h100", tmp_path / "repo", "m")
    assert "tritonserver:25.12-py3" in model.serve_command


def test_rtx_engine_is_refused(tmp_path):
    engine_dir = _engine_dir(tmp_path, _record(backend="tensorrt_rtx"))
    with pytest.raises(ArtifactError, match="rebuild with --backend tensorrt"):
        write_model_repository(engine_dir, "h100", tmp_path / "repo", "m")
    assert not (tmp_path / "repo" / "m").exists()


def test_existing_model_is_refused_unless_force(tmp_path):
    engine_dir = _engine_dir(tmp_path, _record())
    write_model_repository(engine_dir, "h100", tmp_path / "repo", "m")
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text("stale")
    with pytest.raises(ArtifactError, match="already exists"):
        write_model_repository(engine_dir, "h100", tmp_path / "repo", "m")
    write_model_repository(engine_dir, "h100", tmp_path / "repo", "m", force=True)
    _parse((tmp_path / "repo" / "m" / "config.pbtxt").read_text())


def test_unknown_target_and_modified_plan_are_refused(tmp_path):
    engine_dir = _engine_dir(tmp_path, _record())
    with pytest.raises(ArtifactError, match="no engine for target 'a100'"):
        write_model_repository(engine_dir, "a100", tmp_path / "repo", "m")
    (engine_dir / "h100.plan").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="changed since the manifest"):
        write_model_repository(engine_dir, "h100", tmp_path / "repo", "m")


def test_cli_prints_the_serving_command(tmp_path, capsys):
    from sq_trt.cli import main

    engine_dir = _engine_dir(tmp_path, _record())
    argv = [
        "export-triton",
        "--engine-dir",
        str(engine_dir),
        "--target",
        "h100",
        "--repo",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--name", "m", "--triton-release", "25.10"]) == 0
    out = capsys.readouterr().out
    assert "tritonserver:25.10-py3 tritonserver --model-repository=/models" in out
    assert main([*argv, "--name", "m"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_server_release_with_another_tensorrt_is_refused_naming_both(tmp_path, capsys):
    from sq_trt.cli import main

    # 25.10 ships TensorRT 10.13.3; an engine of 10.12.0.36 would not load there.
    engine_dir = _engine_dir(tmp_path, _record(tensorrt="10.12.0.36"))
    with pytest.raises(ArtifactError, match=r"25\.10-py3 carries TensorRT 10\.13\.3.*TensorRT 10\.12\.0\.36"):
        write_model_repository(engine_dir, "h100", tmp_path / "repo", "m", release="25.10")
    assert not (tmp_path / "repo" / "m").exists()
    argv = [
        "export-triton",
        "--engine-dir",
        str(engine_dir),
        "--target",
        "h100",
        "--repo",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--name", "m", "--triton-release", "25.10"]) == 1
    err = capsys.readouterr().err
    assert "10.13.3" in err and "10.12.0.36" in err and "rebuild the engine in that release" in err
    # The same engine recorded as built in another release is served by that release.
    assert serving_release("10.12.0.36", built_in="25.06", requested=None) == "25.06"


def test_engine_built_outside_a_known_release_is_refused(tmp_path):
    engine_dir = _engine_dir(tmp_path, _record(tensorrt="10.14.1.48"))
    with pytest.raises(ArtifactError, match="no tritonserver release is known to carry TensorRT 10.14.1.48"):
        write_model_repository(engine_dir, "h100", tmp_path / "repo", "m")


def test_recorded_release_that_contradicts_the_engines_tensorrt_is_refused():
    with pytest.raises(ArtifactError, match="25.10, which ships TensorRT 10.13.3, but TensorRT 10.12.0.36"):
        serving_release("10.12.0.36", built_in="25.10", requested=None)
    # The build's own release is accepted even when the table does not list it yet.
    assert serving_release("11.4.0.106", built_in="26.09", requested="26.09") == "26.09"
    with pytest.raises(ArtifactError, match="not in sq-trt's release table"):
        serving_release("11.4.0.106", built_in="26.09", requested="26.10")


def test_container_release_is_read_from_nvidia_or_sq_trt_variables():
    assert container_release({"NVIDIA_TENSORRT_VERSION": "25.10", "TENSORRT_VERSION": "10.13.3.9"}) == "25.10"
    assert (
        container_release({"SQ_TRT_CONTAINER_RELEASE": "25.09", "NVIDIA_TENSORRT_VERSION": "25.10"})
        == "25.09"
    )
    assert container_release({"TENSORRT_VERSION": "10.13.3.9"}) is None
    assert all(v.count(".") == 2 for v in TRITON_TENSORRT.values())
