"""Calibrate and smooth models larger than memory: one decoder layer's weights in memory at a time.

:func:`load_offloaded` loads a checkpoint with an accelerate device map that puts
every decoder layer on ``"disk"``: the weights stay in the checkpoint's
safetensors files (memory-mapped) and accelerate's hooks bring one linear's
weights in for its forward pass and drop them after. Calibration
(:func:`sq_trt.calibrate.stage.calibrate`) then runs unchanged; its peak memory is the
embeddings, the LM head, one layer and the activations.

Smoothing changes weights, which accelerate's offload does not write back.
:func:`smooth_offloaded` therefore applies the same per-group fold as
:func:`sq_trt.smooth.stage.smooth_model` (its own primitives: ``smoothing_factor``,
``fold_factor``...) with the group's modules materialised, and writes each
changed tensor into the offload folder (accelerate's ``offload_weight``), where
the hooks read it from then on. ``save_pretrained`` of the offloaded model then
writes the smoothed checkpoint.

Fingerprints are the same as for the model loaded in memory
(:func:`sq_trt.models.loading.weights_fingerprint`), computed one tensor at a
time, so artifacts from either path are interchangeable.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sq_trt.errors import ConfigError, ModelLoadError
from sq_trt.models.loading import LoadedModel

if TYPE_CHECKING:
    import torch

    from sq_trt.artifacts.act_scales import ActScales
    from sq_trt.smooth.stage import SmoothConfig, SmoothResult


def _tensor(model: Any, name: str) -> torch.Tensor:
    """The value of parameter/buffer ``name``, read from the offload storage if it is on ``meta``."""
    path, _, attr = name.rpartition(".")
    module = model.get_submodule(path) if path else model
    value = getattr(module, attr)
    if value.device.type == "meta":
        hook = getattr(module, "_hf_hook", None)
        if hook is None or getattr(hook, "weights_map", None) is None:
            raise ModelLoadError(f"{name} is on the meta device and no offload hook holds its value")
        value = hook.weights_map[attr]
    return value


def offloaded_fingerprint(model: Any) -> str:
    """:func:`~sq_trt.models.loading.weights_fingerprint` of an offloaded model, one tensor in memory at a time."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(model.state_dict(keep_vars=True)):
        tensor = _tensor(model, name).detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


@dataclass
class OffloadedModel(LoadedModel):
    """A :class:`LoadedModel` whose decoder layers live on disk (see the module docstring)."""

    offload_dir: Path = Path()

    def fingerprint(self) -> str:
        """The weights' fingerprint, identical to the in-memory model's."""
        return offloaded_fingerprint(self.model)


def _resolves(model: Any, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def layer_device_map(model: Any, layers_path: str) -> dict[str, str]:
    """Every decoder layer on ``"disk"``; every other module (embeddings, final norm, LM head) on ``"cpu"``.

    Args:
        model: The model's skeleton (e.g. built under ``accelerate.init_empty_weights``).
        layers_path: Dotted path of the layer list (``model.layers``).
    """
    device_map: dict[str, str] = {}
    parent = model
    prefix = ""
    for part in layers_path.split("."):
        for name, _ in parent.named_children():
            if name != part:
                device_map[prefix + name] = "cpu"
        parent = getattr(parent, part)
        prefix += part + "."
    device_map.update({f"{layers_path}.{i}": "disk" for i in range(len(parent))})
    return device_map


def load_offloaded(
    source: str,
    offload_dir: str | Path,
    *,
    dtype: str = "float32",
    local_files_only: bool = False,
    trust_remote_code: bool = False,
) -> OffloadedModel:
    """Load a checkpoint with its decoder layers offloaded to disk.

    Args:
        source: ``demo``, a local Hugging Face directory or a hub id (a saved checkpoint:
            ``tiny:<family>`` and ``.gguf`` files have none to offload from).
        offload_dir: Folder for weights that change (smoothing) or are not in safetensors.
        dtype: ``float32`` (calibration), ``float16`` or ``bfloat16``.
        local_files_only: Never download.
        trust_remote_code: Allow the model's own code.

    Raises:
        ConfigError: A source with no checkpoint to offload from.
        ModelLoadError, UnsupportedArchitectureError: As :func:`sq_trt.models.loading.load_model`.
    """
    import torch
    import transformers

    from sq_trt.models.registry import find_spec

    if source.startswith("tiny:") or source.endswith(".gguf"):
        raise ConfigError(
            f"model.offload needs a saved Hugging Face checkpoint to stream layers from; {source!r} has none. "
            "Save it with save_pretrained (or use the in-memory path: model.offload: false)"
        )
    where = source
    if source == "demo":
        from sq_trt.models.demo import demo_model_dir

        where = str(demo_model_dir())
        local_files_only = True
    try:
        config = transformers.AutoConfig.from_pretrained(
            where, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the config of {source!r}: {exc}") from exc
    spec = find_spec(config)
    model_cls = transformers.AutoModel if spec.kind == "encoder" else transformers.AutoModelForCausalLM
    offload = Path(offload_dir)
    offload.mkdir(parents=True, exist_ok=True)
    torch_dtype = getattr(torch, dtype)
    from accelerate import init_empty_weights

    with init_empty_weights():
        skeleton = model_cls.from_config(config, trust_remote_code=trust_remote_code)
    layers_path = next(p for p in spec.layers_paths if _resolves(skeleton, p))
    device_map = layer_device_map(skeleton, layers_path)
    del skeleton
    try:
        model = model_cls.from_pretrained(
            where,
            dtype=torch_dtype,
            device_map=device_map,
            offload_folder=str(offload),
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            where, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load model {source!r} with offloading: {exc}") from exc
    model.eval()
    return OffloadedModel(model, tokenizer, spec, source, where, offload_dir=offload)


@contextlib.contextmanager
def materialized(model: Any, names: Sequence[str], offload_dir: Path) -> Iterator[dict[str, Any]]:
    """Bring the weights of ``names`` (module names) into memory; on exit write changed ones back.

    Yields ``name -> module`` with real tensors. Modules that are not offloaded
    are yielded as they are. On exit every offloaded parameter is written to
    ``offload_dir`` with accelerate's ``offload_weight`` and the module's hook is
    pointed at it, then the module returns to ``meta``.
    """
    from accelerate.utils import offload_weight, set_module_tensor_to_device

    modules = {name: model.get_submodule(name) for name in names}
    offloaded: list[tuple[Any, str, Any]] = []
    for module in modules.values():
        hook = getattr(module, "_hf_hook", None)
        for attr, param in list(module.named_parameters(recurse=False)):
            if param.device.type == "meta":
                assert hook is not None and hook.weights_map is not None, (
                    "meta parameter without an offload hook"
                )
                value = hook.weights_map[attr].clone()
                set_module_tensor_to_device(module, attr, "cpu", value=value)
                offloaded.append((module, attr, hook))
    try:
        yield modules
    finally:
        for module, attr, hook in offloaded:
            loader = hook.weights_map.dataset
            key = hook.weights_map.prefix + attr
            if loader.save_folder is None:
                loader.save_folder = str(offload_dir)
            tensor = getattr(module, attr).detach()
            offload_weight(tensor, key, loader.save_folder, index=loader.index)
            set_module_tensor_to_device(module, attr, "meta")


def smooth_offloaded(loaded: OffloadedModel, scales: ActScales, config: SmoothConfig) -> SmoothResult:
    """SmoothQuant on an offloaded model, one group's modules in memory at a time.

    The same factors and folds as :func:`sq_trt.smooth.stage.smooth_model` (its functions
    are reused), for numeric alphas.

    Raises:
        ConfigError: An ``auto`` alpha (the search needs every group's activations; run
            it on a host that holds the model, or give numeric alphas).
        ArtifactError: ``scales`` lacks a linear of a group.
    """
    from sq_trt.errors import ArtifactError
    from sq_trt.models.registry import smoothing_groups
    from sq_trt.smooth.stage import (
        AUTO,
        SmoothResult,
        fold_factor,
        group_act_amax,
        group_weight_amax,
        reduce_to_prev,
        smoothing_factor,
    )

    if config.needs_sampling:
        raise ConfigError(
            "smooth.alpha 'auto' and search.act_mode 'hybrid' are not supported with model.offload: give a number in [0, 1] "
            "(and per-group overrides), or smooth on a host that holds the whole model"
        )
    model = loaded.model
    layout = loaded.spec.weight_layout
    groups = smoothing_groups(model, include_optional=config.include_optional)
    result = SmoothResult({}, {}, {}, groups)
    for group in groups:
        missing = [name for name in group.linears if name not in scales.input_channel_amax]
        if missing:
            raise ArtifactError(
                f"act_scales has no statistics for {missing[0]} (group {group.name}); recalibrate"
            )
        alpha = config.alpha_for(group.name)
        assert alpha != AUTO
        with materialized(model, [group.prev, *group.linears], loaded.offload_dir) as modules:
            weight_amax = group_weight_amax(modules, group, layout)
            factor = smoothing_factor(
                reduce_to_prev(group_act_amax(scales, group), group),
                reduce_to_prev(weight_amax, group),
                float(alpha),
                min_scale=config.min_scale,
            )
            fold_factor(modules, group, factor, layout)
        result.factors[group.name] = factor
        result.alphas[group.name] = float(alpha)
    return result
