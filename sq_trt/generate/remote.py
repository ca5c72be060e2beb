"""A step runner over a function that runs the generation graph once: the Triton BLS model's runner.

Inside Triton's Python backend the decode loop (:func:`sq_trt.generate.loop.generate`)
calls the TensorRT plan model through BLS (``pb_utils.InferenceRequest``) once per step.
:class:`RemoteStepRunner` is that runner with the call passed in as ``infer``, so
the same class runs here on CPU with ONNX Runtime behind ``infer`` (tests) and in
the server with BLS behind it. The cache is what the last call returned: a BLS
call cannot write into caller-owned buffers, so, unlike the in-process runners,
each step receives the present tensors as new arrays. The runner keeps them as
``infer`` returns them and feeds them back unchanged: numpy arrays here, GPU torch
tensors (DLPack) in the server, so the cache never has to cross to host memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sq_trt.errors import GenerationError
from sq_trt.generate.runners import check_cache_tensors, check_room, step_inputs
from sq_trt.models.cache import INPUT_IDS, LOGITS, POSITION_IDS, CacheLayout

if TYPE_CHECKING:
    import numpy as np

# Feeds and outputs are numpy arrays, except the cache tensors, which may be any array with a shape, an
# ndim and a dtype (the server's are GPU torch tensors); logits must convert with np.asarray.
Infer = Callable[[dict[str, Any], list[str]], dict[str, Any]]


class RemoteStepRunner:
    """Runs each step through ``infer(feeds, output_names) -> outputs`` (see the module docstring)."""

    def __init__(
        self,
        infer: Infer,
        layout: CacheLayout,
        dtype: str,
        *,
        max_context: int,
        max_batch: int = 1,
        name: str = "remote",
    ) -> None:
        """Keep the call and the cache layout (from the engine's I/O or the export manifest)."""
        self.infer, self.layout, self.dtype, self.name = infer, layout, dtype, name
        self.max_context, self.max_batch = max_context, max_batch
        self.batch, self.past_len = 1, 0
        self._cache: list[Any] = []

    def reset(self, batch: int) -> None:
        """Start ``batch`` new sequences with an empty cache."""
        import numpy as np

        check_room(self, batch, 0)
        self.batch, self.past_len = batch, 0
        self._cache = [
            np.zeros(self.layout.shape(batch, 0), dtype=self.dtype) for _ in range(2 * self.layout.layers)
        ]

    def step(self, ids: np.ndarray) -> np.ndarray:
        """One prefill or decode step (see :class:`sq_trt.generate.runners.StepRunner`)."""
        import numpy as np

        ids, positions = step_inputs(self, ids)
        total = self.past_len + ids.shape[1]
        feeds = {
            INPUT_IDS: ids,
            POSITION_IDS: positions,
            **dict(zip(self.layout.past_names(), self._cache, strict=True)),
        }
        outputs = self.infer(feeds, [LOGITS, *self.layout.present_names()])
        # Kept as returned (no np.asarray): a device tensor stays on the device for the next step.
        present = [outputs[name] for name in self.layout.present_names()]
        # The server's outputs are checked like a user-given cache: a wrong engine fails here, by name.
        if check_cache_tensors(self.layout, self.dtype, present, self.batch) != total:
            raise GenerationError(
                f"{self.name} returned a cache of {present[0].shape[2]} tokens, expected {total}"
            )
        self._cache, self.past_len = present, total
        return np.asarray(outputs[LOGITS], dtype=np.float32)
