"""Choosing the next token from logits: greedy, or sampled with temperature / top-k / top-p."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sq_trt.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is picked.

    Attributes:
        temperature: 0 for greedy (argmax); otherwise logits are divided by it before softmax.
        top_k: Keep only the k most likely tokens (0: all).
        top_p: Keep the smallest set of most likely tokens whose probability reaches p (1.0: all).
        seed: Seed of the sampler's random generator (sampling is reproducible).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax."""
        return self.temperature == 0.0


class Sampler:
    """Picks tokens under a :class:`SamplingConfig`, with its own seeded generator."""

    def __init__(self, config: SamplingConfig) -> None:
        """Seed the generator from ``config.seed``."""
        import numpy as np

        self.config = config
        self._rng = np.random.default_rng(config.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """The next token from one row of logits ``[vocab]``."""
        import numpy as np

        if self.config.greedy:
            return int(np.argmax(logits))
        # float64: softmax of fp16 logits over a 50k vocabulary loses the tail in fp32 sums.
        scaled = logits.astype(np.float64) / self.config.temperature
        order = np.argsort(-scaled, kind="stable")
        if self.config.top_k:
            order = order[: self.config.top_k]
        kept = scaled[order]
        probs = np.exp(kept - kept.max())
        probs /= probs.sum()
        if self.config.top_p < 1.0:
            # Keep tokens up to and including the one whose cumulative probability reaches top_p.
            cut = int(np.searchsorted(np.cumsum(probs), self.config.top_p)) + 1
            order, probs = order[:cut], probs[:cut] / probs[:cut].sum()
        return int(order[self._rng.choice(len(order), p=probs)])
