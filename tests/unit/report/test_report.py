"""The report: verdict first, every plot embedded as a decodable PNG, no external assets, clear errors; Chromium render."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sq_trt.artifacts import hash_file
from sq_trt.cli import main
from sq_trt.errors import ConfigError
from sq_trt.report import activation_picture, load_sweep, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--model", "tiny:llama", "--no-progress"]


@pytest.fixture(scope="module")
def artifacts(module_tmp: Callable[[str], Path]) -> dict[str, Path]:
    """A calibrate + smooth + compare (with layer ranking) run on the tiny Llama, and a sweep file."""
    root = module_tmp("report")
    paths = {name: root / name for name in ("scales", "smoothed", "compare")}
    assert main(["calibrate", *TINY, "--samples", "2", "--seq-len", "32", "--out", str(paths["scales"])]) == 0
    assert (
        main(
            [
                "smooth",
                *TINY,
                "--act-scales",
                str(paths["scales"]),
                "--alpha",
                "0.5",
                "--out",
                str(paths["smoothed"]),
            ]
        )
        == 0
    )
    argv = ["compare", "--baseline", "fp32=torch:tiny:llama", "--candidate", "naive=torch-w8a8:tiny:llama"]
    argv += ["--candidate", f"sq=torch-w8a8:{paths['smoothed']}", "--rank-layers", str(paths["smoothed"])]
    argv += [
        "--samples",
        "4",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--rank-samples",
        "1",
        "--rank-seq-len",
        "32",
    ]
    assert main([*argv, "--gate", "sq:kl_mean<=1", "--out", str(paths["compare"]), *TINY]) == 0
    paths["sweep"] = root / "sweep.json"
    points = [{"alpha": a, "ppl": 10 + (a - 0.6) ** 2} for a in (0.3, 0.5, 0.7, 0.9)]
    paths["sweep"].write_text(json.dumps({"metric": "ppl", "baseline": 9.9, "points": points}))
    return paths


@pytest.fixture(scope="module")
def report_dir(artifacts: dict[str, Path]) -> Path:
    out = artifacts["compare"].parent / "report"
    argv = ["report", "--results", str(artifacts["compare"]), "--out", str(out)]
    argv += ["--calibration", str(artifacts["scales"]), "--smoothed", str(artifacts["smoothed"])]
    assert main([*argv, "--sweep", str(artifacts["sweep"])]) == 0
    return out


def _embedded_pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(data, validate=True)
        for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    ]


def test_html_has_verdict_first_and_every_plot_embedded(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    # Verdict before the metrics table, which comes before the plots.
    assert (
        html.index("Accuracy gate PASSED")
        < html.index("Metrics per candidate")
        < html.index("<h2>Plots</h2>")
    )
    report = json.loads((report_dir / "report.json").read_text())
    assert next(iter(report)) == "verdict" and report["verdict"]["passed"] is True
    # Four plots: SmoothQuant picture, error histogram of `logits`, layer ranking, alpha sweep.
    assert len(report["plots"]) == 4
    assert html.count("<img") == 4
    pngs = _embedded_pngs(html)
    assert len(pngs) == 4 and all(png.startswith(PNG_SIGNATURE) for png in pngs)
    # The files under plots/ are the same images.
    on_disk = sorted(p.read_bytes() for p in (report_dir / "plots").glob("*.png"))
    assert on_disk == sorted(pngs)


def test_html_is_self_contained(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    # No asset is fetched: every src is a data URI and no stylesheet or script is linked.
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html))
    assert "<link" not in html and "<script" not in html and "url(" not in html


def test_report_tables_name_candidates_and_layers(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    for name in ("naive", "sq", "fp32"):
        assert f">{name}<" in html or f"<b>{name}</b>" in html
    report = json.loads((report_dir / "report.json").read_text())
    assert [c["name"] for c in report["candidates"]] == ["naive", "sq"]
    assert report["layers"]["layers"][0]["suggestion"]
    assert "versions" in report["provenance"] and report["provenance"]["gpu"]
    markdown = (report_dir / "report.md").read_text()
    assert markdown.splitlines()[2] == "**Accuracy gate: PASSED**"
    assert markdown.count("](plots/") == 4
    assert "| naive |" in markdown and "| sq |" in markdown


def test_activation_picture_shows_smoothing_flattening_outliers(artifacts: dict[str, Path]) -> None:
    picture = activation_picture(artifacts["scales"], artifacts["smoothed"])
    assert picture.before.shape == picture.after.shape
    # SmoothQuant divides the input channels by s_j: with alpha 0.5 the spread of channel ranges shrinks.
    spread_before = picture.before.max() / np.median(picture.before)
    spread_after = picture.after.max() / np.median(picture.after)
    assert spread_after < spread_before
    with pytest.raises(ConfigError, match="has no statistics"):
        activation_picture(artifacts["scales"], artifacts["smoothed"], "no.such.layer")


def test_failed_gate_report_says_failed(artifacts: dict[str, Path], tmp_path: Path) -> None:
    results = tmp_path / "failed"
    argv = ["compare", "--baseline", "fp32=torch:tiny:llama", "--candidate", "naive=torch-w8a8:tiny:llama"]
    argv += ["--samples", "2", "--seq-len", "16", "--gate", "kl_mean<=0", "--out", str(results), *TINY]
    assert main(argv) == 3
    report = write_report(results, tmp_path / "report")
    assert report.verdict["passed"] is False
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Accuracy gate FAILED" in html and "kl_mean" in html
    # Without layer ranking or plot data there is one plot: the error histogram.
    assert html.count("<img") == 1


def test_corrupt_results_are_a_clear_error(
    artifacts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifacts["compare"], broken)
    (broken / "comparison.json").write_text('{"schema": "something else"}')
    assert main(["report", "--results", str(broken), "--out", str(tmp_path / "r")]) == 1
    assert "has changed since the manifest" in capsys.readouterr().err  # every file is verified first
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["comparison.json"] = hash_file(broken / "comparison.json")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main(["report", "--results", str(broken), "--out", str(tmp_path / "r")]) == 1
    assert "expected 'sq-trt.comparison/1'" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", "--results", str(artifacts["scales"]), "--out", str(tmp_path / "r")]) == 1
    assert "expected an artifact of stage `compare`" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_plot_inputs_are_validated(
    artifacts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "--results", str(artifacts["compare"]), "--out", str(tmp_path / "r")]
    assert main([*argv, "--calibration", str(artifacts["scales"])]) == 1
    assert "go together" in capsys.readouterr().err
    bad = tmp_path / "sweep.json"
    bad.write_text(json.dumps({"metric": "ppl", "points": [{"alpha": 0.5}]}))
    with pytest.raises(ConfigError, match="every point needs"):
        load_sweep(bad)
    bad.write_text("[")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_sweep(bad)
    assert load_sweep(artifacts["sweep"])["baseline"] == 9.9


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_chromium_renders_the_report(report_dir: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (CI installs the Debian package `chromium`)")
    keep = Path(os.environ.get("SQ_TRT_ARTIFACTS", "build/ci-artifacts"))
    keep.mkdir(parents=True, exist_ok=True)
    shot = keep / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot.resolve()}",
        "--window-size=1280,2400",
    ]
    subprocess.run(
        [browser, *flags, (report_dir / "report.html").resolve().as_uri()],
        check=True,
        timeout=120,
        capture_output=True,
    )
    from matplotlib import image

    pixels = (image.imread(shot)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (2400, 1280)
    # The verdict banner is rendered near the top in the pass colour #1e8449.
    top = pixels[:400]
    assert (np.abs(top - np.array([0x1E, 0x84, 0x49])).sum(-1) <= 6).sum() > 10_000
    # The page shows images, not just text: many distinct colours below the fold.
    assert len(np.unique(pixels[600:].reshape(-1, 3), axis=0)) > 200


def test_the_report_applies_the_gate_it_is_given_to_the_verified_metrics(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The pipeline's way: the comparison ran with its own gate; the report applies the recipe's."""
    from sq_trt.artifacts.comparison import load_comparison
    from sq_trt.compare.gate import Gate
    from sq_trt.errors import ConfigError

    comparison = load_comparison(artifacts["compare"])
    kl = comparison["metrics"]["sq"]["summary"]["kl_mean"]
    # Independent reference: the gate evaluated directly on the stored summaries.
    for conditions in ([f"sq:kl_mean<={kl * 2}"], [f"sq:kl_mean<={kl / 2}"], []):
        expected = Gate.parse(conditions).evaluate(
            {name: m["summary"] for name, m in comparison["metrics"].items()}
        ).passed
        out = tmp_path / f"report-{len(conditions)}-{expected}"
        report = write_report(artifacts["compare"], out, gate=conditions)
        assert report.verdict["passed"] is expected
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["extra"]["gate_conditions"] == conditions
    with pytest.raises(ConfigError):
        write_report(artifacts["compare"], tmp_path / "bad", gate=["sq:kl_mean<<1"])
