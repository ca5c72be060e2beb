"""The decode loop: prefill the prompt, then one token at a time from the cache.

This is the only decode loop in sq-trt: ``sq-trt generate``, the generation
metrics of ``compare`` and the Triton Python-backend model all run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sq_trt.errors import GenerationError
from sq_trt.generate.sampling import Sampler, SamplingConfig

if TYPE_CHECKING:
    import numpy as np

    from sq_trt.generate.runners import StepRunner


@dataclass
class Generation:
    """One generated continuation.

    Attributes:
        prompt_ids: The prompt's token ids.
        token_ids: The generated ids (stops after EOS, which is included).
        prefill_s: Seconds of the prefill step (time to first token).
        decode_s: Seconds of the decode steps after the first token.
        step_logits: Per generated token, the logits row it was chosen from (only when kept).
    """

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    step_logits: list[np.ndarray] = field(default_factory=list)

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens processed per second in the prefill."""
        return len(self.prompt_ids) / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens generated per second after the first one."""
        steps = max(len(self.token_ids) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


def generate(
    runner: StepRunner,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    eos_token_id: int | None = None,
    on_token: Callable[[int], None] | None = None,
    keep_logits: bool = False,
) -> Generation:
    """Generate up to ``max_new_tokens`` after ``prompt_ids`` with ``runner``'s KV cache.

    Args:
        runner: Any step runner (ONNX Runtime, PyTorch, TensorRT).
        prompt_ids: The prompt (at least one token).
        max_new_tokens: Tokens to generate at most (>= 1).
        sampling: Greedy when omitted.
        eos_token_id: Stop after this token.
        on_token: Called with each new token as soon as it is chosen (streaming).
        keep_logits: Keep each step's logits row in the result (for accuracy metrics).

    Returns:
        The continuation with its timings.

    Raises:
        GenerationError: Empty prompt, ``max_new_tokens`` < 1, or prompt + new tokens past the context.
    """
    import numpy as np

    if not prompt_ids:
        raise GenerationError("the prompt is empty; give at least one token")
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    # The last generated token is never fed back, hence the -1.
    needed = len(prompt_ids) + max_new_tokens - 1
    if needed > runner.max_context:
        raise GenerationError(
            f"prompt of {len(prompt_ids)} tokens + {max_new_tokens} new tokens needs {needed} positions, past "
            f"the context of {runner.max_context}; shorten the prompt or lower --max-new-tokens"
        )
    sampler = Sampler(sampling or SamplingConfig())
    result = Generation(list(prompt_ids))
    runner.reset(1)
    start = time.perf_counter()
    logits = runner.step(np.asarray([prompt_ids], dtype=np.int64))[0, -1]
    for index in range(max_new_tokens):
        token = sampler(logits)
        if keep_logits:
            result.step_logits.append(logits)
        result.token_ids.append(token)
        if index == 0:
            result.prefill_s = time.perf_counter() - start
            start = time.perf_counter()
        if on_token is not None:
            on_token(token)
        if token == eos_token_id or index == max_new_tokens - 1:
            break
        logits = runner.step(np.asarray([[token]], dtype=np.int64))[0, -1]
    result.decode_s = time.perf_counter() - start if len(result.token_ids) > 1 else 0.0
    return result


def teacher_forced_logits(
    runner: StepRunner, prompt_ids: Sequence[int], continuation: Sequence[int]
) -> np.ndarray:
    """Logits that predict each token of ``continuation`` given the prompt and the tokens before it.

    One prefill over ``prompt + continuation[:-1]``; row ``t`` of the result
    predicts ``continuation[t]``. Used for per-step top-1 agreement, where a
    candidate is scored on the baseline's own continuation.

    Returns:
        float32 ``[len(continuation), vocab]``.
    """
    import numpy as np

    ids = [*prompt_ids, *continuation[:-1]]
    runner.reset(1)
    logits = runner.step(np.asarray([ids], dtype=np.int64))[0]
    return logits[len(prompt_ids) - 1 :]
