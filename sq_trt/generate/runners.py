"""Step runners: run one prefill or decode step of a KV-cache decoder and keep its cache.

A runner owns the cache of one batch of sequences. ``step(ids)`` feeds ``ids``
``[batch, seq]`` at positions ``past .. past + seq - 1``, appends their keys and
values to the cache and returns the logits ``[batch, seq, vocab]`` as float32.
``reset(batch)`` starts new sequences. :func:`sq_trt.generate.loop.generate`
drives any runner the same way.

The ONNX Runtime runner allocates its cache once: two arenas per cache tensor,
each as large as ``max_batch x max_context``. Each step binds the past (the
first ``past`` positions of one arena, a contiguous block) as input and the
present (``past + seq`` positions) as output directly in the other arena through
ONNX Runtime's IOBinding, then the two swap roles. No step allocates or copies
the cache in Python; ONNX Runtime writes the concatenation once, where the next
step reads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sq_trt.errors import GenerationError
from sq_trt.models.cache import INPUT_IDS, LOGITS, POSITION_IDS, CacheLayout

if TYPE_CHECKING:
    import numpy as np

_FLOAT_TYPES = {"tensor(float16)": "float16", "tensor(float)": "float32"}


class StepRunner(Protocol):
    """What the decode loop needs from a runner."""

    name: str
    layout: CacheLayout
    max_context: int
    max_batch: int
    batch: int
    past_len: int

    def reset(self, batch: int) -> None:
        """Start ``batch`` new, empty sequences."""

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Feed ``ids`` int64 ``[batch, seq]``; return float32 logits ``[batch, seq, vocab]``."""
        ...


def check_room(runner: StepRunner, batch: int, seq: int) -> None:
    """Refuse a step that would not fit the runner's batch or context.

    Raises:
        GenerationError: Batch over ``max_batch``, or ``past + seq`` over ``max_context``.
    """
    if batch > runner.max_batch:
        raise GenerationError(
            f"batch of {batch} sequences is over the runner's maximum of {runner.max_batch}; "
            "run fewer prompts at once or rebuild with a larger max batch"
        )
    if runner.past_len + seq > runner.max_context:
        raise GenerationError(
            f"{runner.past_len} cached + {seq} new tokens = {runner.past_len + seq} is past the context of "
            f"{runner.max_context} tokens; shorten the prompt, lower --max-new-tokens or raise the max context"
        )


def step_inputs(runner: StepRunner, ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate one step's token ids and give them with their positions (``past_len ..``).

    Raises:
        GenerationError: ``ids`` is not ``[batch, seq>=1]`` for the runner's batch, or does not fit.
    """
    import numpy as np

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] != runner.batch or ids.shape[1] == 0:
        raise GenerationError(f"step ids must be int64 [{runner.batch}, seq>=1], got shape {tuple(ids.shape)}")
    check_room(runner, runner.batch, ids.shape[1])
    end = runner.past_len + ids.shape[1]
    return ids, np.ascontiguousarray(np.broadcast_to(np.arange(runner.past_len, end), ids.shape))


def layout_from_io(
    inputs: list[tuple[str, str, list[Any]]], outputs: list[str], family: str = "?"
) -> tuple[CacheLayout, str]:
    """The cache layout and dtype of a generation graph, from its inputs and outputs.

    Args:
        inputs: ``(name, element type, shape)`` of every input (ONNX Runtime's type strings).
        outputs: Output names.
        family: Registry family, when known (for messages and manifests).

    Raises:
        GenerationError: Not a generation graph (no cache inputs), or cache tensors of
            inconsistent names, shapes or dtypes.
    """
    names = {name for name, _, _ in inputs}
    missing = [n for n in (INPUT_IDS, POSITION_IDS) if n not in names]
    past = [(n, t, s) for n, t, s in inputs if n.startswith("past_key_values.")]
    if missing or not past:
        raise GenerationError(
            f"the graph has inputs {sorted(names)}, not a generation graph (input_ids, position_ids, "
            "past_key_values.<i>.key/value); export it with `sq-trt export --with-past`"
        )
    layers = len(past) // 2
    first_shape = past[0][2]
    if len(first_shape) != 4 or not isinstance(first_shape[1], int) or not isinstance(first_shape[3], int):
        raise GenerationError(
            f"cache input {past[0][0]} has shape {first_shape}; expected [batch, kv_heads, past, head_dim] "
            "with fixed kv_heads and head_dim"
        )
    layout = CacheLayout(family, layers, first_shape[1], first_shape[3], 0)
    dtypes = {t for _, t, _ in past}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOAT_TYPES:
        raise GenerationError(
            f"cache inputs have element types {sorted(dtypes)}; expected one of float16/float32"
        )
    expected = set(layout.past_names())
    if {n for n, _, _ in past} != expected or not set(layout.present_names()) <= set(outputs):
        raise GenerationError(
            f"cache tensors do not pair up over {layers} layers: expected inputs {sorted(expected)[:2]}... "
            "and the matching present.<i>.key/value outputs; re-export with `sq-trt export --with-past`"
        )
    for name, _, shape in past:
        if len(shape) != 4 or shape[1] != layout.kv_heads or shape[3] != layout.head_dim:
            raise GenerationError(
                f"cache input {name} has shape {shape}; expected [batch, {layout.kv_heads}, past, "
                f"{layout.head_dim}] like {past[0][0]}"
            )
    return layout, _FLOAT_TYPES[next(iter(dtypes))]


def check_cache_tensors(layout: CacheLayout, dtype: str, tensors: Sequence[Any], batch: int) -> int:
    """Validate a cache handed to a runner; return its length in tokens.

    Raises:
        GenerationError: Wrong count, shape or dtype (the message names the first bad tensor).
    """
    if len(tensors) != 2 * layout.layers:
        raise GenerationError(
            f"got {len(tensors)} cache tensors; expected {2 * layout.layers} (key and value for {layout.layers} layers)"
        )
    tokens = tensors[0].shape[2] if tensors[0].ndim == 4 else -1
    names = layout.past_names()
    for name, tensor in zip(names, tensors, strict=True):
        expected = layout.shape(batch, tokens)
        if tuple(tensor.shape) != expected:
            raise GenerationError(f"cache tensor {name} has shape {tuple(tensor.shape)}; expected {expected}")
        # numpy's dtype.name, or torch's "torch.float16" (a cache the Triton model keeps on the GPU).
        kind = getattr(tensor.dtype, "name", None) or str(tensor.dtype).removeprefix("torch.")
        if kind != dtype:
            raise GenerationError(f"cache tensor {name} has dtype {kind}; the graph's cache is {dtype}")
    return int(tokens)


class OrtStepRunner:
    """A generation ONNX graph in ONNX Runtime (CPU), cache in preallocated arenas (see the module docstring).

    Example:
        >>> runner = OrtStepRunner("out/export/model.fp16.onnx", max_context=2048)
        >>> runner.reset(1); logits = runner.step(np.array([[1, 2, 3]]))
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        max_context: int,
        max_batch: int = 1,
        family: str = "?",
        threads: int | None = None,
    ) -> None:
        """Open the session, read the cache layout from the graph, allocate the arenas."""
        import numpy as np

        from sq_trt.runtime.onnx import session_from_onnx

        self.name = f"onnxruntime:{os.fspath(model)}"
        self.session = session_from_onnx(model, threads=threads)
        inputs = [(v.name, v.type, list(v.shape)) for v in self.session.get_inputs()]
        outputs = [v.name for v in self.session.get_outputs()]
        self.layout, self.dtype = layout_from_io(inputs, outputs, family)
        self.max_context, self.max_batch = max_context, max_batch
        capacity = max_batch * self.layout.kv_heads * max_context * self.layout.head_dim
        count = 2 * self.layout.layers
        self._arenas = [[np.zeros(capacity, dtype=self.dtype) for _ in range(count)] for _ in range(2)]
        self._binding = self.session.io_binding()
        self.batch, self.past_len, self._current = 1, 0, 0

    def reset(self, batch: int) -> None:
        """Start ``batch`` new sequences (the arenas are reused, not cleared: past 0 reads nothing)."""
        check_room(self, batch, 0)
        self.batch, self.past_len, self._current = batch, 0, 0

    def set_cache(self, tensors: list[np.ndarray]) -> None:
        """Load an existing cache (key, value per layer, ``[batch, kv_heads, tokens, head_dim]``).

        Raises:
            GenerationError: Wrong count, shape or dtype, or longer than the context.
        """
        tokens = check_cache_tensors(self.layout, self.dtype, tensors, self.batch)
        if tokens > self.max_context:
            raise GenerationError(f"cache of {tokens} tokens is past the context of {self.max_context}")
        for arena, tensor in zip(self._arenas[self._current], tensors, strict=True):
            arena[: tensor.size] = tensor.reshape(-1)
        self.past_len = tokens

    def cache(self) -> list[np.ndarray]:
        """Views of the current cache tensors (valid until the next step)."""
        size = self.batch * self.layout.kv_heads * self.past_len * self.layout.head_dim
        shape = self.layout.shape(self.batch, self.past_len)
        return [arena[:size].reshape(shape) for arena in self._arenas[self._current]]

    def step(self, ids: np.ndarray) -> np.ndarray:
        """One prefill or decode step (see :class:`StepRunner`)."""
        import numpy as np

        ids, positions = step_inputs(self, ids)
        total = self.past_len + ids.shape[1]
        io = self._binding
        io.clear_binding_inputs()
        io.clear_binding_outputs()
        io.bind_cpu_input(INPUT_IDS, ids)
        io.bind_cpu_input(POSITION_IDS, positions)
        io.bind_output(LOGITS, "cpu")  # first: get_outputs() lists outputs in binding order
        past_shape = list(self.layout.shape(self.batch, self.past_len))
        present_shape = list(self.layout.shape(self.batch, total))
        element = np.dtype(self.dtype).type
        sources, targets = self._arenas[self._current], self._arenas[1 - self._current]
        for i, (past, present) in enumerate(
            zip(self.layout.past_names(), self.layout.present_names(), strict=True)
        ):
            io.bind_input(past, "cpu", 0, element, past_shape, sources[i].ctypes.data)
            io.bind_output(present, "cpu", 0, element, present_shape, targets[i].ctypes.data)
        self.session.run_with_iobinding(io)
        logits = io.get_outputs()[0].numpy()
        self._current, self.past_len = 1 - self._current, total
        return np.asarray(logits, dtype=np.float32)


class TorchStepRunner:
    """The PyTorch model itself with transformers' cache: the reference runner."""

    def __init__(
        self, model: Any, *, max_context: int | None = None, max_batch: int = 8, name: str = "torch"
    ) -> None:
        """Wrap a loaded decoder (any dtype; logits are returned as float32)."""
        from sq_trt.models.cache import cache_layout

        self.name = name
        self.model = model
        self.layout = cache_layout(model)
        self.max_context = max_context or self.layout.max_positions
        self.max_batch = max_batch
        self.batch, self.past_len = 1, 0
        self._cache: Any = None

    def reset(self, batch: int) -> None:
        """Start ``batch`` new sequences."""
        check_room(self, batch, 0)
        self.batch, self.past_len, self._cache = batch, 0, None

    def step(self, ids: np.ndarray) -> np.ndarray:
        """One prefill or decode step (see :class:`StepRunner`)."""
        import torch
        from transformers import DynamicCache

        from sq_trt.models.cache import forward_with_cache

        tokens = torch.as_tensor(ids, dtype=torch.long)
        check_room(self, tokens.shape[0], tokens.shape[1])
        if self._cache is None:
            self._cache = DynamicCache()
        positions = (torch.arange(tokens.shape[1]) + self.past_len).expand_as(tokens)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits, self._cache = forward_with_cache(
                self.model, tokens.to(device), positions.to(device), self._cache
            )
        self.past_len += tokens.shape[1]
        return logits.float().cpu().numpy()


def is_generation_session(session: Any) -> bool:
    """Whether an ONNX Runtime session's graph takes a KV cache (``export --with-past``)."""
    return any(value.name.startswith("past_key_values.") for value in session.get_inputs())


class FullSequenceSession:
    """A generation graph's session seen as a plain ``input_ids -> logits`` session (past empty).

    The compare stage scores whole held-out sequences; a ``--with-past`` graph run
    with an empty cache and ``position_ids = arange(seq)`` computes exactly the
    full-sequence forward pass (its prefill), so Polygraphy's ONNX Runtime runner
    can compare it like any other graph through this adapter.
    """

    def __init__(self, session: Any) -> None:
        """Wrap a session of a generation graph."""
        self._session = session
        inputs = [(v.name, v.type, list(v.shape)) for v in session.get_inputs()]
        self.layout, self.dtype = layout_from_io(inputs, [v.name for v in session.get_outputs()])

    def get_inputs(self) -> list[Any]:
        """Only ``input_ids``."""
        return [v for v in self._session.get_inputs() if v.name == INPUT_IDS]

    def get_outputs(self) -> list[Any]:
        """Only ``logits``."""
        return [v for v in self._session.get_outputs() if v.name == LOGITS]

    def run(self, output_names: Any, feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        """Run the graph on ``feed["input_ids"]`` with an empty cache; return ``[logits]``."""
        import numpy as np

        ids = np.asarray(feed[INPUT_IDS], dtype=np.int64)
        batch, seq = ids.shape
        feeds = {
            INPUT_IDS: ids,
            POSITION_IDS: np.ascontiguousarray(np.broadcast_to(np.arange(seq), ids.shape)),
        }
        empty = np.zeros(self.layout.shape(batch, 0), dtype=self.dtype)
        feeds.update({name: empty for name in self.layout.past_names()})
        return list(self._session.run([LOGITS], feeds, run_options))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
