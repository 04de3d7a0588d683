"""Report figures that no other box draws: points coloured by learning rate (paper Figure 9) and
forgetting broken down by the source of the held-out pretraining data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from forgetless.analysis.plots import save_figure  # noqa: E402
from forgetless.metrics import X_DEFAULT, Y_DEFAULT, metric  # noqa: E402
from forgetless.report.rows import Row  # noqa: E402


def points_by_lr(rows: list[Row], path: Path, x: str = X_DEFAULT, y: str = Y_DEFAULT) -> Path:
    """One panel per (base, task, method): every checkpoint on the axes x, y (metric names of
    forgetless.metrics), coloured by its learning rate."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if np.isfinite(r.value(x)) and np.isfinite(r.value(y)):
            groups.setdefault((r.base, r.task, r.method), []).append(r)
    keys = sorted(groups, key=str)
    cols = min(4, max(1, len(keys)))
    nrows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.4 * nrows), squeeze=False)
    lrs = [r.lr for r in rows if r.lr]
    norm = LogNorm(vmin=min(lrs), vmax=max(lrs)) if lrs and min(lrs) < max(lrs) else None
    scatter = None
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = groups[key]
        scatter = ax.scatter([p.value(x) for p in pts], [p.value(y) for p in pts],
                             c=[p.lr for p in pts], cmap="viridis", norm=norm, s=18)
        ax.set_title(f"{key[0]} · {key[1]} · {key[2]}", fontsize=9)
        ax.set_xlabel(metric(x).axis_label(), fontsize=8)
        ax.set_ylabel(metric(y).axis_label(), fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, label="learning rate", shrink=0.8)
    return save_figure(fig, path, dpi=110, tight=False)


def forgetting_sources(by_method: dict[str, dict[str, float]], path: Path) -> Path:
    """Bars: mean rise of the held-out loss over the base, per source, for each method."""
    methods = sorted(by_method)
    sources = sorted({s for m in by_method.values() for s in m})
    x = np.arange(len(methods))
    width = 0.8 / max(1, len(sources))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(methods) + 2), 3.8))
    for i, src in enumerate(sources):
        ax.bar(x + (i - (len(sources) - 1) / 2) * width, [by_method[m].get(src, np.nan) for m in methods],
               width, label=src)
    ax.set_xticks(x, methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("forgetting: loss rise over the base")
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(title="held-out source")
    return save_figure(fig, path, dpi=110)
