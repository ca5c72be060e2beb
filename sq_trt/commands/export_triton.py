"""`sq-trt export-triton`: Write a Triton Inference Server model repository for a built engine."""

from __future__ import annotations

import argparse

from sq_trt.build.triton_repo import write_model_repository

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


def run(args: argparse.Namespace) -> int:
    """Write the model repository and print how to serve it."""
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
