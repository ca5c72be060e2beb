"""Per-layer error localisation: which quantized linears cost the most accuracy, and what to do.

Method (PyTorch domain, :mod:`sq_trt.quant.reference` semantics): **leave-one-in**.
For each quantizable linear, W8A8-quantize that one layer (per-channel INT8
weights, per-token or calibrated per-tensor INT8 activations) and keep every
other layer in float; run the evaluation chunks and measure the final
next-token KL divergence against the float model. That number is the layer's
own, end-to-end contribution to the final error: it includes how much the
rest of the network amplifies or damps the local error, which a local
output-error ratio alone cannot see (an early layer's small error can matter
more than a late layer's large one). Interactions between layers are not
attributed; the KL of all layers quantized together is reported next to the
ranking so the reader sees how far the sum of single-layer KLs is from it.

In the same forward pass the hook also measures, for the quantized layer, the
local output-error-to-signal ratio ``||y_q - y|| / ||y||`` and splits it into
the activation-only and weight-only parts (``x_q W`` vs ``x W_q``). That split
drives the suggestion: when the activation part dominates and the layer reads a
smoothable input, raise that group's alpha (migrate more outlier range into the
weights); when the weight part dominates, lower it; a layer with no smoothing
group (its input cannot be smoothed) is best kept in FP16 (excluded).

On TensorRT, :func:`trt_debug_tensors` reads intermediate tensors by marking
them as *debug* tensors (Polygraphy's ``MarkDebug``), which leaves the INT8
fusions intact, unlike marking them as network outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sq_trt.compare.metrics import kl_divergence
from sq_trt.deps import require
from sq_trt.errors import ConfigError

STAGE = "compare"


@dataclass(frozen=True)
class LayerError:
    """One quantized linear's measured contribution to the error."""

    name: str
    kl_leave_one_in: float
    output_error_ratio: float
    act_error_ratio: float
    weight_error_ratio: float
    group: str | None
    suggestion: str


@dataclass(frozen=True)
class LayerRanking:
    """Layers sorted by ``kl_leave_one_in``, worst first, with the context to read them."""

    layers: tuple[LayerError, ...]
    kl_all_layers: float
    act_mode: str
    positions: int

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form (written as ``layers.json``)."""
        return {
            "method": "leave-one-in: quantize one linear at a time, KL(float || quantized) of the final logits",
            "act_mode": self.act_mode,
            "positions": self.positions,
            "kl_all_layers": self.kl_all_layers,
            "kl_sum_of_layers": float(sum(layer.kl_leave_one_in for layer in self.layers)),
            "layers": [asdict(layer) for layer in self.layers],
        }


def _linear_weight(module: Any, conv1d: bool) -> Any:
    # GPT-2's Conv1D stores [in, out]; a linear's weight is [out, in].
    return module.weight.t() if conv1d else module.weight


def _fake_quant_forward(
    name: str, weight: Any, weight_q: Any, bias: Any, amax: float | None, probe: dict[str, list[float]] | None
) -> Any:
    """A linear's forward with W8A8 fake quant; with ``probe``, also accumulates local squared errors."""
    import torch

    from sq_trt.quant.reference import fake_quant_per_tensor, fake_quant_per_token

    linear = torch.nn.functional.linear

    def forward(x: Any) -> Any:
        x_q = fake_quant_per_token(x) if amax is None else fake_quant_per_tensor(x, amax)
        y_q = linear(x_q, weight_q, bias)
        if probe is not None:
            y = linear(x, weight, bias)
            stats = probe.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            stats[0] += float((y_q - y).float().pow(2).sum())
            stats[1] += float((linear(x_q, weight, bias) - y).float().pow(2).sum())
            stats[2] += float((linear(x, weight_q, bias) - y).float().pow(2).sum())
            stats[3] += float(y.float().pow(2).sum())
        return y_q

    return forward


@contextlib.contextmanager
def _quantized(
    model: Any,
    names: Sequence[str],
    *,
    act_mode: str,
    input_amax: Mapping[str, float] | None,
    conv1d: bool,
    probe: dict[str, list[float]] | None = None,
) -> Iterator[None]:
    """Swap the forward of ``names`` for W8A8 fake-quant; optionally record local error norms in ``probe``."""
    from sq_trt.quant.reference import fake_quant_weight

    modules = dict(model.named_modules())
    patched = []
    try:
        for name in names:
            module = modules[name]
            weight = _linear_weight(module, conv1d).detach()
            weight_q = fake_quant_weight(weight)
            amax = None
            if act_mode == "per_tensor":
                if input_amax is None or name not in input_amax:
                    raise ConfigError(f"per-tensor localisation needs the calibrated input amax of {name}")
                amax = float(input_amax[name])

            module.forward = _fake_quant_forward(name, weight, weight_q, module.bias, amax, probe)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def _final_log_probs(model: Any, chunks: Any, batch_size: int) -> list[np.ndarray]:
    import torch

    outputs = []
    with torch.inference_mode():
        for start in range(0, chunks.shape[0], batch_size):
            logits = model(input_ids=chunks[start : start + batch_size], use_cache=False).logits
            outputs.append(logits.float().cpu().numpy())
    return outputs


def _mean_kl(reference: list[np.ndarray], candidate: list[np.ndarray]) -> tuple[float, int]:
    total, count = 0.0, 0
    for ref, cand in zip(reference, candidate, strict=True):
        kl = kl_divergence(ref, cand)
        total += float(kl.sum())
        count += kl.size
    return total / count, count


def _suggest(name: str, group: str | None, act: float, weight: float) -> str:
    if group is None:
        return f"exclude {name} (keep it FP16): its input has no smoothing group to rebalance"
    if act >= weight:
        return (
            f"activation quantization dominates: raise alpha of group {group} (moves outlier range into the "
            f"weights), or exclude {name}"
        )
    return f"weight quantization dominates: lower alpha of group {group}, or exclude {name}"


def rank_layers(
    model: Any,
    chunks: Any,
    *,
    act_mode: str = "per_token",
    input_amax: Mapping[str, float] | None = None,
    layers: Sequence[str] | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> LayerRanking:
    """Rank the quantizable linears by their leave-one-in KL (see the module docstring).

    Args:
        model: The float model to judge (for SmoothQuant, the *smoothed* model:
            smoothing is exact in float, so quantization is the only error).
        chunks: int64 ``[n, seq]`` evaluation tokens (a few chunks suffice).
        act_mode: ``"per_token"`` or ``"per_tensor"``.
        input_amax: Calibrated per-tensor input amax by linear name (``per_tensor`` only).
        layers: Linears to rank (default: every quantizable linear).
        batch_size: Chunks per forward pass.
        progress: Show a progress bar.

    Returns:
        The ranking, worst layer first.
    """
    from tqdm.auto import tqdm

    from sq_trt.models.registry import find_spec, quantizable_linears, smoothing_groups

    if act_mode not in ("per_token", "per_tensor"):
        raise ConfigError(f"act_mode must be 'per_token' or 'per_tensor', got {act_mode!r}")
    spec = find_spec(model)
    if spec.kind != "decoder":
        raise ConfigError(f"layer ranking by next-token KL needs a causal LM; {spec.family} is an encoder")
    conv1d = spec.weight_layout == "conv1d"
    names = list(layers) if layers is not None else quantizable_linears(model)
    group_of = {
        linear: g.name for g in smoothing_groups(model, include_optional=False) for linear in g.linears
    }
    require("torch", STAGE)

    reference = _final_log_probs(model, chunks, batch_size)
    with _quantized(model, names, act_mode=act_mode, input_amax=input_amax, conv1d=conv1d):
        kl_all, positions = _mean_kl(reference, _final_log_probs(model, chunks, batch_size))

    results = []
    for name in tqdm(names, desc="layers", unit="layer", disable=not progress):
        probe: dict[str, list[float]] = {}
        with _quantized(model, [name], act_mode=act_mode, input_amax=input_amax, conv1d=conv1d, probe=probe):
            kl, _ = _mean_kl(reference, _final_log_probs(model, chunks, batch_size))
        err, act, weight, signal = probe[name]
        denom = max(signal, 1e-30)
        ratio, act_ratio, weight_ratio = (float(np.sqrt(v / denom)) for v in (err, act, weight))
        group = group_of.get(name)
        results.append(
            LayerError(name, kl, ratio, act_ratio, weight_ratio, group, _suggest(name, group, act, weight))
        )
    results.sort(key=lambda layer: layer.kl_leave_one_in, reverse=True)
    return LayerRanking(tuple(results), kl_all, act_mode, positions)


def trt_debug_tensors(
    onnx_path: str, tensor_names: Sequence[str], feed: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Values of intermediate tensors of a TensorRT engine, read as debug tensors.

    Builds the ONNX (strongly typed: precision from the graph's Q/DQ) with the
    named tensors marked as *debug* tensors, which TensorRT copies out through a
    debug listener without changing the engine's layer fusions (marking them as
    outputs would stop the INT8 GEMMs fusing and measure a different engine).
    TensorRT proper and a GPU only.

    Args:
        onnx_path: The ONNX model (e.g. ``model.int8.onnx``).
        tensor_names: Names of the tensors to read (e.g. the quantized MatMuls' outputs).
        feed: One feed dict.

    Returns:
        Tensor name -> value, for every requested name and the network outputs.
    """
    trt = require("tensorrt", STAGE)
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        MarkDebug,
        NetworkFromOnnxPath,
        Profile,
        TrtRunner,
    )

    from sq_trt.engine.plugin_loader import register_plugins_for_onnx

    # One profile pinned to the feed's shapes: the dynamic batch/sequence dims need one to build.
    profile = Profile()
    for name, value in feed.items():
        profile.add(name, min=value.shape, opt=value.shape, max=value.shape)
    # The parser maps sq_trt nodes only to plugins already registered (the build stage does the same).
    register_plugins_for_onnx(trt, onnx_path)
    network = NetworkFromOnnxPath(onnx_path, strongly_typed=True)
    engine = EngineFromNetwork(
        MarkDebug(network, list(tensor_names)), config=CreateConfig(profiles=[profile])
    )
    with TrtRunner(engine) as runner:
        outputs = runner.infer(dict(feed))
    missing = [name for name in tensor_names if name not in outputs]
    if missing:
        raise ConfigError(
            f"TensorRT returned no debug values for {missing}; check the tensor names in {onnx_path}"
        )
    return {name: np.array(value) for name, value in outputs.items()}
