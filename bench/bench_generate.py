"""Generation on CPU through ONNX Runtime: FP16 vs INT8 generation graphs vs transformers' generate (not a test).

Exports the model's generation graphs (``export --with-past``: FP16 and INT8 per-token
portable, from ``--smoothed`` or the unsmoothed model), then for each of ``--prompts``
held-out prompts of ``--prompt-tokens`` tokens generates ``--new-tokens`` tokens
greedily with each runner through sq-trt's decode loop, and with transformers'
``generate`` (float32, the anchor a user would otherwise pick). Reports prefill and
decode tokens/s (medians over prompts) and the INT8 graph's generation-level accuracy
against the FP16 graph (exact match, first divergence, teacher-forced top-1).

    python bench/bench_generate.py [--model demo] [--smoothed DIR] [--threads 2]

Results: ``bench/results/generate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _runner_figures(runner, prompts, new_tokens):
    from sq_trt.generate.loop import generate

    runs = [generate(runner, p, max_new_tokens=new_tokens) for p in prompts]
    return {
        "prefill_tokens_per_s": round(statistics.median(r.prefill_tokens_per_s for r in runs), 1),
        "decode_tokens_per_s": round(statistics.median(r.decode_tokens_per_s for r in runs), 1),
        "time_to_first_token_ms": round(1000 * statistics.median(r.prefill_s for r in runs), 1),
    }


def _transformers_figures(model, prompts, new_tokens):
    import torch

    rates = []
    for prompt in prompts:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(
                torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )
        rates.append(new_tokens / (time.perf_counter() - start))
    return {"end_to_end_tokens_per_s": round(statistics.median(rates), 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--smoothed", default=None, help="smoothed artifact to export instead of --model")
    parser.add_argument("--work", default="/tmp/generate-bench")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "generate.json"))
    args = parser.parse_args(argv)

    import torch

    from sq_trt.artifacts import atomic_write_text
    from sq_trt.compare.dataloader import evaluation_slice
    from sq_trt.data import tokenize_chunks
    from sq_trt.export.stage import ExportConfig, export_model
    from sq_trt.generate.accuracy import generation_accuracy
    from sq_trt.generate.runners import OrtStepRunner
    from sq_trt.models.loading import load_model

    torch.set_num_threads(args.threads)
    if args.smoothed:
        from sq_trt.artifacts import load_smoothed

        loaded, _ = load_smoothed(args.smoothed, device="cpu")
    else:
        loaded = load_model(args.model)
    out = Path(args.work) / "export"
    start = time.perf_counter()
    config = ExportConfig(act_mode="per_token", encoding="portable", with_past=True)
    export_model(loaded, out, config=config, force=True)
    export_s = time.perf_counter() - start
    chunks = tokenize_chunks(
        loaded.tokenizer, evaluation_slice("embedded"), seq_len=args.prompt_tokens, max_chunks=args.prompts
    )
    prompts = [list(map(int, row)) for row in chunks]
    context = args.prompt_tokens + args.new_tokens
    fp16 = OrtStepRunner(out / "model.fp16.onnx", max_context=context, threads=args.threads)
    int8 = OrtStepRunner(out / "model.int8.onnx", max_context=context, threads=args.threads)
    accuracy = generation_accuracy(fp16, int8, prompts, new_tokens=args.new_tokens, keep_samples=0)
    result = {
        "model": args.smoothed or args.model,
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads",
        "python": sys.version.split()[0],
        "prompts": len(prompts),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "export_with_past_s": round(export_s, 1),
        "onnxruntime_fp16": _runner_figures(fp16, prompts, args.new_tokens),
        "onnxruntime_int8_per_token_portable": _runner_figures(int8, prompts, args.new_tokens),
        "transformers_generate_fp32": _transformers_figures(loaded.model, prompts, args.new_tokens),
        "int8_vs_fp16": accuracy.metrics(),
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
