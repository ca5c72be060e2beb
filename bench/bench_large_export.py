"""Export of a model over 2 GB: the external-data path at real size (not a test).

A random-weight 1.24 B-parameter Llama (the Llama-3.2-1B shape, see
``bench/bench_pipeline.py``) is exported with ``sq-trt export`` in a child process
(per-token, portable encoding: no calibration needed), then:

* both files are checked with ``onnx.checker`` by path (the only way for > 2 GB);
* ONNX Runtime loads each file with its external data and runs 2 x 16 tokens;
  the FP16 logits are compared with PyTorch FP32, the INT8 logits with the
  PyTorch W8A8 fake-quant reference (same tokens);
* wall time and peak anonymous / file-backed memory of the export process are recorded
  (the fp32 checkpoint is memory-mapped, so it shows as file-backed).

    python bench/bench_large_export.py [--ckpt /tmp/llama-1b-random] [--work /tmp/sq-trt-large-export]

Results: ``bench/results/large_export.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _run_sampling_memory(command: list[str]) -> dict[str, int]:
    """Run ``command``, sampling its /proc status every 0.1 s from outside; peak RssAnon / RssFile bytes.

    Sampled from another process on purpose: a thread inside the exporter cannot sample
    while a long C call (protobuf serialisation) holds the GIL, and misses the peaks.
    """
    peak = {"RssAnon": 0, "RssFile": 0}
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    key = line.split(":")[0]
                    if key in peak:
                        peak[key] = max(peak[key], int(line.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"export failed with exit code {proc.returncode}")
    return peak


def main(argv: list[str] | None = None) -> int:
    """Run the export and the checks; write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", default="/tmp/llama-1b-random")
    parser.add_argument("--work", default="/tmp/sq-trt-large-export")
    parser.add_argument("--out", default=str(RESULTS / "large_export.json"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_pipeline import make_checkpoint

    ckpt, work = Path(args.ckpt), Path(args.work)
    if not (ckpt / "config.json").is_file():
        ckpt.mkdir(parents=True, exist_ok=True)
        make_checkpoint(ckpt)
    out = work / "export"
    command = [
        sys.executable, "-m", "sq_trt.cli", "export", "--model", str(ckpt), "--act-mode", "per-token",
        "--per-token-encoding", "portable", "--out", str(out), "--force",
    ]  # fmt: skip
    start = time.perf_counter()
    peak = _run_sampling_memory(command)
    export_s = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())

    import numpy as np
    import onnx
    import torch

    from sq_trt.compare.metrics import kl_divergence, topk_agreement
    from sq_trt.export.runtime import OnnxModelRunner
    from sq_trt.models.loading import load_model
    from sq_trt.quant.fakequant import apply_fake_quant

    files = {}
    for name in ("model.fp16.onnx", "model.int8.onnx"):
        path = out / name
        onnx.checker.check_model(str(path))  # by path: the proto is over 2 GB with its data
        files[name] = {
            "onnx_bytes": path.stat().st_size,
            "external_data_bytes": (out / f"{name}.data").stat().st_size
            if (out / f"{name}.data").is_file()
            else 0,
        }
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    loaded = load_model(str(ckpt))
    with torch.inference_mode():
        fp32 = loaded.model(input_ids=ids, use_cache=False).logits.float().numpy()
        apply_fake_quant(loaded.model, None, act_mode="per_token")
        w8a8 = loaded.model(input_ids=ids, use_cache=False).logits.float().numpy()
    del loaded
    checks = {}
    for name, reference in (("model.fp16.onnx", fp32), ("model.int8.onnx", w8a8)):
        load_start = time.perf_counter()
        runner = OnnxModelRunner(out / name)
        load_s = time.perf_counter() - load_start
        logits = runner.run(ids)
        del runner
        checks[name] = {
            "session_load_s": round(load_s, 1),
            "finite": bool(np.isfinite(logits).all()),
            "max_abs_diff": float(np.abs(logits - reference).max()),
            "reference_abs_max": float(np.abs(reference).max()),
            "kl_mean": float(
                kl_divergence(
                    reference.reshape(-1, reference.shape[-1]), logits.reshape(-1, logits.shape[-1])
                ).mean()
            ),
            "top1_agreement": float(topk_agreement(reference, logits, 1).mean()),
        }
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "float_weights_bytes": manifest["extra"].get("float_weights_bytes"),
        "sizes": manifest["extra"]["sizes"],
        "files": files,
        "export_wall_s": round(export_s, 1),
        "export_peak_anon_bytes": peak["RssAnon"],
        "export_peak_file_backed_bytes": peak["RssFile"],
        "checks": checks,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    RESULTS.mkdir(exist_ok=True)
    from sq_trt.artifacts import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
