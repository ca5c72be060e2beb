"""The GPU-host kit: its script lints clean, and its analysis reads inspector JSON, trtexec logs and JUnit XML.

The kit runs only inside NVIDIA's TensorRT container on a GPU host. What can be
checked here is the script's syntax (bash -n, shellcheck) and the parsing that
turns its outputs into the report, on inputs written in the formats TensorRT
documents (engine inspector ``LayerInformationFormat.JSON``, trtexec's
performance summary).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sq_trt.errors import ArtifactError
from sq_trt.hosttools.gpu_kit import (
    analyze_layers,
    main,
    parse_trtexec,
    profile_shapes,
    summarize_junit,
    trtexec_args,
    trtexec_shapes,
)

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "gpu_host_kit.sh"


def test_script_parses_with_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)"
)
def test_script_is_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", "-S", "style", str(SCRIPT)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def _tensor(name: str, fmt: str) -> dict[str, str]:
    return {"Name": name, "Format/Datatype": fmt}


def _layers(gemm_input_format: str) -> dict[str, object]:
    int8 = "Row major linear Int8 format"
    half = "Row major linear FP16 format"
    return {
        "Layers": [
            {
                "Name": "q_proj_quant [PerTokenQuant]",
                "LayerType": "PluginV3",
                "Inputs": [_tensor("x", half)],
                "Outputs": [_tensor("x_q", int8), _tensor("amax", half)],
            },
            {
                "Name": "reformat x_q",
                "LayerType": "Reformat",
                "Inputs": [_tensor("x_q", int8)],
                "Outputs": [_tensor("x_q_r", gemm_input_format)],
            },
            {
                "Name": "q_proj MatrixMultiply",
                "LayerType": "gemm",
                "Inputs": [_tensor("x_q_r", gemm_input_format), _tensor("w", int8)],
                "Outputs": [_tensor("y", half)],
            },
            {
                "Name": "lm_head MatrixMultiply",
                "LayerType": "gemm",
                "Inputs": [_tensor("h", half), _tensor("w2", half)],
                "Outputs": [_tensor("logits", half)],
            },
        ]
    }


def test_plugin_output_reaching_an_int8_gemm_through_a_reformat_is_fused() -> None:
    analysis = analyze_layers(_layers("Row major linear Int8 format"))
    assert analysis["plugin_feeds_int8_gemm"] is True
    assert analysis["int8_gemms"] == ["q_proj MatrixMultiply"]
    assert analysis["gemms"] == 2
    assert analysis["plugins"][0]["feeds"] == [
        {"tensor": "x_q", "gemm": "q_proj MatrixMultiply", "int8_input": True}
    ]


def test_plugin_output_converted_to_fp16_before_the_gemm_is_not_fused() -> None:
    analysis = analyze_layers(_layers("Row major linear FP16 format"))
    assert analysis["plugin_feeds_int8_gemm"] is False
    assert analysis["int8_gemms"] == ["q_proj MatrixMultiply"]  # its weight input is still int8


def test_engine_without_plugin_has_no_fusion_verdict() -> None:
    info = _layers("Row major linear Int8 format")
    info["Layers"] = info["Layers"][2:]  # type: ignore[index]
    assert analyze_layers(info)["plugin_feeds_int8_gemm"] is None


TRTEXEC_LOG = """\
[11/23/2026-20:00:00] [I] === Performance summary ===
[11/23/2026-20:00:00] [I] Throughput: 1234.56 qps
[11/23/2026-20:00:00] [I] Latency: min = 0.75 ms, max = 1.5 ms, mean = 0.81 ms, median = 0.8 ms, \
percentile(90%) = 0.85 ms, percentile(95%) = 0.9 ms, percentile(99%) = 1.1 ms
[11/23/2026-20:00:00] [I] GPU Compute Time: min = 0.7 ms, max = 1.4 ms, mean = 0.78 ms, median = 0.77 ms, \
percentile(90%) = 0.8 ms, percentile(95%) = 0.85 ms, percentile(99%) = 1.0 ms
"""


def test_trtexec_summary_is_parsed() -> None:
    assert parse_trtexec(TRTEXEC_LOG) == {
        "throughput_qps": 1234.56,
        "latency_mean_ms": 0.81,
        "latency_median_ms": 0.8,
        "latency_p99_ms": 1.1,
        "gpu_compute_mean_ms": 0.78,
        "gpu_compute_median_ms": 0.77,
        "gpu_compute_p99_ms": 1.0,
    }


def test_failed_trtexec_run_is_an_error() -> None:
    with pytest.raises(ArtifactError, match="no performance summary"):
        parse_trtexec("[E] Error[1]: engine deserialization failed\n")


def test_junit_outcomes_are_counted(tmp_path: Path) -> None:
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.gpu.test_a" name="test_ok"/>'
        '<testcase classname="tests.gpu.test_a" name="test_bad"><failure message="assert 1 == 2&#10;more"/></testcase>'
        '<testcase classname="tests.gpu.test_a" name="test_skip"><skipped message="no GPU"/></testcase>'
        "</testsuite></testsuites>"
    )
    summary = summarize_junit(xml)
    assert summary["totals"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert {"test": "tests.gpu.test_a::test_bad", "outcome": "failed", "detail": "assert 1 == 2"} in summary[
        "cases"
    ]


def _profile(max_batch: int, max_seq: int, opt: tuple[int, int] = (1, 128)) -> dict[str, object]:
    # ResolvedProfile.to_json(), as the build stage records it.
    bounds = {"min": [1, 1], "opt": list(opt), "max": [max_batch, max_seq]}
    return {"name": "default", "shapes": {"input_ids": bounds, "attention_mask": dict(bounds)}}


def _engine_dir(tmp_path: Path, profiles: list[dict[str, object]]) -> Path:
    engine_dir = tmp_path / "sq-per-tensor"
    engine_dir.mkdir()
    record = {"plan": "trt.plan", "profiles": profiles, "io": []}
    (engine_dir / "manifest.json").write_text(json.dumps({"extra": {"engines": {"trt": record}}}))
    return engine_dir


def test_timing_shapes_come_from_the_engines_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default recipe's profile: batch [1, 1, 4], seq [1, 128, 512]. The kit's old fixed list
    # timed 8x512, outside it, so trtexec failed on every engine.
    engine_dir = _engine_dir(tmp_path, [_profile(4, 512)])
    assert profile_shapes(engine_dir, "trt") == [(1, 128), (4, 512)]
    assert main(["profile-shapes", str(engine_dir / "trt.plan")]) == 0
    assert capsys.readouterr().out.split() == ["1x128", "4x512"]
    assert trtexec_args(engine_dir, "trt", 4, 512) == (
        "--shapes=input_ids:4x512,attention_mask:4x512 --profile=0"
    )
    with pytest.raises(ArtifactError, match=r"batch 8 x seq 512.*\[4, 512\]"):
        trtexec_args(engine_dir, "trt", 8, 512)
    assert main(["shapes", str(engine_dir / "trt.plan"), "8", "512"]) == 1


def test_timing_shapes_pick_the_profile_that_accepts_them(tmp_path: Path) -> None:
    engine_dir = _engine_dir(tmp_path, [_profile(1, 128), _profile(8, 2048, opt=(8, 1024))])
    assert profile_shapes(engine_dir, "trt") == [(1, 128), (8, 1024), (8, 2048)]
    assert trtexec_args(engine_dir, "trt", 8, 2048).endswith("--profile=1")
    assert trtexec_args(engine_dir, "trt", 1, 64).endswith("--profile=0")


def test_timing_shapes_need_recorded_profiles(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no optimization profiles"):
        profile_shapes(_engine_dir(tmp_path, []), "trt")


def test_report_folds_engines_and_timings(tmp_path: Path) -> None:
    engine_dir = tmp_path / "engines" / "sq-per-token-plugin"
    engine_dir.mkdir(parents=True)
    record = {
        "plan": "trt.plan",
        "backend": "tensorrt",
        "backend_version": "11.4",
        "plugins": [{"name": "PerTokenQuant"}],
        "layer_info": {"available": True},
        "io": [
            {"name": "input_ids", "mode": "input", "dtype": "int64", "shape": [-1, -1]},
            {"name": "logits", "mode": "output", "dtype": "float16", "shape": [-1, -1, 256]},
        ],
        "profiles": [_profile(4, 512)],
    }
    (engine_dir / "manifest.json").write_text(json.dumps({"extra": {"engines": {"trt": record}}}))
    (engine_dir / "trt.layers.json").write_text(json.dumps(_layers("Row major linear Int8 format")))
    timings = tmp_path / "timings"
    timings.mkdir()
    (timings / "sq-per-token-plugin__trt__b4_s512.log").write_text(TRTEXEC_LOG)
    (timings / "sq-per-token-plugin__trt__b8_s512.log").write_text("[E] out of memory\n")
    pipeline_md = tmp_path / "report.md"
    pipeline_md.write_text("# sq-trt accuracy report\n\nverdict: PASS\n")
    out = tmp_path / "out"

    assert trtexec_shapes(engine_dir, "trt", 4, 512) == "input_ids:4x512,attention_mask:4x512"
    code = main(
        [
            "report",
            "--engines",
            str(tmp_path / "engines"),
            "--out",
            str(out),
            "--timings",
            str(timings),
            "--pipeline-report",
            str(pipeline_md),
            "--host",
            "H100, 570.1, 9.0",
        ]
    )
    assert code == 0
    kit = json.loads((out / "gpu_host.json").read_text())
    assert kit["engines"]["sq-per-token-plugin/trt"]["analysis"]["plugin_feeds_int8_gemm"] is True
    assert [t["batch"] for t in kit["timings"]] == [4, 8]
    assert kit["timings"][0]["metrics"]["throughput_qps"] == 1234.56
    assert "no performance summary" in kit["timings"][1]["error"]
    markdown = (out / "gpu_host.md").read_text()
    assert markdown.startswith("# sq-trt accuracy report")
    row = "| sq-per-token-plugin/trt | tensorrt 11.4 | plugin | 4 | unknown: no kernel names (build with "
    assert row + "profiling verbosity DETAILED) | 0 / 1 | yes |" in markdown
    assert "| sq-per-token-plugin/trt | 4 x 512 | 0.81 | 1.1 | 0.78 | 1234.56 |" in markdown


def test_kit_runs_the_smoke_checks_first_and_reports_kernels_release_and_smoke() -> None:
    text = SCRIPT.read_text()
    smoke = text.index("bash docker/smoke.sh")
    assert smoke < text.index("python -m pytest") < text.index("sq-trt pipeline")
    assert 'export SQ_TRT_CONTAINER_RELEASE="$RELEASE"' in text  # builds record it in their manifests
    assert 'SHAPES="${SHAPES:-}"' in text and "python -m sq_trt.hosttools.gpu_kit profile-shapes" in text
    assert "--dumpLayerInfo" in text and "--profilingVerbosity=detailed" in text
    report = text[text.index("python -m sq_trt.hosttools.gpu_kit report") :]
    for flag in ("--layer-info", "--smoke", "--container-release"):
        assert flag in report
