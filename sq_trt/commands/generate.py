"""`sq-trt generate`: Generate text with a KV cache from an ONNX graph, a TensorRT engine or the PyTorch model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sq_trt.commands.common import add_config_args
from sq_trt.errors import ConfigError, DataError
from sq_trt.generate.config import GenerateOptions, check_context

HELP = "Generate text with a KV cache (ONNX Runtime, TensorRT engine, or PyTorch reference)."

DESCRIPTION = """\
Generate continuations of prompts with a KV cache: one prefill step over the prompt, then one decode
step per token, through exactly one of

  --onnx FILE    a generation graph (sq-trt export --with-past) in ONNX Runtime on CPU
  --engine DIR   a generation engine directory (sq-trt build of such a graph; TensorRT on a GPU host)
  --model M      the PyTorch model itself (the reference)

Greedy by default; --temperature > 0 samples (with --top-k, --top-p, --seed). Tokens are printed as
they are generated, then prefill and decode tokens/s; --json prints one JSON document instead (prompt
and generated token ids, text, timings). A prompt that does not fit the context is refused.

examples:
  sq-trt generate --onnx out/export-gen/model.int8.onnx --prompt "def fibonacci(n):" --max-new-tokens 64
  sq-trt generate --model demo --prompts prompts.txt --temperature 0.7 --top-p 0.9 --seed 1 --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    source = parser.add_argument_group("what runs")
    which = source.add_mutually_exclusive_group(required=True)
    which.add_argument("--onnx", metavar="FILE", help="generation ONNX graph (export --with-past)")
    which.add_argument("--engine", metavar="DIR", help="generation engine directory (TensorRT, GPU host)")
    which.add_argument(
        "--model", metavar="M", help="PyTorch model: hub id | directory | demo | tiny:<family>"
    )
    source.add_argument(
        "--tokenizer",
        metavar="M",
        help="model whose tokenizer to use (default: the one saved with the graph or engine)",
    )
    source.add_argument(
        "--target", default=None, help="engine target (a .plan name in --engine; default: the only one)"
    )
    # Every numeric flag is a bounded field of GenerateOptions (NaN, inf, denormals, negatives refused).
    add_config_args(source, GenerateOptions, ("max_context", "threads"))
    prompts = parser.add_argument_group("prompts")
    given = prompts.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", metavar="TEXT", help="one prompt")
    given.add_argument(
        "--prompts", metavar="FILE", help='.txt (one prompt per line) or .jsonl ({"prompt": ...})'
    )
    decoding = parser.add_argument_group("decoding")
    add_config_args(decoding, GenerateOptions, ("max_new_tokens", "temperature", "top_k", "top_p", "seed"))
    decoding.add_argument("--json", action="store_true", help="print one JSON document instead of streaming")


def read_prompts(prompt: str | None, path: str | None) -> list[str]:
    """The prompts from ``--prompt`` or ``--prompts``.

    Raises:
        DataError: Missing or empty file, or a JSONL line without a ``prompt`` string.
    """
    if prompt is not None:
        return _without_nul([prompt], "--prompt")
    file = Path(path or "")
    if not file.is_file():
        raise DataError(f"prompts file {file} does not exist; pass a .txt (one per line) or .jsonl file")
    try:
        lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"prompts file {file} is not UTF-8 text (binary at byte {exc.start}); pass a text file"
        ) from exc
    if file.suffix == ".jsonl":
        out = []
        for number, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise DataError(
                    f"{file}:{number}: not valid JSON ({str(exc)[:80]}); one object per line"
                ) from exc
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise DataError(
                    f'{file}:{number}: expected an object with a "prompt" string, got {line[:60]!r}'
                )
            out.append(item["prompt"])
        lines = out
    if not lines:
        raise DataError(f"prompts file {file} holds no prompt")
    return _without_nul(lines, str(file))


def _without_nul(prompts: list[str], where: str) -> list[str]:
    """Refuse a prompt with a NUL character: text with NUL bytes is binary, not a prompt."""
    for number, prompt in enumerate(prompts, 1):
        if "\x00" in prompt:
            raise DataError(f"{where}: prompt {number} contains a NUL character; pass text")
    return prompts


def _onnx_runner(args: argparse.Namespace) -> tuple[Any, Any]:
    from sq_trt.generate.runners import OrtStepRunner
    from sq_trt.generate.tokenizer import load_tokenizer

    path = Path(args.onnx)
    if not path.is_file():
        raise ConfigError(f"--onnx {path} does not exist; pass a graph from `sq-trt export --with-past`")
    manifest = verified_export(path)
    extra = manifest.extra if manifest is not None else {}
    kv = extra.get("kv_cache") or {}
    positions = kv.get("max_positions") if isinstance(kv.get("max_positions"), int) else None
    check_context(args.max_context, positions, str(path))
    max_context = args.max_context or positions
    if not max_context:
        raise ConfigError(f"{path} has no export manifest with kv_cache.max_positions; pass --max-context N")
    from google.protobuf.message import DecodeError

    try:
        runner = OrtStepRunner(
            path, max_context=int(max_context), family=kv.get("family", "?"), threads=args.threads
        )
    except DecodeError as exc:
        raise ConfigError(
            f"--onnx {path} is not an ONNX model ({exc}); pass a graph from `sq-trt export --with-past`"
        ) from exc
    tokenizer = load_tokenizer(path.parent, source=args.tokenizer or extra.get("model_source"))
    return runner, tokenizer


def verified_export(path: Path) -> Any:
    """The export manifest of generation graph ``path`` once the graph (and its saved tokenizer) verify; None if none.

    Raises:
        ArtifactError: See :func:`sq_trt.artifacts.verified_parent_manifest` and :func:`sq_trt.artifacts.verify_tree`.
    """
    from sq_trt.artifacts import verified_parent_manifest, verify_tree
    from sq_trt.generate.tokenizer import TOKENIZER_DIR

    manifest = verified_parent_manifest(path)
    if manifest is not None and (
        (path.parent / TOKENIZER_DIR).exists() or (path.parent / TOKENIZER_DIR).is_symlink()
    ):
        verify_tree(path.parent, manifest, TOKENIZER_DIR)
    return manifest


def _torch_runner(args: argparse.Namespace) -> tuple[Any, Any]:
    from sq_trt.artifacts import verify_model_dir
    from sq_trt.generate.runners import TorchStepRunner
    from sq_trt.models.loading import load_model

    verify_model_dir(args.model)
    loaded = load_model(args.model)
    positions = getattr(loaded.model.config, "max_position_embeddings", None)
    check_context(args.max_context, positions if isinstance(positions, int) else None, f"model {args.model}")
    return TorchStepRunner(loaded.model, max_context=args.max_context), loaded.tokenizer


def _engine_runner(args: argparse.Namespace) -> tuple[Any, Any]:
    from sq_trt.generate.tokenizer import load_tokenizer
    from sq_trt.generate.trt_runner import open_engine_runner

    runner = open_engine_runner(args.engine, target=args.target, max_context=args.max_context)
    return runner, load_tokenizer(args.engine, source=args.tokenizer)


def run(args: argparse.Namespace) -> int:
    """Open the runner, generate for each prompt, print streaming text or JSON."""
    from sq_trt.commands.common import config_from_args
    from sq_trt.generate.config import GenerateOptions
    from sq_trt.generate.loop import generate
    from sq_trt.generate.sampling import SamplingConfig

    options = config_from_args(GenerateOptions, args)  # bounds first: before any file, model or graph
    sampling = SamplingConfig(
        temperature=options.temperature, top_k=options.top_k, top_p=options.top_p, seed=options.seed
    )
    prompts = read_prompts(args.prompt, args.prompts)
    opener = _onnx_runner if args.onnx else _engine_runner if args.engine else _torch_runner
    runner, tokenizer = opener(args)
    results = []
    for prompt in prompts:
        ids = tokenizer(prompt)["input_ids"]
        stream = None if args.json else _Streamer(tokenizer, prompt)
        result = generate(
            runner,
            ids,
            max_new_tokens=args.max_new_tokens,
            sampling=sampling,
            eos_token_id=tokenizer.eos_token_id,
            on_token=stream,
        )
        text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
        results.append(
            {
                "prompt": prompt,
                "prompt_ids": result.prompt_ids,
                "token_ids": result.token_ids,
                "text": text,
                "prefill_s": round(result.prefill_s, 6),
                "decode_s": round(result.decode_s, 6),
                "prefill_tokens_per_s": round(result.prefill_tokens_per_s, 2),
                "decode_tokens_per_s": round(result.decode_tokens_per_s, 2),
            }
        )
        if stream is not None:
            print(
                f"\n[{len(result.prompt_ids)} prompt tokens: {result.prefill_tokens_per_s:.1f} tok/s prefill; "
                f"{len(result.token_ids)} new: {result.decode_tokens_per_s:.1f} tok/s decode]"
            )
    if args.json:
        json.dump(
            {"runner": runner.name, "sampling": vars(sampling), "results": results}, sys.stdout, indent=1
        )
        print()
    return 0


class _Streamer:
    """Prints each new token's text as it comes (decoding the whole continuation, so merges print right)."""

    def __init__(self, tokenizer: Any, prompt: str) -> None:
        self.tokenizer, self.shown = tokenizer, ""
        self.ids: list[int] = []
        print(prompt, end="", flush=True)

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        print(text[len(self.shown) :], end="", flush=True)
        self.shown = text
