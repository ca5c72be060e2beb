"""Polygraphy runners for every kind of model ``compare`` accepts, chosen from a spec string.

Specs (``--baseline`` / ``--candidate NAME=SPEC``):

* ``path/to/model.onnx``: ONNX Runtime on CPU through Polygraphy's ``OnnxrtRunner``.
  The session comes from :func:`sq_trt.runtime.onnx.session_from_onnx`, which
  rewrites the per-token plugin nodes into standard ops, so the INT8 encodings
  run here with the same semantics the TensorRT plugin implements.
* ``path/to/engine.plan``: TensorRT proper through Polygraphy's ``TrtRunner``
  (GPU hosts only; imported lazily).
* ``torch:<model>``: the float PyTorch model (``demo``, ``tiny:llama``, a
  directory, a hub id) through :class:`TorchRunner`.
* ``torch-w8a8:<smoothed dir>`` / ``torch-w8a8-per-tensor:<smoothed dir>``: the
  W8A8 fake-quant reference of a smoothed artifact (per-token or per-tensor
  activations); ``torch-w8a8:<model>`` is naive (unsmoothed) per-token W8A8.

Polygraphy's own ``PytRunner`` moves inputs to CUDA unconditionally, so the
PyTorch runner here is a small ``BaseRunner`` subclass that stays on the
model's device.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from sq_trt.artifacts import verify_model_dir
from sq_trt.deps import require
from sq_trt.errors import ConfigError

STAGE = "compare"


@dataclass(frozen=True)
class RunnerSpec:
    """A parsed ``NAME=SPEC``: what to run and under which name."""

    name: str
    kind: str  # "onnx" | "plan" | "torch" | "torch-w8a8" | "torch-w8a8-per-tensor"
    target: str

    def describe(self) -> dict[str, str]:
        """JSON-friendly description for the results."""
        return {"name": self.name, "kind": self.kind, "target": self.target}

    def text(self) -> str:
        """The ``NAME=SPEC`` form (as given on the command line; recorded in manifests)."""
        return f"{self.name}={self.target}" if self.kind in ("onnx", "plan") else f"{self.name}={self.kind}:{self.target}"

    @classmethod
    def for_file(cls, name: str, path: str | Path, *, given: str | None = None) -> RunnerSpec:
        """The runner of an ONNX file or a TensorRT engine (typed: the pipeline's way in).

        Raises:
            ConfigError: Another suffix, or a missing file.
        """
        path = Path(path)
        shown = given if given is not None else f"{name}={path}"
        if path.suffix not in (".onnx", ".plan", ".engine"):
            raise ConfigError(
                f"runner {shown!r}: expected a .onnx file, a .plan engine, 'torch:<model>', 'torch-w8a8:<smoothed dir>' "
                "or 'torch-w8a8-per-tensor:<smoothed dir>'"
            )
        if not path.is_file():
            raise ConfigError(
                f"runner {shown!r}: file {path} does not exist; run `sq-trt export`/`sq-trt build` first"
            )
        return cls(name, "onnx" if path.suffix == ".onnx" else "plan", str(path))


_TORCH_PREFIXES = ("torch-w8a8-per-tensor", "torch-w8a8", "torch")


def parse_runner_spec(text: str, default_name: str | None = None) -> RunnerSpec:
    """Parse ``[NAME=]SPEC`` (see the module docstring).

    Raises:
        ConfigError: An empty name, an unknown kind, or a missing file.
    """
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = default_name or "", text
    name = name.strip()
    if not name:
        raise ConfigError(
            f"runner {text!r} has no name; write NAME=SPEC, e.g. int8=out/export/model.int8.onnx"
        )
    for prefix in _TORCH_PREFIXES:
        if spec.startswith(prefix + ":"):
            target = spec[len(prefix) + 1 :]
            if not target:
                raise ConfigError(
                    f"runner {text!r}: nothing after '{prefix}:'; give a model or artifact directory"
                )
            verify_model_dir(target)  # an artifact directory is verified before any run, like every input
            return RunnerSpec(name, prefix, target)
    return RunnerSpec.for_file(name, spec, given=text)


class TorchRunner(BaseRunner):
    """Runs a Hugging Face PyTorch model on its own device (CPU here).

    Inputs are the ONNX export's: ``input_ids`` int64 ``[batch, seq]``; the output
    is ``logits`` for causal LMs and ``last_hidden_state`` for encoders.
    """

    def __init__(self, model_factory: Any, name: str) -> None:
        """Args:
        model_factory: A zero-argument callable returning the ``torch.nn.Module`` (called on activation).
        name: The runner's name in the results.
        """
        super().__init__(name=name, prefix="torch-runner")
        self._factory = model_factory
        self.output_name = "logits"
        self.model: Any = None

    def activate_impl(self) -> None:
        """Build (or take) the model; its config (not its source string) says which output it has."""
        from sq_trt.models import adapter

        self.model = self._factory()
        self.model.eval()
        self.output_name = adapter.output_name(self.model)

    def get_input_metadata_impl(self) -> TensorMetadata:
        """``input_ids`` int64 with dynamic batch and sequence."""
        return TensorMetadata().add("input_ids", dtype=np.int64, shape=(-1, -1))

    def infer_impl(self, feed_dict: dict[str, Any]) -> OrderedDict[str, np.ndarray]:
        """One forward pass; outputs as float32 numpy."""
        torch = require("torch", STAGE)
        from sq_trt.models import adapter

        ids = torch.from_numpy(np.asarray(feed_dict["input_ids"], dtype=np.int64))
        start = time.perf_counter()
        with torch.inference_mode():
            tensor = adapter.forward(self.model, ids)
        self.inference_time = time.perf_counter() - start
        return OrderedDict([(self.output_name, tensor.float().cpu().numpy())])

    def deactivate_impl(self) -> None:
        """Drop the model."""
        self.model = None


def onnx_session(path: str) -> Any:
    """An ONNX Runtime CPU session of ``path``, with sq-trt's plugin nodes rewritten to standard ops."""
    from sq_trt.generate.runners import FullSequenceSession, is_generation_session
    from sq_trt.runtime.onnx import session_from_onnx

    session = session_from_onnx(path)
    # A generation graph (export --with-past) is scored on whole sequences with an empty cache.
    return FullSequenceSession(session) if is_generation_session(session) else session


def make_runner(spec: RunnerSpec, *, device: str = "cpu") -> BaseRunner:
    """Build the Polygraphy runner for a spec (models load lazily, on activation)."""
    if spec.kind == "onnx":
        from polygraphy.backend.onnxrt import OnnxrtRunner

        return OnnxrtRunner(lambda: onnx_session(spec.target), name=spec.name)
    if spec.kind == "plan":
        return _trt_runner(spec)
    if spec.kind == "torch":
        return TorchRunner(lambda: _float_model(spec.target, device), name=spec.name)
    per_token = spec.kind == "torch-w8a8"
    return TorchRunner(lambda: _fake_quant_model(spec.target, per_token, device), name=spec.name)


def _float_model(source: str, device: str) -> Any:
    from sq_trt.models.loading import load_model

    return load_model(source, device=device).model


def _fake_quant_model(target: str, per_token: bool, device: str) -> Any:
    """A smoothed artifact's model with W8A8 fake quant; a plain model source gives naive (unsmoothed) W8A8."""
    fakequant = require("sq_trt.quant.fakequant", STAGE)
    act_mode = "per_token" if per_token else "per_tensor"
    if (Path(target) / "manifest.json").is_file():
        from sq_trt.artifacts import load_smoothed

        loaded, scales = load_smoothed(target, device=device)
    elif per_token:
        from sq_trt.models.loading import load_model

        loaded, scales = load_model(target, device=device), None
    else:
        raise ConfigError(
            f"torch-w8a8-per-tensor:{target}: per-tensor activations need calibrated ranges; give a smoothed "
            "artifact directory (it holds them)"
        )
    fakequant.apply_fake_quant(loaded.model, scales, act_mode=act_mode)
    return loaded.model.to(device)


def _trt_runner(spec: RunnerSpec) -> BaseRunner:
    """TensorRT proper: deserialize the plan and run it."""
    require("tensorrt", STAGE)
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    # No plugin registration: the sq_trt plugins are AOT Quickly Deployable Plugins whose kernels are
    # serialized into the engine, so the .plan deserializes with no Python plugin (docs/PLUGIN.md).
    # Parsing an ONNX with sq_trt nodes is what needs it (sq_trt.engine.plugin_loader).
    return TrtRunner(EngineFromBytes(BytesFromPath(spec.target)), name=spec.name)
