"""`sq-trt fetch-demo` with the demo already converted: prints the cached path, imports no heavy library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sq_trt.models.demo import DEMO_DIRNAME, FILES_LISTING

CHILD = """
import sys
from sq_trt.cli import main
code = main(["fetch-demo"])
print("HEAVY", sorted(m for m in ("torch", "transformers", "onnx", "onnxruntime") if m in sys.modules))
sys.exit(code)
"""


def test_a_cached_demo_is_printed_without_importing_torch(tmp_path: Path) -> None:
    demo = tmp_path / "demo" / DEMO_DIRNAME
    demo.mkdir(parents=True)
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"x" * 16}
    for name, data in files.items():
        (demo / name).write_bytes(data)
    (demo / FILES_LISTING).write_text(json.dumps({name: len(data) for name, data in files.items()}))
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**os.environ, "SQ_TRT_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(demo), "HEAVY []"]
