"""Calibration: activation ranges of every quantizable linear (the ``act_scales`` artifact).

One forward pass per calibration sample with forward hooks on every linear that
will be quantized. Each hook folds the sample's activations into running maxima
and drops them, so memory stays bounded by one sample's activations. Recorded
per linear ``L`` (float32):

* ``L.input_channel_amax`` ``[in_features]``: max ``|X_j|`` per input channel (the
  SmoothQuant statistic);
* ``L.input_amax`` (0-dim): max ``|X|`` over the whole input (per-tensor static mode);
* ``L.output_amax`` (0-dim): max ``|Y|`` of the linear's output;
* ``L.output_channel_amax`` ``[out_features]``: max ``|Y_k|`` per output channel, so a
  later stage that divides output channels by a factor (linear->linear smoothing)
  can recompute ``output_amax`` exactly.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sq_trt.artifacts.act_scales import ActScales, save_act_scales
from sq_trt.errors import CalibrationError, DataError
from sq_trt.models import adapter
from sq_trt.models.registry import quantizable_linears
from sq_trt.quant.attention import BMM_FAMILIES, BmmObserver, eager_attention_with
from sq_trt.stage_config import StageConfig

if TYPE_CHECKING:
    import torch

    from sq_trt.data import TextSlice
    from sq_trt.models.loading import LoadedModel



class CalibrateConfig(StageConfig):
    """How much calibration text: the recipe's ``calibrate`` section and ``sq-trt calibrate``'s flags."""

    samples: int = Field(default=32, ge=1, description="calibration samples of seq_len tokens each")
    seq_len: int = Field(default=512, ge=2, description="tokens per calibration sample")


def calibration_chunks(config: CalibrateConfig, loaded: LoadedModel, text: TextSlice) -> torch.Tensor:
    """The calibration token chunks ``[<= samples, seq_len]`` cut from ``text`` (the calibration slice)."""
    from sq_trt.data import tokenize_chunks

    return tokenize_chunks(loaded.tokenizer, text, seq_len=config.seq_len, max_chunks=config.samples)


def run(
    config: CalibrateConfig,
    *,
    loaded: LoadedModel,
    text: TextSlice,
    text_column: str,
    out: str | os.PathLike[str],
    force: bool = False,
    chunks: torch.Tensor | None = None,
    progress: bool = True,
) -> ActScales:
    """The calibrate stage: what ``sq-trt calibrate`` and the pipeline both call.

    Args:
        config: Samples and sequence length.
        loaded: The model (offloaded or in memory).
        text: The calibration slice of the data source.
        text_column: The field the text was read from (recorded: smooth re-reads the same text).
        out: The act_scales artifact directory to write.
        force: Replace ``out``.
        chunks: The chunks of ``text`` already cut with :func:`calibration_chunks` (else cut here).
        progress: Show a progress bar.

    Returns:
        The statistics written.
    """
    if chunks is None:
        chunks = calibration_chunks(config, loaded, text)
    scales = calibrate(loaded, chunks, progress=progress)
    scales.meta["data"] = text.describe()
    scales.meta["text_column"] = text_column
    save_act_scales(out, scales, force=force)
    return scales


def _channel_amax(t: torch.Tensor) -> torch.Tensor:
    """max |t| per channel (last axis) as float32; NaN propagates (checked by the caller).

    (``torch.aminmax(t, dim=0)`` would avoid the ``|t|`` copy but measured 13x slower on CPU.)
    """
    return t.abs().reshape(-1, t.shape[-1]).amax(dim=0).float()


class _SharedInput:
    """The last input tensor reduced, and its per-channel amax.

    q/k/v (and gate/up) are called on the same tensor object, so its reduction is computed
    once per forward and reused by the linears that read it. A strong reference (not an
    ``id``) identifies it, so a freed tensor's reused address never matches.
    """

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.amax: torch.Tensor | None = None

    def channel_amax(self, x: torch.Tensor) -> torch.Tensor:
        if self.source is not x:
            self.source, self.amax = x, _channel_amax(x)
        assert self.amax is not None
        return self.amax

    def clear(self) -> None:
        self.source = self.amax = None


class _RunningAmax:
    """Forward hook folding one linear's input/output into running per-channel maxima, in place.

    Per batch it does two reductions (one when the input was reduced for another linear) and
    two in-place ``torch.maximum``; no host copy, no finiteness check: ``max`` propagates NaN
    and inf, so :meth:`check_finite` on the maxima after the last batch catches any bad element.
    """

    def __init__(self, name: str, shared: _SharedInput) -> None:
        self.name = name
        self.shared = shared
        self.input_channel: torch.Tensor | None = None
        self.output_channel: torch.Tensor | None = None

    def __call__(self, module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        x_amax = self.shared.channel_amax(inputs[0])
        y_amax = _channel_amax(output)
        if self.input_channel is None or self.output_channel is None:
            # Copies: the shared input reduction must not become another linear's accumulator.
            self.input_channel, self.output_channel = x_amax.clone(), y_amax
            return
        torch.maximum(self.input_channel, x_amax, out=self.input_channel)
        torch.maximum(self.output_channel, y_amax, out=self.output_channel)

    def check_finite(self) -> None:
        """Raise if any recorded maximum is NaN/inf (a bad activation anywhere in any batch)."""
        import torch

        for what, stat in (("input", self.input_channel), ("output", self.output_channel)):
            assert stat is not None, f"{self.name} never ran"
            if not bool(torch.isfinite(stat).all()):
                raise CalibrationError(
                    f"non-finite (NaN/inf) {what} activations at linear {self.name!r} during calibration; "
                    "the model overflows in its dtype or its weights are corrupt. Calibrate in float32 "
                    "and check the model's FP32 perplexity first (sq-trt eval)"
                )


def calibrate(loaded: LoadedModel, chunks: torch.Tensor, *, progress: bool = True) -> ActScales:
    """Record the activation ranges of every quantizable linear over calibration chunks.

    Samples are run one at a time (batch 1) so peak memory is one sample's
    activations; nothing but running maxima is kept.

    Args:
        loaded: The model to calibrate (any device; float32 recommended).
        chunks: ``int64`` token ids ``[num_samples, seq_len]``.
        progress: Show a tqdm progress bar.

    Returns:
        The statistics; ``meta`` holds ``model_fingerprint``, ``model_source``,
        ``family``, ``num_samples``, ``seq_len`` and ``linears`` (the caller adds ``data``).

    Raises:
        DataError: ``chunks`` is empty or not 2-D.
        CalibrationError: NaN/inf activations (naming the linear).
    """
    import torch
    from tqdm.auto import tqdm

    if chunks.dim() != 2 or chunks.shape[0] == 0 or chunks.shape[1] == 0:
        raise DataError(
            f"calibration needs token chunks of shape [samples>=1, seq_len>=1], got {tuple(chunks.shape)}; "
            "give more calibration text or a shorter --seq-len"
        )
    model = loaded.model
    names = quantizable_linears(model)
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    assert not missing, f"registry names not in the model: {missing}"
    device = next(model.parameters()).device
    shared = _SharedInput()
    hooks = {name: _RunningAmax(name, shared) for name in names}
    handles = [modules[name].register_forward_hook(hooks[name]) for name in names]
    # The attention BMM input ranges (the O3 option) come from eager attention with an observer;
    # families whose attention is not hooked simply have none.
    bmm = BmmObserver(model) if loaded.spec.family in BMM_FAMILIES else None
    try:
        with torch.inference_mode(), eager_attention_with(model, bmm) if bmm is not None else nullcontext():
            for row in tqdm(chunks, desc="calibrate", unit="sample", disable=not progress):
                adapter.forward_body(model, row[None].to(device))
    finally:
        for handle in handles:
            handle.remove()
        shared.clear()
    # Model order: the first non-finite linear named is where the bad values started.
    for hook in hooks.values():
        hook.check_finite()
    if bmm is not None:
        bmm.check_finite()

    scales = ActScales({}, {}, {}, {}, {})
    for name, hook in hooks.items():
        assert hook.input_channel is not None and hook.output_channel is not None, f"{name} never ran"
        scales.input_channel_amax[name] = hook.input_channel.cpu()
        scales.input_amax[name] = hook.input_channel.max().cpu()
        scales.output_channel_amax[name] = hook.output_channel.cpu()
        scales.output_amax[name] = hook.output_channel.max().cpu()
    if bmm is not None:
        scales.bmm_amax = dict(bmm.amax)
    scales.meta = {
        "model_fingerprint": loaded.fingerprint(),
        "model_source": loaded.source,
        "family": loaded.spec.family,
        "num_samples": int(chunks.shape[0]),
        "seq_len": int(chunks.shape[1]),
        "linears": names,
    }
    return scales
