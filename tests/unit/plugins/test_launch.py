"""Input checks of the PyTorch launchers (the kernels themselves: test_kernels_interp.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the `kernels` extra (triton) is not installed")

from sq_trt.errors import ConfigError
from sq_trt.plugins import launch


def test_integer_input_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"dtype int32.*float16"):
        launch.per_token_quant(torch.zeros(2, 3, dtype=torch.int32))


@pytest.mark.parametrize("shape", [(), (4, 0)])
def test_input_without_hidden_axis_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=r"expected \[\.\.\., K\] with K >= 1"):
        launch.per_token_quant(torch.zeros(shape, dtype=torch.float16))


def test_cpu_tensor_outside_the_interpreter_says_how_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip(
            "a GPU is visible; CPU tensors are refused the same way but this test targets CPU-only hosts"
        )
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="TRITON_INTERPRET=1"):
        launch.rmsnorm_per_token_quant(torch.ones(2, 8, dtype=torch.float16), torch.ones(8), 1e-5)
