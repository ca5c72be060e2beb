"""Generation engines and serving: TensorRT-RTX builds with prefill/decode profiles, Triton repository, BLS loop.

TensorRT-RTX builds on CPU (it cannot run here); the Triton configs are checked by
parsing them into Triton's own ModelConfig protobuf; the Python model's loop is
checked by running the same runner class with ONNX Runtime behind its ``infer``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from sq_trt.engine.engine_manifest import EngineRecord, IoTensor
from sq_trt.engine.recipe import GenerationLimits, resolve_settings
from sq_trt.errors import ConfigError, GenerationError
from sq_trt.export.past import export_float_onnx_with_past
from sq_trt.export.stage import ExportConfig, export_model
from sq_trt.generate.loop import generate
from sq_trt.generate.remote import RemoteStepRunner
from sq_trt.generate.runners import OrtStepRunner
from sq_trt.generate.trt_runner import generation_profile_indices, limits_from_profiles
from sq_trt.models.cache import cache_layout
from sq_trt.models.loading import load_model


@pytest.fixture(scope="module")
def tiny_llama_export(tmp_path_factory):
    """export --with-past of tiny Llama (GQA): FP16 baseline and INT8 per-token portable, linted."""
    loaded = load_model("tiny:llama")
    out = tmp_path_factory.mktemp("gen") / "export"
    config = ExportConfig(act_mode="per_token", encoding="portable", with_past=True)
    export_model(loaded, out, config=config)
    return loaded, out


def test_export_with_past_writes_linted_fp16_and_int8_generation_graphs(tiny_llama_export):
    loaded, out = tiny_llama_export
    manifest = json.loads((out / "manifest.json").read_text())
    extra = manifest["extra"]
    layout = cache_layout(loaded.model)
    assert extra["kv_cache"]["kv_heads"] == layout.kv_heads == 2 and extra["kv_cache"]["layers"] == 2
    inputs = [t["name"] for t in extra["io"]["inputs"]]
    assert inputs == ["input_ids", "position_ids", *layout.past_names()]
    assert [t["name"] for t in extra["io"]["outputs"]] == ["logits", *layout.present_names()]
    assert len(extra["quantized_linears"]) == 14
    assert (out / "tokenizer").is_dir()
    int8 = onnx.load(str(out / "model.int8.onnx"))
    assert sum(n.op_type == "DequantizeLinear" for n in int8.graph.node) >= 14


def test_int8_generation_graph_decodes_like_its_own_full_sequence(tiny_llama_export):
    """Per-token quantization depends on each token alone, so step-by-step equals one pass."""
    _, out = tiny_llama_export
    runner = OrtStepRunner(out / "model.int8.onnx", max_context=32)
    ids = np.random.default_rng(0).integers(0, 256, (1, 10))
    runner.reset(1)
    whole = runner.step(ids)
    runner.reset(1)
    steps = np.concatenate(
        [runner.step(ids[:, :6])] + [runner.step(ids[:, t : t + 1]) for t in range(6, 10)], axis=1
    )
    np.testing.assert_allclose(steps, whole, atol=2e-2, rtol=0)
    assert (np.argmax(steps, -1) == np.argmax(whole, -1)).mean() >= 0.9


def test_generation_limits_make_prefill_and_decode_profiles():
    limits = GenerationLimits(max_batch=2, max_input=16, max_context=64)
    prefill, decode = limits.profiles()
    # Opt shapes = the GEMM regime each profile runs (TensorRT picks each tactic there): prefill at the
    # longest prompt (M = 16 tokens), decode with the whole batch stepping (M = 2).
    assert (prefill.name, prefill.batch, prefill.seq, prefill.past) == ("prefill", (1, 1, 2), (1, 16, 16), (0, 0, 48))
    assert (decode.name, decode.batch, decode.seq, decode.past) == ("decode", (1, 2, 2), (1, 1, 1), (1, 32, 63))
    with pytest.raises(ConfigError, match="max_input"):
        resolve_settings({"generation": {"max_input": 64, "max_context": 64}}, {}, source="test")
    with pytest.raises(ConfigError, match="not both"):
        resolve_settings({"generation": {}, "profiles": [{"name": "x"}]}, {}, source="test")


@pytest.mark.parametrize("graph", ["model.fp16.onnx", "model.int8.onnx"])
def test_rtx_builds_generation_engines_with_both_profiles(tiny_llama_export, tmp_path, graph):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX (the `rtx` extra) is not installed")
    from sq_trt.engine.backends import load_tensorrt_rtx
    from sq_trt.engine.builder import build_engine

    _, out = tiny_llama_export
    settings = resolve_settings(
        {"generation": {"max_batch": 2, "max_input": 32, "max_context": 128}},
        {"onnx": out / graph, "name": "gen", "target": "rtx", "engines_dir": tmp_path / "engines"},
        source="test",
    )
    record = build_engine(settings, load_tensorrt_rtx(), log=lambda _: None)
    assert [p["name"] for p in record.profiles] == ["prefill", "decode"]
    assert limits_from_profiles(record.profiles) == (2, 32, 128)
    past = record.profiles[0]["shapes"]["past_key_values.0.key"]
    assert past["min"] == [1, 2, 0, 16] and past["max"] == [2, 2, 96, 16]
    names = {t.name for t in record.io}
    assert {"input_ids", "position_ids", "past_key_values.1.value", "present.1.value", "logits"} <= names
    assert (tmp_path / "engines" / "gen" / "rtx.plan").stat().st_size > 1000


def test_an_engine_without_generation_profiles_is_refused():
    with pytest.raises(GenerationError, match="generation profiles"):
        generation_profile_indices([{"name": "default", "shapes": {}}])


def test_remote_runner_runs_the_same_loop_over_any_infer_call(tiny_llama_export):
    """The Triton BLS model's runner, with ONNX Runtime behind ``infer`` instead of the plan model."""
    from sq_trt.runtime.onnx import session_from_onnx

    _, out = tiny_llama_export
    session = session_from_onnx(out / "model.fp16.onnx")
    local = OrtStepRunner(out / "model.fp16.onnx", max_context=40)

    def infer(feeds, names):
        return dict(zip(names, session.run(names, feeds), strict=True))

    remote = RemoteStepRunner(infer, local.layout, local.dtype, max_context=40)
    prompt = [3, 14, 15, 92, 65]
    assert (
        generate(remote, prompt, max_new_tokens=12).token_ids
        == generate(local, prompt, max_new_tokens=12).token_ids
    )

    def wrong(feeds, names):
        outputs = infer(feeds, names)
        return {k: (v[:, :1] if k.startswith("present") else v) for k, v in outputs.items()}

    with pytest.raises(GenerationError, match="has shape"):
        generate(RemoteStepRunner(wrong, local.layout, local.dtype, max_context=40), prompt, max_new_tokens=3)


def test_remote_runner_feeds_back_the_cache_objects_infer_returned(tiny_llama_export):
    """The Triton model keeps the cache on the GPU (DLPack): the runner must not convert it to numpy.

    Here ``infer`` returns the present tensors as torch tensors (what the server's DLPack outputs are)
    and checks that each step's past tensors are exactly the objects the previous step returned.
    """
    import torch

    from sq_trt.runtime.onnx import session_from_onnx

    _, out = tiny_llama_export
    session = session_from_onnx(out / "model.fp16.onnx")
    local = OrtStepRunner(out / "model.fp16.onnx", max_context=40)
    returned: list[object] = []

    def infer(feeds, names):
        past = [v for k, v in feeds.items() if k.startswith("past")]
        if returned:
            assert all(a is b for a, b in zip(past, returned, strict=True)), "the cache was copied or converted"
        host = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in feeds.items()}
        outputs = dict(zip(names, session.run(names, host), strict=True))
        present = {k: torch.from_numpy(v) for k, v in outputs.items() if k.startswith("present")}
        returned[:] = list(present.values())
        return {**outputs, **present}

    remote = RemoteStepRunner(infer, local.layout, local.dtype, max_context=40)
    prompt = [3, 14, 15, 92, 65]
    assert (
        generate(remote, prompt, max_new_tokens=6).token_ids == generate(local, prompt, max_new_tokens=6).token_ids
    )
    assert len(returned) == 2 * local.layout.layers and all(torch.is_tensor(t) for t in returned)


def _generation_record() -> EngineRecord:
    limits = GenerationLimits(max_batch=1, max_input=32, max_context=128)

    def shapes(p):
        return {
            "input_ids": {"min": [1, 1], "opt": [1, p.seq[1]], "max": [1, p.seq[2]]},
            "past_key_values.0.key": {"min": [1, 2, p.past[0], 16], "max": [1, 2, p.past[2], 16]},
        }

    return EngineRecord(
        target="h100",
        plan="h100.plan",
        plan_bytes=4,
        backend="tensorrt",
        backend_version="10.13.3.9",
        gpu_target={},
        profiles=[{"name": p.name, "shapes": shapes(p)} for p in limits.profiles()],
        io=[
            IoTensor("input_ids", "input", "int64", [-1, -1]),
            IoTensor("position_ids", "input", "int64", [-1, -1]),
            IoTensor("past_key_values.0.key", "input", "float16", [-1, 2, -1, 16]),
            IoTensor("past_key_values.0.value", "input", "float16", [-1, 2, -1, 16]),
            IoTensor("logits", "output", "float16", [-1, -1, 256]),
            IoTensor("present.0.key", "output", "float16", [-1, 2, -1, 16]),
            IoTensor("present.0.value", "output", "float16", [-1, 2, -1, 16]),
        ],
        io_source="engine",
        plugins=[],
        source_onnx="model.fp16.onnx",
        source_onnx_sha256="sha256:00",
        calibration_hash=None,
        export_manifest={},
        builder={},
        build_seconds=1.0,
    )


def test_triton_generation_repository_configs_parse_into_model_config(tmp_path, tiny_llama_export):
    model_config_pb2 = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (the `serve` extra) is not installed"
    )
    from google.protobuf import text_format

    from sq_trt.artifacts import artifact_dir
    from sq_trt.engine.triton_generate import write_generation_repository

    loaded, out = tiny_llama_export
    record = _generation_record()
    engine_dir = tmp_path / "engines" / "gen"
    with artifact_dir(engine_dir, stage="build", extra={"engines": {"h100": record.to_json()}}) as tmp:
        (tmp / "h100.plan").write_bytes(b"plan")
    kv = cache_layout(loaded.model).to_json()
    model_dir = write_generation_repository(
        engine_dir, "h100", tmp_path / "repo", "gen", tokenizer_dir=out / "tokenizer", kv_cache=kv
    )
    python_cfg = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    engine_cfg = text_format.Parse(
        (tmp_path / "repo" / "gen_engine" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert python_cfg.backend == "python" and python_cfg.model_transaction_policy.decoupled
    assert python_cfg.parameters["engine_model"].string_value == "gen_engine"
    assert python_cfg.parameters["max_context"].string_value == "128"
    assert json.loads(python_cfg.parameters["kv_cache"].string_value)["kv_heads"] == 2
    assert [i.name for i in python_cfg.input][:2] == ["text_input", "max_tokens"]
    assert list(engine_cfg.instance_group[0].profile) == ["0", "1"]
    assert (model_dir / "1" / "model.py").is_file() and (model_dir / "1" / "tokenizer").is_dir()
    compile((model_dir / "1" / "model.py").read_text(), "model.py", "exec")


def test_float_export_with_past_refuses_an_encoder():
    from sq_trt.errors import UnsupportedArchitectureError

    loaded = load_model("tiny:bert")
    with pytest.raises(UnsupportedArchitectureError):
        export_float_onnx_with_past(loaded.model, loaded.spec)


def test_compare_scores_generation_graphs_and_gates_on_generation_metrics(tiny_llama_export, tmp_path):
    from sq_trt.artifacts.comparison import load_comparison
    from sq_trt.cli import main
    from sq_trt.generate.accuracy import first_divergence
    from sq_trt.report import write_report

    _, out = tiny_llama_export
    fp16, int8 = out / "model.fp16.onnx", out / "model.int8.onnx"
    argv = [
        "compare",
        "--baseline",
        f"fp16={fp16}",
        "--candidate",
        f"int8={int8}",
        "--candidate",
        f"same={fp16}",
    ]
    argv += ["--model", "tiny:llama", "--samples", "2", "--seq-len", "16", "--no-progress"]
    argv += ["--generation-prompts", "3", "--generation-prompt-tokens", "8", "--generation-tokens", "6"]
    assert main([*argv, "--out", str(tmp_path / "cmp")]) == 0
    comparison = load_comparison(tmp_path / "cmp")
    same, int8_result = comparison["generation"]["same"], comparison["generation"]["int8"]
    # The baseline against itself: identical continuations, divergence at the end, full agreement.
    assert same["metrics"] == {
        "exact_match_rate": 1.0,
        "mean_first_divergence": 6.0,
        "teacher_forced_top1": 1.0,
    }
    assert (
        comparison["metrics"]["same"]["summary"]["top1_agreement"] == 1.0
    )  # full-sequence path, empty cache
    for sample in int8_result["samples"]:
        assert sample["first_divergence"] == first_divergence(sample["baseline_ids"], sample["candidate_ids"])
        assert len(sample["baseline_ids"]) == 6 and isinstance(sample["candidate"], str)
    assert (
        comparison["metrics"]["int8"]["summary"]["teacher_forced_top1"] == int8_result["teacher_forced_top1"]
    )
    report = write_report(tmp_path / "cmp", tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Generated text: baseline vs candidate" in html and "teacher-forced top-1" in html
    assert report.generation["int8"]["prompts"] == 3
    # A gate on a generation metric decides the exit code (3 = gate failed).
    gate = ["--gate", "same:teacher_forced_top1>=1", "--gate", "int8:exact_match_rate>1"]
    assert main([*argv, *gate, "--out", str(tmp_path / "cmp2")]) == 3


def test_cli_build_takes_generation_limits(tiny_llama_export, tmp_path):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX (the `rtx` extra) is not installed")
    from sq_trt.cli import main
    from sq_trt.engine.engine_manifest import load_engine_record

    _, out = tiny_llama_export
    argv = ["build", "--onnx", str(out / "model.fp16.onnx"), "--name", "g", "--target", "rtx"]
    argv += [
        "--backend",
        "tensorrt_rtx",
        "--engines-dir",
        str(tmp_path),
        "--max-input",
        "16",
        "--max-context",
        "64",
    ]
    assert main(argv) == 0
    record = load_engine_record(tmp_path / "g", "rtx")
    assert limits_from_profiles(record.profiles) == (1, 16, 64)


def test_generate_refuses_an_engine_without_generation_profiles(tmp_path, capsys):
    from sq_trt.artifacts import artifact_dir
    from sq_trt.cli import main

    record = _generation_record()
    record.profiles = [{"name": "default", "shapes": {}}]
    engine_dir = tmp_path / "engines" / "plain"
    with artifact_dir(engine_dir, stage="build", extra={"engines": {"h100": record.to_json()}}) as tmp:
        (tmp / "h100.plan").write_bytes(b"plan")
    assert main(["generate", "--engine", str(engine_dir), "--prompt", "hi", "--tokenizer", "tiny:llama"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not the generation profiles" in err and "\n" not in err


@pytest.mark.parametrize(("act_mode", "encoding"), [("per_tensor", "portable"), ("per_token", "plugin")])
def test_other_int8_candidates_export_with_past_and_decode_like_one_pass(tmp_path, act_mode, encoding):
    """Per-tensor (static scales) and the plugin encoding (expanded to standard ops for ONNX Runtime)."""
    import torch

    from sq_trt.calibrate.stage import calibrate

    loaded = load_model("tiny:llama")
    torch.manual_seed(1)
    scales = calibrate(loaded, torch.randint(0, 256, (4, 32)), progress=False)
    config = ExportConfig(act_mode=act_mode, encoding=encoding, with_past=True)
    export_model(loaded, tmp_path / "export", scales=scales, config=config)
    graph = onnx.load(str(tmp_path / "export" / "model.int8.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert ("PerTokenQuant" in ops) == (encoding == "plugin") and "DequantizeLinear" in ops
    runner = OrtStepRunner(tmp_path / "export" / "model.int8.onnx", max_context=32)
    ids = np.random.default_rng(1).integers(0, 256, (1, 12))
    runner.reset(1)
    whole = runner.step(ids)
    runner.reset(1)
    steps = np.concatenate(
        [runner.step(ids[:, :5])] + [runner.step(ids[:, t : t + 1]) for t in range(5, 12)], 1
    )
    np.testing.assert_allclose(steps, whole, atol=2e-2, rtol=0)


def test_cli_export_triton_finds_the_tokenizer_and_cache_layout_of_a_generation_engine(
    tmp_path, tiny_llama_export
):
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is not installed")
    from sq_trt.artifacts import artifact_dir
    from sq_trt.cli import main

    _, out = tiny_llama_export
    record = _generation_record()
    record.source_onnx = str(out / "model.fp16.onnx")
    engine_dir = tmp_path / "engines" / "gen"
    with artifact_dir(engine_dir, stage="build", extra={"engines": {"h100": record.to_json()}}) as tmp:
        (tmp / "h100.plan").write_bytes(b"plan")
    argv = [
        "export-triton",
        "--engine-dir",
        str(engine_dir),
        "--target",
        "h100",
        "--repo",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--name", "chat"]) == 0
    assert (tmp_path / "r" / "chat" / "1" / "tokenizer").is_dir()
    assert (tmp_path / "r" / "chat_engine" / "1" / "model.plan").read_bytes() == b"plan"
    assert main([*argv, "--name", "chat"]) == 1  # exists: refused without --force


def test_cli_generate_reads_context_and_tokenizer_from_the_export(tiny_llama_export, capsys):
    from sq_trt.cli import main

    loaded, out = tiny_llama_export
    argv = ["generate", "--onnx", str(out / "model.fp16.onnx"), "--prompt", "abc", "--max-new-tokens", "3"]
    assert main([*argv, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["prompt_ids"] == loaded.tokenizer("abc")["input_ids"] and len(result["token_ids"]) == 3
    # The manifest's context is the model's max positions (512 for the tiny models).
    assert main([*argv[:3], "--prompt", "x" * 511, "--max-new-tokens", "3"]) == 1
    assert "past the context of 512" in capsys.readouterr().err
