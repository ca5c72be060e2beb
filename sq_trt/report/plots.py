"""The report's plots as PNG bytes (matplotlib, Agg backend: no display needed).

Every function returns the PNG of one figure; the HTML page embeds them as
base64 data URIs, and the report directory also keeps them as files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def activation_smoothing(before: np.ndarray, after: np.ndarray, layer: str) -> bytes:
    """Per-channel max ``|X|`` of one linear's input before and after smoothing (the SmoothQuant picture).

    Args:
        before: ``[in_features]`` calibrated per-channel amax of the original model.
        after: ``[in_features]`` the same statistic of the smoothed model.
        layer: The linear's name (title).
    """
    plt = _pyplot()
    # Separate y scales: after smoothing the range is often 100x smaller and would vanish on a shared axis.
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    channels = np.arange(before.shape[0])
    for ax, values, title, color in (
        (axes[0], before, "before smoothing", "#c0392b"),
        (axes[1], after, "after smoothing", "#2471a3"),
    ):
        ax.bar(channels, values, width=1.0, color=color)
        ratio = float(values.max() / max(np.median(values), 1e-30))
        ax.set_title(f"{title}: max {values.max():.3g}, max/median {ratio:.1f}x", fontsize=10)
        ax.set_xlabel("input channel")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("max |X| over calibration tokens")
    axes[1].set_ylabel("max |X| (smoothed model)")
    fig.suptitle(f"Activation range per channel: {layer}", fontsize=11)
    return _png(fig)


def error_histograms(histograms: Mapping[str, Mapping[str, Sequence[float]]], output: str) -> bytes:
    """Distribution of ``|candidate - baseline|`` of one output, one curve per candidate (log x).

    Args:
        histograms: Candidate -> ``{"upper_edges", "counts"}`` (non-empty bins of the
            log-spaced error histogram, :meth:`OutputErrorAccumulator.histogram`).
        output: The output's name (title).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, hist in histograms.items():
        edges = np.asarray(hist["upper_edges"], dtype=np.float64)
        counts = np.asarray(hist["counts"], dtype=np.float64)
        total = counts.sum()
        if total == 0:
            continue
        # Exact zeros (bin 0, below 1e-40) have no place on a log axis: counted in the legend instead.
        nonzero = edges > 1e-38
        zeros = total - counts[nonzero].sum()
        if not nonzero.any():
            continue
        # Regroup the fine bins (128 per octave) into 10 per decade on a gap-free grid, so the
        # curve reads as a shape and falls to zero where there are no errors.
        keys = np.floor(np.log10(np.minimum(edges[nonzero], 1e38)) * 10).astype(np.int64)
        grid = np.arange(keys.min(), keys.max() + 2)
        sums = np.bincount(keys - keys.min(), weights=counts[nonzero], minlength=grid.size)
        label = f"{name} ({zeros / total:.1%} exactly 0)" if zeros else name
        ax.step(10.0 ** (grid / 10), sums / total, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"absolute error of `{output}`")
    ax.set_ylabel("fraction of elements")
    ax.set_title(f"Error distribution vs the baseline: {output}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _png(fig)


def layer_ranking(names: Sequence[str], values: Sequence[float], top: int = 15) -> bytes:
    """Horizontal bars of the worst layers' leave-one-in KL."""
    plt = _pyplot()
    shown = list(zip(names, values, strict=True))[:top]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(shown) + 1.2))
    labels = [name for name, _ in shown][::-1]
    ax.barh(labels, [value for _, value in shown][::-1], color="#a04000")
    ax.set_xlabel("KL(float || one layer quantized) of the next-token distribution, nats")
    ax.set_title(f"Worst {len(shown)} layers (leave-one-in)", fontsize=11)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def alpha_sweep(points: Sequence[Mapping[str, float]], metric: str, baseline: float | None = None) -> bytes:
    """The metric against SmoothQuant's alpha (one curve), with the float baseline as a line.

    Args:
        points: ``{"alpha": a, metric: value}`` entries.
        metric: The key plotted on y.
        baseline: The unquantized value, drawn as a horizontal line when given.
    """
    plt = _pyplot()
    ordered = sorted(points, key=lambda p: p["alpha"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(
        [p["alpha"] for p in ordered], [p[metric] for p in ordered], marker="o", color="#1e8449", label="W8A8"
    )
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label="float baseline")
    best = min(ordered, key=lambda p: p[metric])
    ax.annotate(
        f"best alpha {best['alpha']:g}",
        (best["alpha"], best[metric]),
        textcoords="offset points",
        xytext=(5, 8),
    )
    ax.set_xlabel("alpha (migration strength)")
    ax.set_ylabel(metric)
    ax.set_title(f"Alpha sweep: {metric}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _png(fig)


def activation_plan(rows: Sequence[str], columns: Sequence[str], ratios: Sequence[Sequence[float | None]],
                    per_token: Sequence[Sequence[bool]], title: str) -> bytes:
    """Layers x linears: static error / per-token error (log colour), per-token cells outlined and marked.

    Args:
        rows: Layer labels (``0``, ``1``...).
        columns: Linear labels within a layer (``q_proj``, ``down_proj``...).
        ratios: ``ratios[i][j]``: static over per-token error of that linear (None: not quantized).
        per_token: ``per_token[i][j]``: the plan runs it per token.
        title: Figure title.
    """
    plt = _pyplot()
    values = np.array([[np.nan if r is None else np.log10(max(r, 1e-3)) for r in row] for row in ratios], dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.22 * len(rows) + 1.6))
    image = ax.imshow(values.T, aspect="auto", cmap="viridis", interpolation="nearest")
    for i, row in enumerate(per_token):
        for j, chosen in enumerate(row):
            if chosen:
                ax.text(i, j, "T", ha="center", va="center", color="white", fontsize=7, fontweight="bold")
    ax.set_yticks(range(len(columns)), list(columns), fontsize=8)
    step = max(1, len(rows) // 16)
    ax.set_xticks(range(0, len(rows), step), [rows[i] for i in range(0, len(rows), step)], fontsize=8)
    ax.set_xlabel("layer   (T: runs per token; others: static per-tensor INT8)")
    fig.colorbar(image, ax=ax, label="log10(static error / per-token error)")
    ax.set_title(title, fontsize=11)
    return _png(fig)
