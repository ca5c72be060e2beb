"""The container smoke checks behind ``docker/smoke.sh``: one PASS/FAIL line per check.

On a GPU host, inside NVIDIA's TensorRT container, the script runs these steps in
order (each a fresh process, so nothing one step imports helps another):

* ``env``: TensorRT version, CUDA driver, GPU;
* ``export DIR``: calibrate the tiny random Llama and export its per-tensor, portable
  per-token and plugin per-token INT8 ONNX (linted for TensorRT's Q/DQ rules);
* ``build DIR ENGINES``: build each with TensorRT proper (the plugin registered by the build stage);
* ``agree PLAN ONNX``: run the engine once through Polygraphy's ``TrtRunner`` against
  ONNX Runtime on the same INT8 graph (plugin nodes expanded into standard ops);
* ``load PLAN``: deserialize the ``.plan`` in a process that imports only ``tensorrt``, so
  no Python plugin is registered (AOT plugin kernels are embedded in the engine).

Everything before the first TensorRT call (``env`` without TensorRT, ``export``) runs on
any machine; ``tests/unit/test_smoke.py`` runs it with ``SQ_TRT_SMOKE_UNTIL=export``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ENCODINGS = ("per-tensor", "portable", "plugin")
MODEL = "tiny:llama"
# Small shapes: the smoke checks prove the path works, not speed; the profile holds the feed below.
BATCH, SEQ = "1,1,2", "1,16,32"
FEED_SHAPE = (1, 16)
# Relative L2 error allowed between TensorRT and ONNX Runtime on the same INT8 graph (fp16 arithmetic
# in both; a wrong plugin or a dropped scale gives errors of order 1).
AGREE_TOLERANCE = 0.05


def _line(ok: bool, what: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)
    return ok


def _driver_version() -> str | None:
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"CUDA {version.value // 1000}.{version.value % 1000 // 10}"


def check_env(require_tensorrt: bool) -> bool:
    """TensorRT, driver and GPU lines; without ``require_tensorrt`` a missing one is INFO, not FAIL."""
    from sq_trt.engine.gpu import visible_gpus
    from sq_trt.engine.releases import container_release

    def report(ok: bool, what: str) -> bool:
        if ok or require_tensorrt:
            return _line(ok, what)
        print(f"INFO {what}", flush=True)
        return True

    try:
        import tensorrt

        trt_ok, trt_text = True, f"tensorrt {tensorrt.__version__}"
    except ImportError as exc:
        trt_ok, trt_text = False, f"tensorrt not importable ({exc})"
    driver = _driver_version()
    gpus = visible_gpus()
    gpu_text = ", ".join(f"{g.name} (compute capability {g.compute_capability})" for g in gpus)
    print(f"INFO container release {container_release() or 'unknown'}", flush=True)
    results = [
        report(trt_ok, trt_text),
        report(driver is not None, f"driver {driver or 'not found (libcuda.so.1)'}"),
        report(bool(gpus), f"GPU {gpu_text or 'none visible (docker run --gpus all)'}"),
    ]
    return all(results)


def _cli(argv: list[str]) -> tuple[bool, str]:
    from sq_trt.cli import main as cli_main

    started = time.perf_counter()
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 1
    return code == 0, f"exit {code}, {time.perf_counter() - started:.1f}s"


def export_all(work: Path) -> bool:
    """Calibrate the tiny Llama and export the three INT8 encodings under ``work``."""
    ok, detail = _cli(
        ["calibrate", "--model", MODEL, "--samples", "2", "--seq-len", "32", "--no-progress"]
        + ["--out", str(work / "calib"), "--force"]
    )
    results = [_line(ok, f"calibrate {MODEL} ({detail})")]
    for encoding in ENCODINGS:
        mode = ["--act-mode", "per-tensor", "--act-scales", str(work / "calib")]
        if encoding != "per-tensor":
            mode = ["--act-mode", "per-token", "--per-token-encoding", encoding]
        ok, detail = _cli(["export", "--model", MODEL, *mode, "--out", str(work / encoding), "--force"])
        results.append(_line(ok, f"export {encoding} ({detail})"))
    return all(results)


def build_all(work: Path, engines: Path) -> bool:
    """Build each exported INT8 ONNX with TensorRT proper."""
    results = []
    for encoding in ENCODINGS:
        argv = ["build", "--backend", "tensorrt", "--onnx", str(work / encoding / "model.int8.onnx")]
        argv += ["--name", f"smoke-{encoding}", "--target", "trt", "--engines-dir", str(engines)]
        ok, detail = _cli([*argv, "--batch", BATCH, "--seq", SEQ, "--force"])
        results.append(_line(ok, f"build {encoding} engine ({detail})"))
    return all(results)


def relative_error(reference: object, candidate: object) -> float:
    """``||candidate - reference|| / ||reference||`` in float64 (inf when the shapes differ)."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        return float("inf")
    return float(np.linalg.norm(got - ref) / max(float(np.linalg.norm(ref)), 1e-12))


def agree(plan: Path, onnx_path: Path) -> bool:
    """Run ``plan`` once with Polygraphy's TrtRunner and the ONNX with ONNX Runtime; compare logits."""
    import numpy as np
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from sq_trt.runtime.onnx import session_from_onnx

    feed = {"input_ids": np.random.default_rng(0).integers(0, 64, size=FEED_SHAPE, dtype=np.int64)}
    with TrtRunner(EngineFromBytes(BytesFromPath(str(plan)))) as trt_runner:
        trt_out = trt_runner.infer(feed)["logits"]
    with OnnxrtRunner(session_from_onnx(onnx_path)) as ort_runner:
        ort_out = ort_runner.infer(feed)["logits"]
    error = relative_error(ort_out, trt_out)
    return _line(
        error <= AGREE_TOLERANCE, f"{plan.parent.name} agrees with ONNX Runtime (rel. L2 {error:.2e})"
    )


def load(plan: Path) -> bool:
    """Deserialize ``plan`` with only ``tensorrt`` imported (no sq_trt plugin registered)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    clean = "sq_trt.plugins" not in sys.modules and "sq_trt.plugins.qdp" not in sys.modules
    return _line(
        engine is not None and clean,
        f"{plan.parent.name} loads in a fresh process without Python plugins"
        + ("" if clean else " (sq_trt.plugins was imported: the check is void)"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sq_trt.hosttools.smoke env|export|build|agree|load ...``; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(prog="python -m sq_trt.hosttools.smoke", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    env = sub.add_parser("env")
    env.add_argument("--no-tensorrt-ok", action="store_true", help="report a missing TensorRT/GPU as INFO")
    sub.add_parser("export").add_argument("work", type=Path)
    build = sub.add_parser("build")
    build.add_argument("work", type=Path)
    build.add_argument("engines", type=Path)
    agree_p = sub.add_parser("agree")
    agree_p.add_argument("plan", type=Path)
    agree_p.add_argument("onnx", type=Path)
    sub.add_parser("load").add_argument("plan", type=Path)
    args = parser.parse_args(argv)
    steps: dict[str, Callable[[], bool]] = {
        "env": lambda: check_env(require_tensorrt=not args.no_tensorrt_ok),
        "export": lambda: export_all(args.work),
        "build": lambda: build_all(args.work, args.engines),
        "agree": lambda: agree(args.plan, args.onnx),
        "load": lambda: load(args.plan),
    }
    try:
        return 0 if steps[args.step]() else 1
    except Exception as exc:  # noqa: BLE001  (a smoke check reports one line, never a traceback)
        _line(False, f"{args.step}: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
