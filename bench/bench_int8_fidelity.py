"""How far the INT8 ONNX graphs are from the PyTorch W8A8 reference, and why (not a test).

For each activation mode (per-token, per-tensor) on the smoothed demo model, four
executions of the *same* W8A8 semantics are compared on held-out embedded text:

* ``ref32``: the PyTorch fake-quant reference (:mod:`sq_trt.quant.fakequant`), float32;
* ``ref16``: the same modules cast to float16 (float16 arithmetic, same int8 weights);
* ``ort32``: ``model.int8.onnx`` exported with ``--int8-dtype float32``, ONNX Runtime;
* ``ort16``: the deployment file (float16 activations), ONNX Runtime.

Reported per execution: perplexity, KL divergence and top-1 agreement against
``ref32`` and against the float model, and for ``ref16`` the fraction of INT8
activation codes that differ from ``ref32`` at every depth (one chunk), which
shows how a float16 rounding difference of the inputs turns into a different
realisation of the quantization noise layer after layer.

    python bench/bench_int8_fidelity.py --work /tmp/sq-trt-bench-export

``--work`` holds ``smooth/`` (a smoothed artifact) and the exports
``per_tensor/``, ``per_token_plugin/`` (float16) and ``per_tensor_fp32/``,
``per_token_fp32/`` (``--int8-dtype float32``); missing exports are written.
Results: ``bench/results/int8_fidelity.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
_EXPORTS = {
    ("per_token", "float16"): (
        "per_token_plugin",
        ["--act-mode", "per-token", "--per-token-encoding", "plugin"],
    ),
    ("per_token", "float32"): (
        "per_token_fp32",
        ["--act-mode", "per-token", "--per-token-encoding", "portable", "--int8-dtype", "float32"],
    ),
    ("per_tensor", "float16"): ("per_tensor", ["--act-mode", "per-tensor"]),
    ("per_tensor", "float32"): ("per_tensor_fp32", ["--act-mode", "per-tensor", "--int8-dtype", "float32"]),
}


def _ensure_export(work: Path, mode: str, dtype: str) -> Path:
    from sq_trt.cli import main as cli

    name, flags = _EXPORTS[(mode, dtype)]
    if not (work / name / "manifest.json").is_file():
        rc = cli(["export", "--smoothed", str(work / "smooth"), *flags, "--out", str(work / name), "--force"])
        if rc != 0:
            raise SystemExit(f"export {name} failed ({rc})")
    return work / name / "model.int8.onnx"


def _code_flips(ref32: Any, ref16: Any, chunk: Any, mode: str) -> dict[str, float]:
    """Fraction of INT8 activation codes differing between float32 and float16 arithmetic, per linear."""
    import torch

    from sq_trt.quant import reference
    from sq_trt.quant.fakequant import W8A8Linear

    def record(model: Any) -> dict[str, torch.Tensor]:
        codes: dict[str, torch.Tensor] = {}
        handles = []
        for module in model.modules():
            if isinstance(module, W8A8Linear):

                def hook(m: Any, args: tuple[Any, ...]) -> None:
                    x = args[0]
                    q = (
                        reference.quantize_per_token(x)[0]
                        if mode == "per_token"
                        else reference.quantize_per_tensor(x, m.input_amax)
                    )
                    codes[m.name] = q

                handles.append(module.register_forward_pre_hook(hook))
        try:
            with torch.inference_mode():
                model(input_ids=chunk, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        return codes

    a, b = record(ref32), record(ref16)
    return {name: float((a[name] != b[name]).float().mean()) for name in a}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write its JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="/tmp/sq-trt-bench-export")
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument(
        "--modes", nargs="+", default=["per_token", "per_tensor"], choices=["per_token", "per_tensor"]
    )
    parser.add_argument("--out", default=str(RESULTS / "int8_fidelity.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from sq_trt.artifacts import atomic_write_text, load_smoothed
    from sq_trt.compare.metrics import kl_divergence, topk_agreement
    from sq_trt.data import load_slices, tokenize_chunks
    from sq_trt.quant.fakequant import apply_fake_quant
    from sq_trt.runtime.onnx import OnnxModelRunner
    from sq_trt.runtime.perplexity import token_nll

    work = Path(args.work)
    start = time.perf_counter()
    loaded, scales = load_smoothed(work / "smooth")
    _, evaluation = load_slices()
    chunks = tokenize_chunks(
        loaded.tokenizer,
        evaluation,
        seq_len=args.seq_len,
        max_chunks=max(1, args.eval_tokens // args.seq_len),
    )
    float_model = loaded.model.eval()
    results: dict[str, Any] = {}
    for mode in args.modes:
        ref32 = copy.deepcopy(float_model)
        apply_fake_quant(ref32, scales, act_mode=mode)
        ref16 = copy.deepcopy(ref32).half()
        runners = {
            "ort32": OnnxModelRunner(_ensure_export(work, mode, "float32")),
            "ort16": OnnxModelRunner(_ensure_export(work, mode, "float16")),
        }

        def torch_logits(model: Any, ids: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return model(input_ids=ids, use_cache=False).logits.float().numpy()

        names = ["float", "ref32", "ref16", "ort32", "ort16"]
        nll = {n: 0.0 for n in names}
        kl_ref = {n: [] for n in names}
        kl_float = {n: [] for n in names}
        top1_ref = {n: [] for n in names}
        count = 0
        for index in range(chunks.shape[0]):
            ids = chunks[index : index + 1]
            logits = {
                "float": torch_logits(float_model, ids),
                "ref32": torch_logits(ref32, ids),
                "ref16": torch_logits(ref16, ids),
                **{n: r.run(ids) for n, r in runners.items()},
            }
            ids_np = ids.numpy()
            for n in names:
                nll[n] += float(token_nll(logits[n], ids_np).sum())
                kl_ref[n].append(kl_divergence(logits["ref32"][0], logits[n][0]))
                kl_float[n].append(kl_divergence(logits["float"][0], logits[n][0]))
                top1_ref[n].append(topk_agreement(logits["ref32"][0], logits[n][0], 1))
            count += ids.shape[1] - 1
            print(f"{mode}: chunk {index + 1}/{chunks.shape[0]}", file=sys.stderr, flush=True)
        flips = _code_flips(ref32, ref16, chunks[:1], mode)
        by_layer: dict[int, list[float]] = {}
        for name, value in flips.items():
            layer = int(name.split(".layers.")[1].split(".")[0])
            by_layer.setdefault(layer, []).append(value)
        results[mode] = {
            "perplexity": {n: float(np.exp(nll[n] / count)) for n in names},
            "kl_vs_ref32_mean": {n: float(np.concatenate(kl_ref[n]).mean()) for n in names},
            "kl_vs_float_mean": {n: float(np.concatenate(kl_float[n]).mean()) for n in names},
            "top1_vs_ref32": {n: float(np.concatenate(top1_ref[n]).mean()) for n in names},
            "ref16_code_flip_fraction_by_layer": {
                str(k): float(np.mean(v)) for k, v in sorted(by_layer.items())
            },
        }
        del ref32, ref16, runners
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "smoothed": json.loads((work / "smooth" / "manifest.json").read_text()).get("config"),
        "evaluation": {
            "tokens": int(chunks.numel()),
            "chunks": int(chunks.shape[0]),
            "seq_len": args.seq_len,
        },
        "results": results,
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["results"], indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
