"""``act_mode: hybrid`` on every tiny family: smooth under a measured plan, export it, run it in ONNX Runtime.

The plan is measured by the smooth stage (``search.act_mode: hybrid``); the export follows it
(static Q/DQ for per-tensor linears, the per-token encoding for the rest), writes
``quant_plan.json`` with each static linear's range, and its lint checks every linear's
encoding against the plan. ONNX Runtime is compared with the PyTorch W8A8 reference of the
same plan (:func:`apply_fake_quant` with ``plan=``), with the bound of
``test_export_tiny.py`` (its docstring): the discrepancy under 10 % of the quantization error,
since boundary flips keep it near 1e-2 of it while a wrong mode, scale or range makes it ~1.
Tiny random models have no outlier tokens, so the threshold is low and one linear is forced
per token: both modes appear in every family.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from sq_trt.artifacts import load_smoothed
from sq_trt.calibrate.stage import calibrate
from sq_trt.errors import ExportError
from sq_trt.export.lint import find_plan_problems, lint_qdq
from sq_trt.export.stage import ExportConfig, export_model
from sq_trt.models.loading import load_model
from sq_trt.models.registry import quantizable_linears
from sq_trt.quant.fakequant import apply_fake_quant
from sq_trt.quant.plan import PLAN_FILE, load_plan
from sq_trt.runtime.onnx import OnnxModelRunner
from sq_trt.smooth import stage as smooth
from sq_trt.smooth.config import AlphaSearchConfig, SmoothConfig

SEQ = 24
FORCED = {  # one linear per family forced per token, so both modes are exercised whatever is measured
    "llama": "*.layers.1.mlp.down_proj",
    "mistral": "*.layers.1.mlp.down_proj",
    "qwen2": "*.layers.1.mlp.down_proj",
    "opt": "*.layers.1.fc2",
    "gpt2": "*.h.1.mlp.c_proj",
    "bert": "*.layer.1.output.dense",
}


class Hybrid:
    """One family: calibrated, smoothed under a hybrid plan (artifact on disk), exported in float32."""

    def __init__(self, family: str, root: Path) -> None:
        loaded = load_model(f"tiny:{family}")
        self.kind = loaded.spec.kind
        torch.manual_seed(1)
        chunks = torch.randint(0, 256, (4, 32))
        scales = calibrate(loaded, chunks, progress=False)
        search = AlphaSearchConfig(
            act_mode="hybrid",
            samples=4,
            tokens_per_sample=16,
            plan_threshold=1.5,
            plan_budget=0.6,
            force_per_token=(FORCED[family],),
        )
        config = SmoothConfig(alpha="auto", include_optional=True, search=search)
        smooth.run(config, loaded=loaded, scales=scales, chunks=chunks, out=root / "smoothed", progress=False)
        self.loaded, self.scales = load_smoothed(root / "smoothed")
        self.plan = load_plan(root / "smoothed")
        assert self.plan is not None
        self.plan.smoothed = str(root / "smoothed")
        self.out = root / "export"
        export_model(
            self.loaded,
            self.out,
            scales=self.scales,
            config=ExportConfig(act_mode="hybrid", encoding="portable", int8_dtype="float32"),
            plan=self.plan,
        )
        self.ids = torch.randint(0, 256, (2, SEQ))
        self.mask = torch.ones_like(self.ids)
        if self.kind == "encoder":
            self.mask[1, SEQ - 5 :] = 0

    def torch_out(self, model: Any) -> np.ndarray:
        with torch.no_grad():
            if self.kind == "encoder":
                return model(input_ids=self.ids, attention_mask=self.mask).last_hidden_state.numpy()
            return model(input_ids=self.ids, use_cache=False).logits.numpy()

    def reference(self) -> Any:
        model = copy.deepcopy(self.loaded.model)
        assert self.plan is not None
        apply_fake_quant(model, self.scales, act_mode="hybrid", plan=self.plan.modes())
        return model


@pytest.fixture(scope="module", params=sorted(FORCED))
def hybrid(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Hybrid:
    return Hybrid(request.param, tmp_path_factory.mktemp(request.param))


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_plan_covers_every_linear_in_both_modes(hybrid: Hybrid) -> None:
    data = json.loads((hybrid.out / PLAN_FILE).read_text())
    assert data["smoothed"] == hybrid.plan.smoothed  # type: ignore[union-attr]
    linears = data["linears"]
    assert list(linears) == quantizable_linears(hybrid.loaded.model)
    modes = {entry["act_mode"] for entry in linears.values()}
    assert modes == {"per_token", "per_tensor"}
    for name, entry in linears.items():
        assert entry["reason"]
        if entry["act_mode"] == "per_tensor":  # the range the QuantizeLinear uses: the smoothed input's
            assert entry["amax"] == pytest.approx(float(hybrid.scales.input_amax[name]))
        else:
            assert "amax" not in entry
    manifest = json.loads((hybrid.out / "manifest.json").read_text())
    assert PLAN_FILE in manifest["files"] and manifest["config"]["act_mode"] == "hybrid"
    assert manifest["extra"]["plan"]["per_token_linears"] == sum(e["act_mode"] == "per_token" for e in linears.values())


def test_graph_follows_the_plan(hybrid: Hybrid) -> None:
    graph = onnx.load(str(hybrid.out / "model.int8.onnx"))
    assert hybrid.plan is not None
    lint_qdq(graph, plan=hybrid.plan.modes())
    flipped = {name: "per_token" if mode == "per_tensor" else "per_tensor" for name, mode in hybrid.plan.modes().items()}
    assert len(find_plan_problems(graph, flipped)) == len(flipped)  # the check can fail: every linear named


def test_onnx_runtime_matches_the_reference_of_the_same_plan(hybrid: Hybrid) -> None:
    float_out = hybrid.torch_out(hybrid.loaded.model)
    ref = hybrid.torch_out(hybrid.reference())
    runner = OnnxModelRunner(onnx.load(str(hybrid.out / "model.int8.onnx")))
    got = runner.run(hybrid.ids, hybrid.mask if hybrid.kind == "encoder" else None)
    quant_error = _rms(ref - float_out)
    assert quant_error > 1e-4, "the reference must differ from float, or this test proves nothing"
    ratio = _rms(got - ref) / quant_error
    assert ratio < 0.1, f"ONNX vs reference discrepancy is {ratio:.3f} of the quantization error"


def test_fused_gemm_hybrid_keeps_static_linears_plugin_free(tmp_path: Path) -> None:
    """TensorRT proper's encoding: static linears stay plain Q/DQ MatMuls, only per-token ones get sq_trt nodes."""
    h = Hybrid("llama", tmp_path)
    out = tmp_path / "fused"
    export_model(
        h.loaded, out, scales=h.scales, config=ExportConfig(act_mode="hybrid", encoding="fused-gemm"), plan=h.plan
    )
    graph = onnx.load(str(out / "model.int8.onnx"))
    assert h.plan is not None
    lint_qdq(graph, plan=h.plan.modes())
    gemms = [n for n in graph.graph.node if n.domain == "sq_trt" and "Gemm" in n.op_type]
    assert len(gemms) == len(h.plan.names("per_token"))
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) >= 1


def test_hybrid_without_a_plan_is_refused(tmp_path: Path) -> None:
    loaded = load_model("tiny:llama")
    with pytest.raises(ExportError, match="search.act_mode hybrid"):
        export_model(loaded, tmp_path / "x", config=ExportConfig(act_mode="hybrid"))
    assert not (tmp_path / "x").exists()
