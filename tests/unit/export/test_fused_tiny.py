"""The fused-gemm export of each tiny family against the portable and plugin encodings.

All graphs are exported in float32, so the encodings differ only in float rounding:
the portable/plugin graphs compute ``((x_q / 127) @ W_dq) * amax`` in float32 (rounded
partial sums), the fused nodes ``(exact int32 sum) * (amax / 127) * w_scale``. Those are
~1e-7 relative apart, which occasionally moves an activation across a rounding boundary
downstream, so an int8 code moves by one step and the flip propagates. Hence, as in
tests/unit/export/test_export_tiny.py:

* int8 codes of the first layer's quantized inputs: equal, or one step apart on < 0.5 %
  of them (the first norm reads the same embedding in every encoding, so its codes differ
  only by the norm's summation order);
* logits: the fused export's discrepancy from the PyTorch W8A8 reference
  (:func:`apply_fake_quant`) is under 10 % of the quantization error itself (RMS of
  reference - float); a wrong scale, axis, bias or missing quantizer makes it ~1 or
  more (measured: ~1e-5, where the Q/DQ encodings sit at 1e-3..0.13 from their flips);
  fused-vs-portable/plugin is bounded by the two distances to the reference;
* greedy predictions agree on >= 98 % of positions.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from sq_trt import plugin_spec
from sq_trt.export.fused import norm_groups_from_model
from sq_trt.export.lint import find_qdq_problems, lint_qdq
from sq_trt.export.onnx_export import WRAPPED_PREFIX, export_float_onnx
from sq_trt.export.qdq import quantize_graph, targets_from_model
from sq_trt.models.loading import load_model
from sq_trt.models.registry import quantizable_linears
from sq_trt.quant.fakequant import apply_fake_quant
from sq_trt.runtime.onnx import OnnxModelRunner, expand_plugin_nodes, session_from_onnx

# Norm + quantization nodes each family's export must fuse (2 layers): Llama-family
# input_layernorm -> q/k/v and post_attention_layernorm -> gate/up; OPT and GPT-2's pre-LN
# norms; none for BERT (post-LN: its norms' outputs also feed the residual).
FUSED_NORMS = {"llama": 4, "mistral": 4, "qwen2": 4, "opt": 4, "gpt2": 4, "bert": 0}
NORM_OP = {
    "llama": plugin_spec.RMSNORM_PER_TOKEN_QUANT,
    "mistral": plugin_spec.RMSNORM_PER_TOKEN_QUANT,
    "qwen2": plugin_spec.RMSNORM_PER_TOKEN_QUANT,
    "opt": plugin_spec.LAYERNORM_PER_TOKEN_QUANT,
    "gpt2": plugin_spec.LAYERNORM_PER_TOKEN_QUANT,
    "bert": None,
}


class Family:
    """A tiny model, its float32 export and its three per-token INT8 encodings."""

    def __init__(self, family: str) -> None:
        self.loaded = load_model(f"tiny:{family}")
        self.names = quantizable_linears(self.loaded.model)
        self.base = export_float_onnx(self.loaded.model, self.loaded.spec, dtype="float32")
        generator = torch.Generator().manual_seed(5)
        self.ids = torch.randint(0, 256, (2, 24), generator=generator)
        self.mask = torch.ones_like(self.ids) if self.loaded.spec.kind == "encoder" else None
        self.graphs = {encoding: self.int8(encoding) for encoding in ("fused-gemm", "portable", "plugin")}

    def int8(self, encoding: str) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(self.base)
        targets = targets_from_model(
            self.loaded.model,
            self.names,
            weight_layout=self.loaded.spec.weight_layout,
            input_amax=None,
            prefix=WRAPPED_PREFIX,
        )
        groups = norm_groups_from_model(self.loaded.model, self.names, prefix=WRAPPED_PREFIX)
        self.report = quantize_graph(
            model, targets, act_mode="per_token", encoding=encoding, act_dtype="float32", norm_groups=groups
        )
        lint_qdq(model)
        return model

    def feeds(self) -> dict[str, np.ndarray]:
        feeds = {"input_ids": self.ids.numpy()}
        if self.mask is not None:
            feeds["attention_mask"] = self.mask.numpy()
        return feeds

    def fake_quant_out(self) -> np.ndarray:
        """The PyTorch W8A8 reference (per-token, float32): :func:`apply_fake_quant`."""
        model = copy.deepcopy(self.loaded.model)
        apply_fake_quant(model, None, act_mode="per_token")
        return self.float_out(model)

    def float_out(self, model: Any = None) -> np.ndarray:
        """Logits (or hidden states) of ``model`` (default: the float model) in PyTorch."""
        model = self.loaded.model if model is None else model
        with torch.no_grad():
            if self.mask is not None:
                return model(input_ids=self.ids, attention_mask=self.mask).last_hidden_state.numpy()
            return model(input_ids=self.ids, use_cache=False).logits.numpy()


_FAMILIES: dict[str, Family] = {}


@pytest.fixture(scope="module", params=list(FUSED_NORMS))
def family(request: pytest.FixtureRequest) -> tuple[str, Family]:
    if request.param not in _FAMILIES:
        _FAMILIES.clear()  # one family's graphs in memory at a time
        _FAMILIES[request.param] = Family(request.param)
    return request.param, _FAMILIES[request.param]


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_fused_export_has_one_gemm_per_linear_and_the_registry_norms(family: tuple[str, Family]) -> None:
    name, fam = family
    graph = fam.graphs["fused-gemm"]
    ops = Counter(node.op_type for node in graph.graph.node if node.domain == plugin_spec.ONNX_DOMAIN)
    gemms = ops[plugin_spec.W8A8_GEMM] + ops[plugin_spec.QUANT_W8A8_GEMM]
    assert gemms == len(fam.names)
    assert not any(
        node.op_type in ("MatMul", "Gemm", "DequantizeLinear") and "proj" in node.name
        for node in graph.graph.node
    )
    if NORM_OP[name] is not None:
        assert ops[NORM_OP[name]] == FUSED_NORMS[name]
    assert (
        sum(ops[op] for op in (plugin_spec.RMSNORM_PER_TOKEN_QUANT, plugin_spec.LAYERNORM_PER_TOKEN_QUANT))
        == (FUSED_NORMS[name])
    )
    # Every linear a fused norm does not feed quantizes its own input.
    fed = {node.name for node in graph.graph.node if node.op_type == plugin_spec.W8A8_GEMM}
    assert len(fed) == gemms - ops[plugin_spec.QUANT_W8A8_GEMM]
    weights = [i for i in graph.graph.initializer if i.name.endswith(".weight_int8")]
    assert len(weights) == len(fam.names) and all(w.data_type == onnx.TensorProto.INT8 for w in weights)
    assert find_qdq_problems(graph) == []


def test_fused_logits_match_reference_portable_and_plugin(family: tuple[str, Family]) -> None:
    _, fam = family
    outs = {enc: OnnxModelRunner(graph).run(fam.ids, fam.mask) for enc, graph in fam.graphs.items()}
    reference = fam.fake_quant_out()
    quant_error = _rms(reference - fam.float_out())
    assert quant_error > 1e-4, "the W8A8 reference must differ from float, or this test proves nothing"
    ratio = _rms(outs["fused-gemm"] - reference) / quant_error
    assert ratio < 0.1, f"fused-gemm vs the PyTorch W8A8 reference: {ratio:.4f} of the quantization error"
    for other in ("portable", "plugin"):
        # Triangle inequality: fused-vs-other is at most fused-vs-reference + other-vs-reference.
        # The Q/DQ encodings flip more codes than the fused one (their float32 GEMM rounds partial
        # sums; measured on qwen2: 0.13 of the quantization error vs 1e-5 for fused-gemm).
        other_ratio = _rms(outs[other] - reference) / quant_error
        between = _rms(outs["fused-gemm"] - outs[other]) / quant_error
        assert between <= ratio + other_ratio + 1e-6 and other_ratio < 0.25, (other, between, other_ratio)
        agree = float(np.mean(outs["fused-gemm"].argmax(-1) == outs[other].argmax(-1)))
        assert agree >= 0.98
    assert float(np.mean(outs["fused-gemm"].argmax(-1) == reference.argmax(-1))) >= 0.98


def _first_layer_codes(fam: Family, encoding: str) -> dict[str, np.ndarray]:
    """The int8 codes each first-layer linear reads, by linear name, from the expanded graph."""
    graph = onnx.ModelProto()
    graph.CopyFrom(fam.graphs[encoding])
    expand_plugin_nodes(graph)
    producers = {out: node for node in graph.graph.node for out in node.output}
    tensors: dict[str, str] = {}
    first_layer = [n for n in fam.names if ".0." in n]
    for linear in first_layer:
        if encoding == "portable":  # MatMul(DequantizeLinear(x_q), ...): shared by q/k/v
            matmul = next(n for n in graph.graph.node if n.name == f"{linear}/MatMul")
            tensors[linear] = producers[matmul.input[0]].input[0]
            continue
        gemm = next(n for n in fam.graphs[encoding].graph.node if n.name.startswith(f"{linear}/"))
        if gemm.op_type == plugin_spec.W8A8_GEMM:
            tensors[linear] = gemm.input[0]
        else:  # the expansion's own quantizer: the int8 Cast under the node's name
            tensors[linear] = next(
                out
                for out, node in producers.items()
                if node.name.startswith(f"{gemm.name}/cpu/quant/CastInt8")
            )
    for tensor in tensors.values():
        graph.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.INT8, None))
    values = session_from_onnx(graph).run(list(tensors.values()), fam.feeds())
    return dict(zip(tensors, values, strict=True))


def test_fused_int8_codes_match_portable(family: tuple[str, Family]) -> None:
    _, fam = family
    fused, portable = _first_layer_codes(fam, "fused-gemm"), _first_layer_codes(fam, "portable")
    assert fused.keys() == portable.keys() and fused
    for linear, codes in fused.items():
        # GPT-2's portable graph quantizes the Conv1D's flattened [M, K] input; fused-gemm the [..., K] one.
        theirs = portable[linear].reshape(-1, codes.shape[-1]).astype(np.int32)
        diff = np.abs(codes.reshape(-1, codes.shape[-1]).astype(np.int32) - theirs)
        assert diff.max() <= 1, linear
        assert np.mean(diff > 0) < 0.005, f"{linear}: {np.mean(diff > 0):.4f} of the codes moved"
        assert np.abs(codes).max() == 127  # per-token scaling reaches the full range on every row


def test_excluded_linear_keeps_its_norm_in_float() -> None:
    """A norm whose output also feeds a float (excluded) linear must stay; its other linears quantize alone."""
    fam = Family.__new__(Family)
    fam.loaded = load_model("tiny:llama")
    fam.names = [
        n for n in quantizable_linears(fam.loaded.model) if not n.endswith("layers.0.self_attn.k_proj")
    ]
    fam.base = export_float_onnx(fam.loaded.model, fam.loaded.spec, dtype="float32")
    graph = fam.int8("fused-gemm")
    assert "model.layers.0.input_layernorm" not in fam.report.fused_norms
    assert len(fam.report.fused_norms) == 3
    q_proj = next(n for n in graph.graph.node if n.name.startswith("model.layers.0.self_attn.q_proj/"))
    assert q_proj.op_type == plugin_spec.QUANT_W8A8_GEMM
    assert "model.model.layers.0.input_layernorm.weight" in {i.name for i in graph.graph.initializer}


def test_tensorrt_rtx_refuses_the_fused_export(tmp_path: Path) -> None:
    """TensorRT-RTX cannot host plugins: the real build stops before parsing, naming the nodes and the fix."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX (the `rtx` extra) is not installed")
    from sq_trt.engine.backends import load_tensorrt_rtx
    from sq_trt.engine.builder import build_engine
    from sq_trt.engine.recipe import resolve_settings
    from sq_trt.engine.source import read_onnx_source
    from sq_trt.errors import BuildError

    fam = _FAMILIES.get("llama") or Family("llama")
    path = tmp_path / "fused.onnx"
    onnx.save(fam.graphs["fused-gemm"], str(path))
    assert {n.op_type for n in read_onnx_source(path).plugin_nodes} == {
        plugin_spec.RMSNORM_PER_TOKEN_QUANT,
        plugin_spec.W8A8_GEMM,
        plugin_spec.QUANT_W8A8_GEMM,
    }
    profile = {"name": "p0", "batch": [1, 2, 4], "seq": [1, 16, 64]}
    values = {
        "onnx": path,
        "name": "m",
        "target": "rtx",
        "engines_dir": tmp_path / "engines",
        "profiles": [profile],
    }
    with pytest.raises(
        BuildError, match=r"sq-trt plugin node\(s\).*re-export with the portable per-token encoding"
    ):
        build_engine(resolve_settings({}, values, source="test"), load_tensorrt_rtx(), log=lambda _: None)
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").rglob("*.plan"))


def test_export_default_encoding_is_auto_resolved_for_this_machine(tmp_path: Path) -> None:
    """Without --per-token-encoding, `auto` picks fused-gemm where TensorRT proper and a GPU can build it,
    portable elsewhere (this CPU machine); the manifest records the concrete choice."""
    import json

    from sq_trt.cli import main
    from sq_trt.export.stage import _plugins_available

    out = tmp_path / "export"
    assert main(["export", "--model", "tiny:llama", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    expected = "fused-gemm" if _plugins_available() else "portable"
    assert manifest["config"]["encoding"] == expected
    assert manifest["extra"]["per_token_encoding"] == expected


def test_export_fused_gemm_from_the_cli_writes_and_records_it(tmp_path: Path) -> None:
    """`sq-trt export --per-token-encoding fused-gemm` writes the fused nodes and records them."""
    import json

    from sq_trt.cli import main

    out = tmp_path / "export"
    argv = ["export", "--model", "tiny:llama", "--per-token-encoding", "fused-gemm", "--out", str(out)]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["encoding"] == "fused-gemm"
    extra = manifest["extra"]
    assert extra["per_token_encoding"] == "fused-gemm"
    assert extra["fused_norms"] == [
        f"model.layers.{i}.{n}" for i in (0, 1) for n in ("input_layernorm", "post_attention_layernorm")
    ]
    assert extra["activation_quantizers"] == 4 + 4  # 4 fused norms + o_proj and down_proj of 2 layers
    int8 = onnx.load(str(out / "model.int8.onnx"))
    lint_qdq(int8)
    ops = Counter(node.op_type for node in int8.graph.node if node.domain == plugin_spec.ONNX_DOMAIN)
    assert ops == {
        plugin_spec.RMSNORM_PER_TOKEN_QUANT: 4,
        plugin_spec.W8A8_GEMM: 10,
        plugin_spec.QUANT_W8A8_GEMM: 4,
    }
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(6))
    fp16 = OnnxModelRunner(out / "model.fp16.onnx").run(ids)
    got = OnnxModelRunner(out / "model.int8.onnx").run(ids)
    assert got.shape == fp16.shape and np.all(np.isfinite(got))
    assert float(np.mean(got.argmax(-1) == fp16.argmax(-1))) >= 0.9
