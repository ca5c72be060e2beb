"""`sq-trt export-triton`: Write a Triton Inference Server model repository for a built engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from sq_trt.engine.triton_repo import write_model_repository
from sq_trt.errors import ArtifactError

HELP = "Write a Triton Inference Server model repository for a built engine."
DESCRIPTION = """\
Write <repo>/<name>/config.pbtxt (platform tensorrt_plan, I/O from the engine manifest,
dynamic dims -1, max_batch_size 0, the engine's optimization profiles) and
<repo>/<name>/1/model.plan, then print the command that serves it:

  sq-trt export-triton --engine-dir engines/smollm2-int8 --target h100 --repo triton --name smollm2

Only TensorRT engines (--backend tensorrt) can be served by Triton's TensorRT backend,
with a Triton release whose TensorRT is the one that built them: the release defaults
to the container the engine was built in (recorded in its manifest), else the newest
release known to ship the engine's TensorRT; a release with another TensorRT is refused.

A generation engine (a --with-past export built with prefill and decode profiles) gets two
models: <name>_engine (the plan) and <name>, a decoupled Python-backend model that runs
sq-trt's decode loop over it through BLS and streams one response per token, with the
tokenizer files (the server needs sq-trt installed in its Python).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this subcommand's arguments."""
    parser.add_argument("--engine-dir", required=True, help="engine directory written by `sq-trt build`")
    parser.add_argument("--target", required=True, help="which <target>.plan in it")
    parser.add_argument("--repo", required=True, help="model repository root to write into")
    parser.add_argument("--name", required=True, help="Triton model name")
    parser.add_argument("--instances", type=int, default=1, help="model instances per GPU (default 1)")
    parser.add_argument(
        "--triton-release",
        help="tritonserver container release yy.mm (default: the engine's build container, else the "
        "newest release known to ship the engine's TensorRT; another TensorRT is refused)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing <repo>/<name>")


def _generation_sources(engine_dir: str, target: str) -> tuple[Path, dict[str, object]] | None:
    """(tokenizer dir, kv_cache record) of a generation engine's export, or None for other engines."""
    from sq_trt.artifacts import load_manifest, verify_tree
    from sq_trt.engine.engine_manifest import load_engine_record
    from sq_trt.generate.tokenizer import TOKENIZER_DIR

    record = load_engine_record(engine_dir, target)
    if not {"prefill", "decode"} <= {str(p.get("name")) for p in record.profiles}:
        return None
    export_dir = Path(record.source_onnx).parent
    # The export is verified like every input: the tokenizer copied into the repository must be its own.
    manifest = load_manifest(export_dir, stage="export")
    tokenizer = export_dir / TOKENIZER_DIR
    if tokenizer.exists() or tokenizer.is_symlink():
        verify_tree(export_dir, manifest, TOKENIZER_DIR)
    kv_cache = manifest.extra.get("kv_cache")
    if not kv_cache:
        raise ArtifactError(
            f"generation engine {engine_dir} was built from {record.source_onnx}, whose export manifest has no "
            "kv_cache record; export it again with `sq-trt export --with-past` next to its manifest"
        )
    return export_dir / "tokenizer", kv_cache


def run(args: argparse.Namespace) -> int:
    """Write the model repository and print how to serve it."""
    from sq_trt.artifacts import claim_output

    # One writer per model, for the whole command.
    claim_output(Path(args.repo) / args.name, force=args.force, what="Triton model")
    generation = _generation_sources(args.engine_dir, args.target)
    if generation is not None:
        from sq_trt.engine.triton_generate import write_generation_repository

        model_dir = write_generation_repository(
            args.engine_dir,
            args.target,
            args.repo,
            args.name,
            tokenizer_dir=generation[0],
            kv_cache=generation[1],
            release=args.triton_release,
            force=args.force,
        )
        print(
            f"[export-triton] wrote {model_dir} (decoupled Python model, streams tokens) and {model_dir}_engine"
        )
        return 0
    model = write_model_repository(
        args.engine_dir,
        args.target,
        args.repo,
        args.name,
        instances=args.instances,
        release=args.triton_release,
        force=args.force,
    )
    print(f"[export-triton] wrote {model.config_path} and {model.plan_path}")
    print(f"[export-triton] serve it with:\n  {model.serve_command}")
    return 0
