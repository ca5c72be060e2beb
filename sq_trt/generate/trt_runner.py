"""A generation engine in TensorRT (GPU host): the step runner of :mod:`sq_trt.generate.runners` on a ``.plan``.

The engine has two optimization profiles (``sq-trt build`` with a ``generation``
section, :func:`sq_trt.engine.recipe.generation_profiles`): ``prefill`` (many
tokens, empty or short past) and ``decode`` (one token, past up to the
context). One execution context is created per profile, so no step switches
profiles. Like the ONNX Runtime runner, the cache lives in two preallocated
device arenas per tensor (``max_batch x max_context``): each step reads the past
from one and TensorRT writes the present into the other, then they swap.

Needs TensorRT proper, torch with CUDA and a GPU; its tests skip elsewhere, and
``tests/trt_api`` checks every TensorRT call here against the real Python API.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sq_trt.errors import GenerationError
from sq_trt.generate.runners import check_room, layout_from_io
from sq_trt.models.cache import INPUT_IDS, LOGITS, POSITION_IDS

if TYPE_CHECKING:
    import numpy as np
    import tensorrt
    import torch

PREFILL, DECODE = "prefill", "decode"
_TORCH_DTYPES = {"float16": "float16", "float32": "float32"}


def generation_profile_indices(profiles: list[dict[str, Any]]) -> dict[str, int]:
    """Index of the ``prefill`` and ``decode`` profiles in an engine record's profile list.

    Raises:
        GenerationError: The engine lacks one of them (built without a ``generation`` section).
    """
    indices = {str(p.get("name")): i for i, p in enumerate(profiles)}
    missing = [name for name in (PREFILL, DECODE) if name not in indices]
    if missing:
        raise GenerationError(
            f"the engine has profiles {sorted(indices)}, not the generation profiles {PREFILL!r} and {DECODE!r}; "
            "rebuild it from a --with-past export with a `generation:` section (max_batch, max_input, max_context)"
        )
    return {PREFILL: indices[PREFILL], DECODE: indices[DECODE]}


def limits_from_profiles(profiles: list[dict[str, Any]]) -> tuple[int, int, int]:
    """``(max_batch, max_input, max_context)`` of a generation engine, from its recorded profiles."""
    index = generation_profile_indices(profiles)
    prefill = profiles[index[PREFILL]]["shapes"][INPUT_IDS]["max"]
    decode_past = [
        shape["max"][2]
        for name, shape in profiles[index[DECODE]]["shapes"].items()
        if name.startswith("past_")
    ]
    return int(prefill[0]), int(prefill[1]), int(max(decode_past)) + 1


class TrtStepRunner:
    """Runs a generation ``.plan`` with TensorRT on the GPU (see the module docstring)."""

    def __init__(self, trt: ModuleType, plan: bytes, profiles: list[dict[str, Any]], *, name: str) -> None:
        """Deserialize the engine, create one context per generation profile, allocate the arenas."""
        import torch

        self.name = name
        self.trt = trt
        self.max_batch, self.max_input, self.max_context = limits_from_profiles(profiles)
        self._profiles = generation_profile_indices(profiles)
        self._logger: tensorrt.ILogger = trt.Logger(trt.Logger.WARNING)
        self._runtime: tensorrt.Runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise GenerationError(
                f"TensorRT could not deserialize {name}; rebuild it with this TensorRT version"
            )
        self.engine: tensorrt.ICudaEngine = engine
        self._stream = torch.cuda.Stream()
        self._contexts: dict[str, tensorrt.IExecutionContext] = {}
        for key, index in self._profiles.items():
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(index, self._stream.cuda_stream)
            self._contexts[key] = context
        inputs, outputs = self._io()
        self.layout, self.dtype = layout_from_io(inputs, outputs)
        capacity = self.max_batch * self.layout.kv_heads * self.max_context * self.layout.head_dim
        torch_dtype = getattr(torch, _TORCH_DTYPES[self.dtype])
        count = 2 * self.layout.layers
        self._arenas = [
            [torch.empty(capacity, dtype=torch_dtype, device="cuda") for _ in range(count)] for _ in range(2)
        ]
        # Logits keep the graph's activation dtype, which an INT8 graph may have apart from its cache's.
        logits_half = self.engine.get_tensor_dtype(LOGITS) == trt.DataType.HALF
        self._logits_dtype = torch.float16 if logits_half else torch.float32
        self.batch, self.past_len, self._current = 1, 0, 0

    def _io(self) -> tuple[list[tuple[str, str, list[Any]]], list[str]]:
        """Engine I/O in the form :func:`layout_from_io` reads (ONNX Runtime's type strings)."""
        trt = self.trt
        types = {trt.DataType.HALF: "tensor(float16)", trt.DataType.FLOAT: "tensor(float)"}
        inputs, outputs = [], []
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                dims = self.engine.get_tensor_shape(name)
                shape = [dims[i] if dims[i] >= 0 else "dynamic" for i in range(len(dims))]
                kind = types.get(self.engine.get_tensor_dtype(name), "tensor(int64)")
                inputs.append((name, kind, shape))
            else:
                outputs.append(name)
        return inputs, outputs

    def reset(self, batch: int) -> None:
        """Start ``batch`` new sequences."""
        check_room(self, batch, 0)
        self.batch, self.past_len, self._current = batch, 0, 0

    def step(self, ids: np.ndarray) -> np.ndarray:
        """One prefill or decode step (see :class:`sq_trt.generate.runners.StepRunner`)."""
        import numpy as np
        import torch

        host = np.asarray(ids, dtype=np.int64)
        batch, seq = host.shape
        check_room(self, batch, seq)
        if self.past_len == 0 and seq > self.max_input:
            raise GenerationError(
                f"prompt of {seq} tokens is over the engine's max input of {self.max_input}; shorten it or "
                "rebuild with a larger generation.max_input"
            )
        key = PREFILL if self.past_len == 0 or seq > 1 else DECODE
        context = self._contexts[key]
        total = self.past_len + seq
        # Every tensor the engine reads is produced (and allocated) on the engine's stream: made on
        # torch's default stream, nothing would order the copy and the arange before TensorRT's reads.
        with torch.cuda.stream(self._stream):
            tokens = torch.as_tensor(host).cuda()
            positions = (torch.arange(seq, device="cuda") + self.past_len).expand(batch, seq).contiguous()
            logits = torch.empty((batch, seq, self._vocab()), dtype=self._logits_dtype, device="cuda")
        self._bind(context, INPUT_IDS, tokens, (batch, seq))
        self._bind(context, POSITION_IDS, positions, (batch, seq))
        past_shape = self.layout.shape(batch, self.past_len)
        sources, targets = self._arenas[self._current], self._arenas[1 - self._current]
        for i, (past, present) in enumerate(
            zip(self.layout.past_names(), self.layout.present_names(), strict=True)
        ):
            self._bind(context, past, sources[i], past_shape)
            context.set_tensor_address(present, targets[i].data_ptr())
        context.set_tensor_address(LOGITS, logits.data_ptr())
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise GenerationError(
                f"TensorRT failed to run {self.name} ({key} step, past {self.past_len}, seq {seq})"
            )
        self._stream.synchronize()
        self._current, self.past_len = 1 - self._current, total
        return logits.float().cpu().numpy()

    def _bind(
        self, context: tensorrt.IExecutionContext, name: str, tensor: torch.Tensor, shape: tuple[int, ...]
    ) -> None:
        if not context.set_input_shape(name, shape):
            raise GenerationError(f"input {name} of shape {shape} is outside the engine's profile")
        context.set_tensor_address(name, tensor.data_ptr())

    def _vocab(self) -> int:
        dims = self.engine.get_tensor_shape(LOGITS)
        return int(dims[len(dims) - 1])


def open_engine_runner(
    engine_dir: str | Path, *, target: str | None = None, max_context: int | None = None
) -> TrtStepRunner:
    """A :class:`TrtStepRunner` for an engine directory (``sq-trt build`` of a ``--with-past`` export).

    Raises:
        GenerationError: No generation profiles, or a context larger than the engine's.
        ArtifactError, MissingDependencyError: Not an engine directory; no TensorRT.
    """
    from sq_trt.artifacts import load_manifest
    from sq_trt.engine.backends import load_tensorrt
    from sq_trt.engine.engine_manifest import engine_records, load_engine_record

    directory = Path(engine_dir)
    records = engine_records(load_manifest(directory))
    if target is None:
        if len(records) != 1:
            raise GenerationError(f"{directory} holds targets {sorted(records)}; pick one with --target")
        target = next(iter(records))
    record = load_engine_record(directory, target)
    generation_profile_indices(record.profiles)
    backend = load_tensorrt()
    runner = TrtStepRunner(
        backend.trt,
        (directory / record.plan).read_bytes(),
        record.profiles,
        name=f"tensorrt:{directory}/{record.plan}",
    )
    if max_context is not None:
        if max_context > runner.max_context:
            raise GenerationError(
                f"--max-context {max_context} is over the engine's context of {runner.max_context}; rebuild it "
                "with a larger generation.max_context"
            )
        runner.max_context = max_context
    return runner
