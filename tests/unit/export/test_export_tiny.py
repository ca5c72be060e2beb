"""W8A8 ONNX export of tiny models checked against the PyTorch W8A8 reference through ONNX Runtime.

The reference is :func:`sq_trt.quant.fakequant.apply_fake_quant` (float32). The
INT8 graphs here are exported in float32 too, so the only differences left are
float rounding: ``(x_q / 127) @ W_dq * amax`` vs ``(x_q * amax / 127) @ W_dq``
and a different accumulation order. Those are ~1e-7 relative, but one of them
occasionally moves an activation across a rounding boundary, so one int8 value
flips by one step and the flip propagates. The comparisons are built for that:

* int8 activations of the first quantized linear are compared element-wise:
  at most one step apart, and flips are rare (< 0.1 %);
* logits: the ONNX-vs-reference discrepancy must be under 10 % of the
  quantization error itself (RMS of ``reference - float``). A real mismatch (a
  wrong scale, axis, transposed weight or missing quantizer) makes that ratio
  ~1 or more; boundary flips keep it around 1e-2 (measured: 0.01-0.06 for
  llama, ~1e-5 for gpt2/opt/bert);
* greedy predictions agree on >= 98 % of positions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from sq_trt.artifacts import ActScales
from sq_trt.calibrate.stage import calibrate
from sq_trt.errors import ArtifactError, ConfigError, ExportError
from sq_trt.export.lint import lint_qdq
from sq_trt.export.onnx_export import WRAPPED_PREFIX, export_float_onnx, graph_io
from sq_trt.export.qdq import quantize_graph, targets_from_model
from sq_trt.export.stage import ExportConfig, check_memory, export_model
from sq_trt.models.loading import LoadedModel, load_model, weights_fingerprint
from sq_trt.models.registry import quantizable_linears
from sq_trt.models.tiny import tiny_model
from sq_trt.quant import reference
from sq_trt.quant.fakequant import apply_fake_quant
from sq_trt.runtime.onnx import OnnxModelRunner, session_from_onnx

SEQ = 24


class Exported:
    """A tiny model, its calibration and its float32 ONNX export (shared by a module's tests)."""

    def __init__(self, family: str) -> None:
        self.loaded: LoadedModel = load_model(f"tiny:{family}")
        self.kind = self.loaded.spec.kind
        torch.manual_seed(1)
        self.scales: ActScales = calibrate(self.loaded, torch.randint(0, 256, (4, 32)), progress=False)
        self.ids = torch.randint(0, 256, (2, SEQ))
        self.mask = torch.ones_like(self.ids)
        if self.kind == "encoder":
            self.mask[1, SEQ - 5 :] = 0  # padding exercises the attention-mask input
        self.base = export_float_onnx(self.loaded.model, self.loaded.spec, dtype="float32")

    def int8(
        self, act_mode: str, encoding: str = "portable", exclude: tuple[str, ...] = ()
    ) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(self.base)
        names = [
            n for n in quantizable_linears(self.loaded.model) if not any(fnmatchcase(n, p) for p in exclude)
        ]
        targets = targets_from_model(
            self.loaded.model,
            names,
            weight_layout=self.loaded.spec.weight_layout,
            input_amax=self.scales.input_amax,
            prefix=WRAPPED_PREFIX,
        )
        quantize_graph(model, targets, act_mode=act_mode, encoding=encoding, act_dtype="float32")
        lint_qdq(model)
        return model

    def torch_out(self, model: Any) -> np.ndarray:
        with torch.no_grad():
            if self.kind == "encoder":
                return model(input_ids=self.ids, attention_mask=self.mask).last_hidden_state.numpy()
            return model(input_ids=self.ids, use_cache=False).logits.numpy()

    def fake_quant(self, act_mode: str) -> Any:
        model = copy.deepcopy(self.loaded.model)
        apply_fake_quant(model, self.scales, act_mode=act_mode)
        return model

    def onnx_out(self, model: onnx.ModelProto) -> np.ndarray:
        return OnnxModelRunner(model).run(self.ids, self.mask if self.kind == "encoder" else None)


_EXPORTED: dict[str, Exported] = {}


def _exported(family: str) -> Exported:
    if family not in _EXPORTED:
        _EXPORTED[family] = Exported(family)
    return _EXPORTED[family]


@pytest.fixture(scope="module", params=["llama", "gpt2", "opt", "bert"])
def exported(request: pytest.FixtureRequest) -> Exported:
    return _exported(request.param)


@pytest.fixture(scope="module")
def llama() -> Exported:
    return _exported("llama")


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


@pytest.mark.parametrize(
    ("act_mode", "encoding"), [("per_token", "portable"), ("per_token", "plugin"), ("per_tensor", "plugin")]
)
def test_int8_onnx_matches_pytorch_w8a8_reference(exported: Exported, act_mode: str, encoding: str) -> None:
    float_out = exported.torch_out(exported.loaded.model)
    ref = exported.torch_out(exported.fake_quant(act_mode))
    got = exported.onnx_out(exported.int8(act_mode, encoding))
    quant_error = _rms(ref - float_out)
    assert quant_error > 1e-4, "the reference must differ from float, or this test proves nothing"
    ratio = _rms(got - ref) / quant_error
    assert ratio < 0.1, f"ONNX vs reference discrepancy is {ratio:.3f} of the quantization error"
    agree = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    assert agree >= 0.98, f"greedy predictions agree on only {agree:.3f}"


def test_int8_activations_flip_at_most_one_step(llama: Exported) -> None:
    """The first quantized linear's int8 input in ONNX vs the reference quantizer on PyTorch's activation."""
    name = "model.layers.0.self_attn.q_proj"
    graph = llama.int8("per_token", "portable")
    graph.graph.output.append(
        onnx.helper.make_tensor_value_info(f"{name}/input_q", onnx.TensorProto.INT8, None)
    )
    onnx_q = session_from_onnx(graph).run([f"{name}/input_q"], {"input_ids": llama.ids.numpy()})[0]
    seen: list[torch.Tensor] = []
    module = llama.loaded.model.get_submodule(name)
    handle = module.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].detach()))
    try:
        llama.torch_out(llama.loaded.model)
    finally:
        handle.remove()
    ref_q, _ = reference.quantize_per_token(seen[0])
    diff = np.abs(onnx_q.astype(np.int32) - ref_q.numpy().astype(np.int32))
    assert diff.max() <= 1
    assert np.mean(diff > 0) < 1e-3


def test_plugin_and_portable_encodings_agree_bit_exact(llama: Exported) -> None:
    """Run in float32, the expanded plugin graph and the portable graph give identical int8 and logits."""
    names = [
        f"{n}/input_q"
        for n in quantizable_linears(llama.loaded.model)
        if not n.endswith(("k_proj", "v_proj", "up_proj"))
    ]
    outs = {}
    for encoding in ("plugin", "portable"):
        graph = llama.int8("per_token", encoding)
        for name in names:
            graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT8, None))
        outs[encoding] = session_from_onnx(graph).run(["logits", *names], {"input_ids": llama.ids.numpy()})
    assert len(outs["plugin"]) == 1 + len(names) == 1 + 8
    for plugin, portable in zip(outs["plugin"], outs["portable"], strict=True):
        np.testing.assert_array_equal(plugin, portable)


def test_exclude_keeps_linears_float(llama: Exported) -> None:
    graph = llama.int8("per_token", "portable", exclude=("*.mlp.*",))
    weights = {init.name: init for init in graph.graph.initializer}
    assert weights["model.model.layers.0.mlp.down_proj.weight"].data_type == onnx.TensorProto.FLOAT
    assert "model.layers.0.self_attn.q_proj.weight_int8" in weights
    assert "model.layers.0.mlp.down_proj.weight_int8" not in weights


def test_io_is_dynamic_and_named(exported: Exported) -> None:
    io = graph_io(exported.base)
    inputs = [(t.name, t.dtype, t.shape) for t in io["inputs"]]
    if exported.kind == "decoder":
        assert inputs == [("input_ids", "int64", ("batch", "seq"))]
        assert io["outputs"][0].name == "logits" and io["outputs"][0].shape[:2] == ("batch", "seq")
    else:
        assert inputs == [
            ("input_ids", "int64", ("batch", "seq")),
            ("attention_mask", "int64", ("batch", "seq")),
        ]
        assert io["outputs"][0].name == "last_hidden_state"
    # Another batch and length than the export example run through the same graph.
    runner = OnnxModelRunner(exported.base)
    ids = torch.randint(0, 256, (3, 11))
    assert runner.run(ids).shape[:2] == (3, 11)


def test_runner_perplexity_matches_pytorch(llama: Exported) -> None:
    from sq_trt.runtime.perplexity import perplexity

    chunks = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(3))
    expected = perplexity(llama.loaded.model, chunks, progress=False)
    got = perplexity(OnnxModelRunner(llama.base).run, chunks, batch_size=2, progress=False)
    assert got == pytest.approx(expected, rel=1e-5)  # float32 graph vs float32 eager: rounding only


def test_unsupported_op_around_linear_names_it(llama: Exported) -> None:
    graph = onnx.ModelProto()
    graph.CopyFrom(llama.base)
    weight = "model.model.layers.1.mlp.up_proj.weight"
    transpose = next(n for n in graph.graph.node if n.input and n.input[0] == weight)
    transpose.op_type, transpose.name = "Identity", "odd_node"
    del transpose.attribute[:]
    targets = targets_from_model(
        llama.loaded.model,
        ["model.layers.1.mlp.up_proj"],
        weight_layout="linear",
        input_amax=None,
        prefix=WRAPPED_PREFIX,
    )
    with pytest.raises(ExportError, match=r"model\.layers\.1\.mlp\.up_proj.*Identity node 'odd_node'"):
        quantize_graph(graph, targets, act_mode="per_token")


# --- the export stage (artifact directory, manifest, refusals) -------------------------------------------


@pytest.fixture(scope="module")
def llama_artifact(module_tmp: Callable[[str], Path]) -> Path:
    """`sq-trt export` of tiny llama, per-tensor (FP16 deployment files), through the CLI."""
    from sq_trt.artifacts import save_act_scales
    from sq_trt.cli import main

    root = module_tmp("stage")
    loaded = load_model("tiny:llama")
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(4))
    save_act_scales(root / "calib", calibrate(loaded, ids, progress=False))
    argv = [
        "export",
        "--model",
        "tiny:llama",
        "--act-scales",
        str(root / "calib"),
        "--act-mode",
        "per-tensor",
    ]
    assert main([*argv, "--out", str(root / "export")]) == 0
    assert main([*argv, "--out", str(root / "export")]) == 1  # exists, and no --force
    return root / "export"


def test_export_stage_writes_linted_files_and_manifest(llama_artifact: Path) -> None:
    loaded = load_model("tiny:llama")
    manifest = json.loads((llama_artifact / "manifest.json").read_text())
    extra = manifest["extra"]
    assert manifest["stage"] == "export"
    assert extra["model_fingerprint"] == weights_fingerprint(loaded.model)
    assert extra["act_scales_hash"] and extra["act_mode"] == "per_tensor" and extra["opset"] == 20
    assert extra["quantized_linears"] == quantizable_linears(loaded.model) and extra["excluded_linears"] == []
    assert extra["io"]["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]}]
    assert extra["sizes"]["int8"] == (llama_artifact / "model.int8.onnx").stat().st_size
    assert extra["sizes"]["int8"] < extra["sizes"]["fp16"] < extra["sizes"]["fp32_estimate"]
    int8 = onnx.load(str(llama_artifact / "model.int8.onnx"))
    lint_qdq(int8)
    # q/k/v share one quantizer, gate/up another: 4 per layer.
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) == extra["activation_quantizers"] == 8
    fp16 = onnx.load(str(llama_artifact / "model.fp16.onnx"))
    assert {i.data_type for i in fp16.graph.initializer if "proj.weight" in i.name} == {
        onnx.TensorProto.FLOAT16
    }


def test_fp16_baseline_matches_fp32_model(llama_artifact: Path) -> None:
    """fp16 keeps 11 significant bits (2^-11 ~ 4.9e-4 relative); two layers of sums stay within 1e-2 of the range."""
    loaded = load_model("tiny:llama")
    ids = torch.randint(0, 256, (3, SEQ), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = loaded.model(input_ids=ids, use_cache=False).logits.numpy()
    runner = OnnxModelRunner(llama_artifact / "model.fp16.onnx")
    assert runner.session.get_outputs()[0].type == "tensor(float16)"
    got = runner.run(ids)
    assert np.abs(got - expected).max() <= 1e-2 * np.abs(expected).max()
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.98


def _build_with_tensorrt_rtx(path: Path) -> dict[str, int]:
    """Parse and build a strongly typed engine on CPU (TensorRT-RTX builds ahead of time); layer counts."""
    pytest.importorskip("tensorrt_rtx_libs", reason="TensorRT-RTX (the `rtx` extra) is not installed")
    trt = pytest.importorskip(
        "tensorrt_rtx_bindings", reason="TensorRT-RTX (the `rtx` extra) is not installed"
    )
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(path))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    assert parsed and not errors, errors
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input_ids", (1, 2), (2, 16), (4, 64))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None and plan.nbytes > 0, f"TensorRT-RTX could not build {path.name}"
    kinds = [network.get_layer(i).type for i in range(network.num_layers)]
    return {
        "quantize": sum(k == trt.LayerType.QUANTIZE for k in kinds),
        "dequantize": sum(k == trt.LayerType.DEQUANTIZE for k in kinds),
    }


def test_tensorrt_rtx_builds_fp16_per_tensor_and_portable_files(llama_artifact: Path, tmp_path: Path) -> None:
    fp16 = _build_with_tensorrt_rtx(llama_artifact / "model.fp16.onnx")
    assert fp16["dequantize"] == 0
    per_tensor = _build_with_tensorrt_rtx(llama_artifact / "model.int8.onnx")
    assert per_tensor["quantize"] == 8 and per_tensor["dequantize"] == 8 + 14  # activations + weights
    loaded = load_model("tiny:llama")
    portable = onnx.load(str(llama_artifact / "model.fp16.onnx"))
    targets = targets_from_model(
        loaded.model,
        quantizable_linears(loaded.model),
        weight_layout="linear",
        input_amax=None,
        prefix=WRAPPED_PREFIX,
    )
    quantize_graph(portable, targets, act_mode="per_token", encoding="portable", act_dtype="float16")
    lint_qdq(portable)
    onnx.save(portable, str(tmp_path / "portable.onnx"))
    per_token = _build_with_tensorrt_rtx(tmp_path / "portable.onnx")
    assert per_token["quantize"] == 0 and per_token["dequantize"] == 8 + 14


def _assert_nothing_written(parent: Path) -> None:
    assert list(parent.iterdir()) == [], "a failed export must leave no file or partial directory"


def test_scales_of_another_model_are_refused(llama: Exported, tmp_path: Path) -> None:
    other = ActScales(
        llama.scales.input_channel_amax,
        llama.scales.input_amax,
        llama.scales.output_amax,
        {**llama.scales.meta, "model_fingerprint": weights_fingerprint(tiny_model("llama", seed=1))},
    )
    with pytest.raises(ArtifactError, match="act_scales were recorded on model"):
        export_model(llama.loaded, tmp_path / "out", scales=other)
    _assert_nothing_written(tmp_path)


def test_missing_scale_for_a_quantized_linear_is_refused(llama: Exported, tmp_path: Path) -> None:
    partial = copy.copy(llama.scales)
    partial.input_amax = {
        k: v for k, v in llama.scales.input_amax.items() if not k.endswith("layers.1.mlp.down_proj")
    }
    with pytest.raises(ExportError, match=r"missing for 1 \(first: model\.layers\.1\.mlp\.down_proj\)"):
        export_model(
            llama.loaded, tmp_path / "out", scales=partial, config=ExportConfig(act_mode="per_tensor")
        )
    _assert_nothing_written(tmp_path)


def test_export_that_would_exceed_memory_is_refused(
    llama: Exported, tmp_path: Path, monkeypatch: Any
) -> None:
    # 4 B/param (measured 3.2-3.7 at 1.24 B) + 0.5 GiB; kept float graphs add 4 B/param.
    assert check_memory(2_000_000_000, "float16", available=8 * 2**30) == 8_000_000_000 + 2**29
    with pytest.raises(ExportError, match="needs about 15.4 GiB"):
        check_memory(2_000_000_000, "float16", available=8 * 2**30, kept_graphs=True)
    with pytest.raises(ExportError, match="needs about 15.4 GiB"):
        check_memory(2_000_000_000, "float32", available=8 * 2**30)
    monkeypatch.setattr("sq_trt.export.stage.available_memory_bytes", lambda: 1 << 20)
    with pytest.raises(ExportError, match="only 0.0 GiB is available"):
        export_model(llama.loaded, tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_failure_while_writing_leaves_nothing(llama: Exported, tmp_path: Path, monkeypatch: Any) -> None:
    from sq_trt.export import stage

    real_save = stage.save_onnx

    def save_then_fail(model: onnx.ModelProto, path: Path) -> None:
        real_save(model, path)
        if path.name == stage.INT8_FILE:
            raise ExportError("simulated failure after the INT8 file was written")

    def reuse_export(*args: Any, save: Path | None = None, **kwargs: Any) -> onnx.ModelProto:
        copied = onnx.ModelProto()
        copied.CopyFrom(llama.base)  # the float32 export this module already made: saves a slow re-export
        if save is not None:  # the tracer's contract: it writes the graph where it is asked to
            real_save(copied, save)
        return copied

    monkeypatch.setattr(stage, "save_onnx", save_then_fail)
    monkeypatch.setattr(stage, "export_float_onnx", reuse_export)
    with pytest.raises(ExportError, match="simulated"):
        export_model(llama.loaded, tmp_path / "out", config=ExportConfig(int8_dtype="float32"))
    _assert_nothing_written(tmp_path)


def test_bad_exclude_pattern_and_config_are_refused(llama: Exported, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="matches no quantizable linear"):
        export_model(llama.loaded, tmp_path / "out", config=ExportConfig(exclude=("*.q_prj",)))
    # create() is the user-facing constructor (the CLI's): a user error, naming the field.
    with pytest.raises(ConfigError, match="act_mode"):
        ExportConfig.create(act_mode="per_channel")
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig.create(opset=13)
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig.create(opset=23)
    _assert_nothing_written(tmp_path)
