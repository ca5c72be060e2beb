"""config.pbtxt injection (issue 28, class 6): whatever the names, the file parses back to exactly what was meant.

Model names come from the command line and tensor names from an engine manifest (an attacker with
write access to the engine directory chooses them). Each case renders the config, parses it with
Triton's own ``ModelConfig`` protobuf and compares field by field: a quote, a newline, a backslash or
a control character in a name can never add a field, change the platform or cut a name short.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sq_trt.engine.engine_manifest import EngineRecord, IoTensor
from sq_trt.engine.triton_generate import render_generate_config
from sq_trt.engine.triton_repo import check_model_name, render_config
from sq_trt.errors import ArtifactError

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (the `serve` extra) is not installed"
)
text_format = pytest.importorskip("google.protobuf.text_format")

SETTINGS = settings(max_examples=60, deadline=None, database=None)
INJECTION = 'm"\nplatform: "onnxruntime_onnx'
NAMES = st.text(min_size=1, max_size=40) | st.sampled_from(
    [INJECTION, 'a\\"b', "x\\", "}\ninput {", "\x00\x1b[2J"]
)


def _record(inputs: list[str], outputs: list[str], generation: bool = False) -> EngineRecord:
    io = [IoTensor(n, "input", "int64", [-1, -1]) for n in inputs]
    io += [IoTensor(n, "output", "float16", [-1, -1, 7]) for n in outputs]
    profiles: list[dict[str, object]] = [{"name": "p", "shapes": {}}]
    if generation:
        io.append(IoTensor("past_key_values.0.key", "input", "float16", [-1, 2, -1, 8]))
        past = {"past_key_values.0.key": {"min": [1, 2, 0, 8], "opt": [1, 2, 8, 8], "max": [1, 2, 63, 8]}}
        profiles = [{"name": "prefill", "shapes": {}}, {"name": "decode", "shapes": past}]
    return EngineRecord(
        target="t", plan="t.plan", plan_bytes=1, backend="tensorrt", backend_version="10.13.3.9",
        gpu_target={}, profiles=profiles, io=io, io_source="engine", plugins=[], source_onnx="m.onnx",
        source_onnx_sha256="sha256:00", calibration_hash=None, export_manifest={}, builder={}, build_seconds=0.0,
    )  # fmt: skip


def _parse(text: str):  # type: ignore[no-untyped-def]
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@SETTINGS
@given(name=NAMES.filter(lambda n: n.isprintable()), inputs=st.lists(NAMES, min_size=1, max_size=3, unique=True),
       outputs=st.lists(NAMES, min_size=1, max_size=2, unique=True))  # fmt: skip
def test_plan_config_parses_back_to_the_names_given(name: str, inputs: list[str], outputs: list[str]) -> None:
    config = _parse(render_config(name, _record(inputs, outputs), instances=2))
    assert config.name == name and config.platform == "tensorrt_plan" and config.backend == ""
    assert [t.name for t in config.input] == inputs and [t.name for t in config.output] == outputs
    assert [list(t.dims) for t in config.output] == [[-1, -1, 7]] * len(outputs)
    assert config.max_batch_size == 0 and [g.count for g in config.instance_group] == [2]


@SETTINGS
@given(
    name=NAMES.filter(lambda n: n.isprintable()),
    engine_model=NAMES,
    kv=st.dictionaries(NAMES, NAMES, max_size=3),
)
def test_generation_config_parses_back_to_the_values_given(
    name: str, engine_model: str, kv: dict[str, str]
) -> None:
    config = _parse(render_generate_config(name, engine_model, _record(["input_ids"], ["logits"], True), kv))
    assert config.name == name and config.backend == "python" and config.platform == ""
    assert config.parameters["engine_model"].string_value == engine_model
    assert json.loads(config.parameters["kv_cache"].string_value) == kv
    assert config.parameters["max_context"].string_value == "64"
    assert config.model_transaction_policy.decoupled


@pytest.mark.parametrize("name", [INJECTION, "a\tb", "x\x00", "..", ".hidden", "a/b", "a\\b", ""])
def test_model_names_that_are_no_plain_directory_name_are_refused(name: str) -> None:
    with pytest.raises(ArtifactError, match="plain directory name"):
        check_model_name(name)
