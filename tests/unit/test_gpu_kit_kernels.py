"""INT8 GEMM or not, from the kernel names an engine runs, for all three per-token encodings.

Fixtures follow TensorRT's documented layer-information formats (engine inspector JSON at
``ProfilingVerbosity.DETAILED``; ``trtexec --dumpLayerInfo`` lines). The FP16 Myelin GEMM kernel
and the ``kgen`` layer are as printed in TensorRT issue #4397; the INT8 names follow the same
naming scheme (input types ``i8i8``, CUTLASS's ``s8`` / ``i16832gemm``, ``imma``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sq_trt.hosttools.gpu_kit import analyze_layers, main
from sq_trt.hosttools.gpu_kit_kernels import classify_engine, kernel_precision, parse_layer_log, verdict

FP16_GEMM = "sm80_xmma_gemm_f16f16_f16f16_f16_nn_n_tilesize32x32x64_stage6_warpsize2x2x1_tensor16x8x16"
INT8_GEMM = "sm80_xmma_gemm_i8i8_i8i32_f32_tn_n_tilesize128x128x64_stage3_warpsize2x2x1_tensor16x8x32"
KGEN = "__myl_AddCastMeanSubMulMeanAddSqrtDivMulCastMulAdd_0xf2543c36ff9f104bbb1655b0183afb47"
HALF = "Half"


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        (FP16_GEMM, "fp16"),
        (INT8_GEMM, "int8"),
        ("sm90_xmma_gemm_i8i8_f16i32_f32_tn_n_tilesize128x256x128_warpgroupsize2x1x1_kernel_trt", "int8"),
        ("cutlass_tensorop_s8_i16832gemm_s8_256x128_64x3_tn_align16", "int8"),
        ("sm75_xmma_gemm_imma_int8int32_tn_n_tilesize128x128x64", "int8"),
        ("ampere_h16816gemm_128x128_ldg8_stages_64x3_tn", "fp16"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cluster1x1x1", "fp16"),
        (KGEN, "other"),
    ],
)
def test_kernel_precision_from_the_name(kernel: str, expected: str) -> None:
    assert kernel_precision(kernel) == expected


def _myelin_layer(name: str, kind: str, tactic: str) -> dict[str, object]:
    # Inside a Myelin region every boundary tensor reads Half, whatever the kernel computes in.
    return {
        "Name": name,
        "LayerType": kind,
        "Inputs": [{"Name": f"{name}_in", "Dimensions": [1, 40, 576], "Format/Datatype": HALF}],
        "Outputs": [{"Name": f"{name}_out", "Dimensions": [1, 40, 576], "Format/Datatype": HALF}],
        "TacticName": tactic,
        "StreamId": 0,
        "Metadata": f"[ONNX Layer: {name}]",
    }


def _portable_engine() -> dict[str, object]:
    return {
        "Layers": [
            _myelin_layer("__myl_AbsReduceMaxDivRoundClipCast_myl0_0", "kgen", KGEN),
            _myelin_layer("/model/layers.0/self_attn/q_proj/MatMul_myl0_1", "gemm", INT8_GEMM),
            _myelin_layer("/model/layers.0/mlp/down_proj/MatMul_myl0_2", "gemm", INT8_GEMM),
            _myelin_layer("/lm_head/MatMul_myl0_3", "gemm", FP16_GEMM),
        ]
    }


def test_myelin_int8_gemms_are_found_where_tensor_formats_say_half() -> None:
    info = _portable_engine()
    # The boundary-format reading misses them entirely (the defect this replaces) ...
    assert analyze_layers(info)["int8_gemms"] == []
    # ... the kernels say two INT8 GEMMs and the FP16 lm_head.
    classified = classify_engine(info, plugins=[])
    assert (classified["gemms"], classified["int8"], classified["fp16"]) == (3, 2, 1)
    assert classified["int8_gemm"] is True
    assert classified["encoding"].startswith("no plugin")
    assert verdict(classified) == "yes: 2/3 INT8, 1 FP16"


def test_plugin_engine_whose_gemms_fell_back_to_fp16_says_no() -> None:
    info = {
        "Layers": [
            {"Name": "/q_proj/PerTokenQuant", "LayerType": "PluginV3", "TacticName": ""},
            _myelin_layer("/q_proj/MatMul_myl0_1", "gemm", FP16_GEMM),
            _myelin_layer("/lm_head/MatMul_myl0_2", "gemm", FP16_GEMM),
        ]
    }
    classified = classify_engine(info, plugins=[{"name": "PerTokenQuant", "nodes": 30}])
    assert classified["encoding"] == "plugin" and classified["int8_gemm"] is False
    assert verdict(classified) == "NO, FP16 GEMMs only: 0/2 INT8, 2 FP16"


def test_fused_gemm_plugin_layers_count_as_int8_gemms() -> None:
    info = {
        "Layers": [
            {"Name": "/model/layers.0/self_attn/q_proj/QuantW8A8Gemm", "LayerType": "PluginV3"},
            {"Name": "/model/layers.0/mlp/down_proj/W8A8Gemm", "LayerType": "PluginV3"},
            {"Name": "/model/layers.0/mlp/RMSNormPerTokenQuant", "LayerType": "PluginV3"},
            _myelin_layer("/lm_head/MatMul_myl0_3", "gemm", FP16_GEMM),
        ]
    }
    plugins = [{"name": "QuantW8A8Gemm"}, {"name": "W8A8Gemm"}, {"name": "RMSNormPerTokenQuant"}]
    classified = classify_engine(info, plugins)
    assert classified["encoding"] == "fused-gemm"
    assert [k["precision"] for k in classified["kernels"]] == ["int8", "int8", "fp16"]
    assert classified["kernels"][0]["kernel"] == "sq_trt::QuantW8A8Gemm plugin kernel"


def test_hybrid_engine_counts_native_int8_gemms_apart_from_plugin_layers() -> None:
    """A hybrid engine: static Q/DQ linears run TensorRT's own INT8 GEMMs, the per-token ones sq-trt plugins."""
    info = {
        "Layers": [
            _myelin_layer("/model/layers.0/self_attn/q_proj/MatMul_myl0_1", "gemm", INT8_GEMM),
            _myelin_layer("/model/layers.0/mlp/gate_proj/MatMul_myl0_2", "gemm", INT8_GEMM),
            {"Name": "/model/layers.0/mlp/down_proj/QuantW8A8Gemm", "LayerType": "PluginV3"},
            _myelin_layer("/lm_head/MatMul_myl0_3", "gemm", FP16_GEMM),
        ]
    }
    classified = classify_engine(info, [{"name": "QuantW8A8Gemm"}])
    assert (classified["native_int8_gemms"], classified["plugin_layers"]) == (2, 1)
    assert classified["int8"] == 3  # the plugin's GEMM is INT8 too, just not TensorRT's own
    assert classify_engine(_portable_engine(), [])["plugin_layers"] == 0


def test_no_kernel_names_is_unknown_not_fp16() -> None:
    info = {"Layers": [{"Name": "gemm0", "LayerType": "gemm", "Inputs": [], "Outputs": []}]}
    classified = classify_engine(info, [])
    assert classified["int8_gemm"] is None and verdict(classified).startswith("unknown")


TRTEXEC_LAYER_LOG = f"""[12/02/2026-10:00:01] [I] Layer Information:
[12/02/2026-10:00:01] [I] Layers:
Name: __myl_AbsReduceMaxDivRoundClipCast_myl0_0, LayerType: kgen, Inputs: [ {{ Name: x, Dimensions: [4,512,576], Format/Datatype: Half }}], Outputs: [ {{ Name: __myln_k_arg__bb1_1, Dimensions: [4,512,576], Format/Datatype: Half }}], TacticName: {KGEN}, StreamId: 0, Metadata: [ONNX Layer: /q_proj/per_token/Abs]
Name: /model/layers.0/self_attn/q_proj/MatMul_myl0_1, LayerType: gemm, Inputs: [ {{ Name: __myln_k_arg__bb1_1, Dimensions: [4,512,576], Format/Datatype: Half }}], Outputs: [ {{ Name: __mye1_2, Dimensions: [4,512,576], Format/Datatype: Half }}], TacticName: {INT8_GEMM}, StreamId: 0, Metadata: [ONNX Layer: /q_proj/MatMul]
Name: /lm_head/MatMul_myl0_2, LayerType: gemm, Inputs: [ {{ Name: __mye1_2, Dimensions: [4,512,576], Format/Datatype: Half }}], Outputs: [ {{ Name: logits, Dimensions: [4,512,49152], Format/Datatype: Half }}], TacticName: {FP16_GEMM}, StreamId: 0, Metadata: [ONNX Layer: /lm_head/MatMul]
[12/02/2026-10:00:01] [I] === Performance summary ===
"""


def test_trtexec_layer_log_is_parsed_and_classified() -> None:
    info = parse_layer_log(TRTEXEC_LAYER_LOG)
    assert [layer["LayerType"] for layer in info["Layers"]] == ["kgen", "gemm", "gemm"]
    assert info["Layers"][1]["TacticName"] == INT8_GEMM
    assert verdict(classify_engine(info, [])) == "yes: 1/2 INT8, 1 FP16"


def test_kit_report_carries_the_kernel_verdict_and_container_release(tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    for name, plugins in (("sq-portable", []), ("sq-plugin", [{"name": "PerTokenQuant"}])):
        (engines / name).mkdir(parents=True)
        record = {
            "plan": "trt.plan",
            "backend": "tensorrt",
            "backend_version": "10.13.3.9",
            "plugins": plugins,
            "builder": {"container_release": "25.10"},
        }
        (engines / name / "manifest.json").write_text(json.dumps({"extra": {"engines": {"trt": record}}}))
    (engines / "sq-portable" / "trt.layers.json").write_text(json.dumps(_portable_engine()))
    layer_dir = tmp_path / "layers"
    layer_dir.mkdir()
    (layer_dir / "sq-plugin__trt.layers.log").write_text(TRTEXEC_LAYER_LOG.replace(INT8_GEMM, FP16_GEMM))
    smoke = tmp_path / "smoke.log"
    smoke.write_text("noise\nPASS tensorrt 10.13.3.9\nFAIL plugin engine loads without Python: no\n")
    out = tmp_path / "out"
    argv = ["report", "--engines", str(engines), "--out", str(out), "--layer-info", str(layer_dir)]
    assert main([*argv, "--container-release", "25.10", "--smoke", str(smoke)]) == 0
    kit = json.loads((out / "gpu_host.json").read_text())
    assert kit["container_release"] == "25.10"
    assert kit["engines"]["sq-portable/trt"]["kernels"]["int8_gemm"] is True
    assert kit["engines"]["sq-plugin/trt"]["kernels"]["int8_gemm"] is False
    markdown = (out / "gpu_host.md").read_text()
    assert "Container release: 25.10" in markdown
    assert "- FAIL plugin engine loads without Python: no" in markdown
    assert (
        "| sq-portable/trt | tensorrt 10.13.3.9 | no plugin" in markdown
        and "| yes: 2/3 INT8, 1 FP16 |" in markdown
    )
    assert (
        "| sq-plugin/trt | tensorrt 10.13.3.9 | plugin | 3 | NO, FP16 GEMMs only: 0/2 INT8, 2 FP16 |"
        in markdown
    )
