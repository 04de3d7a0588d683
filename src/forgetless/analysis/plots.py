"""Figures: activation bars across checkpoints (paper Figs. 4, 5, 10, 11) and memorisation curves
(paper Fig. 7). matplotlib with the Agg backend, so they render without a display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .modules import KINDS  # noqa: E402

ORDER = (*KINDS, "other", "hidden")


def save_figure(fig, path: str | Path, dpi: int = 120, tight: bool = True) -> Path:
    """Lay out, write (folders created) and close a figure; every figure of the package goes here."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    if not path.suffix:  # matplotlib would add .png itself, and the caller would name the wrong file
        path = path.with_name(path.name + ".png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    except OSError as err:  # an unwritable or occupied place the user named
        from forgetless.errors import BadFile

        raise BadFile(f"{path}: cannot write the figure ({err.strerror or err}); choose a writable path") from None
    finally:
        plt.close(fig)
    return path


def _kinds_present(by_label: dict[str, dict[str, dict]]) -> list[str]:
    present = set().union(*(rows.keys() for rows in by_label.values()))
    return [k for k in ORDER if k in present]


def activation_bars(
    by_label: dict[str, dict[str, dict[str, float]]], path: str | Path, metric: str = "sparsity"
) -> Path:
    """Grouped bars: one panel per side (input above, output below), module kinds on x, one bar per checkpoint,
    error bars = standard deviation over tokens. `by_label` maps label -> ActivationReport.by_kind()."""
    kinds = _kinds_present(by_label)
    labels = list(by_label)
    x = np.arange(len(kinds))
    width = 0.8 / max(1, len(labels))
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.8 * len(kinds) + 2), 7), sharey=True)
    for ax, side in zip(axes, ("input", "output"), strict=True):
        for i, label in enumerate(labels):
            rows = by_label[label]
            mean = [rows.get(k, {}).get(f"{side}_{metric}", np.nan) for k in kinds]
            std = [rows.get(k, {}).get(f"{side}_{metric}_std", np.nan) for k in kinds]
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=label)
        ax.set_xticks(x, kinds)
        ax.set_title(f"{side} activations")
        ax.set_ylabel(metric)
    axes[-1].set_xlabel("module kind")
    axes[0].legend(fontsize="small", ncol=min(5, len(labels)))
    return save_figure(fig, path, dpi=120)


def memorization_curves(history: dict[str, list[dict]], pairs: list[tuple[int, int]], path: str | Path,
                        metric: str = "exact") -> Path:
    """Paper Fig. 7: per (prompt, gen) pair, clean and corrupted `metric` against step, one line per
    optimizer; a last row plots the same against train loss (the matched-loss view)."""
    fig, axes = plt.subplots(2, len(pairs) + 1, figsize=(4 * (len(pairs) + 1), 7), squeeze=False)
    for name, points in history.items():
        steps = [p["step"] for p in points]
        loss = [p["train_loss"] for p in points]
        for j, (pl, gl) in enumerate(pairs):
            for row, split in enumerate(("clean", "corrupted")):
                y = [100 * p[f"{split}_{metric}_{pl}_{gl}"] for p in points]
                axes[row, j].plot(steps, y, marker=".", label=name)
                axes[row, j].set_title(f"{split}, prompt {pl} → gen {gl}")
                axes[row, j].set_xlabel("step")
                axes[row, j].set_ylabel(f"{metric} %")
        axes[0, -1].plot(steps, loss, marker=".", label=name)
        pl, gl = pairs[-1]
        axes[1, -1].plot(loss, [100 * p[f"corrupted_{metric}_{pl}_{gl}"] for p in points], marker=".", label=name)
    axes[0, -1].set_title("train loss")
    axes[0, -1].set_xlabel("step")
    axes[1, -1].set_title(f"corrupted {metric} vs train loss ({pairs[-1][0]}→{pairs[-1][1]})")
    axes[1, -1].set_xlabel("train loss")
    axes[1, -1].invert_xaxis()
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    return save_figure(fig, path, dpi=110)
