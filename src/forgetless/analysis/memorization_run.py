"""The memorisation test's results read (paper §4.2, A.2, Table 3): each optimizer's figures at the
lowest training loss every optimizer reached, and the paper's table. The runner that trains the
models is forgetless.experiments.memorization (above the sweep, beside `forgetless reproduce`);
its settings are analysis/memorization_config.MemorizationConfig.
"""

from __future__ import annotations

from .memorization_config import MemorizationConfig

__all__ = ["MemorizationConfig", "matched_loss_points", "table3"]


def _at_loss(history: list[dict], target: float) -> dict:
    """The history's figures where its train loss first reaches `target`, linear in the loss
    between the last eval point above it and the first at or below it."""
    prev = None
    for point in history:
        if point["train_loss"] <= target:
            if prev is None or prev["train_loss"] <= point["train_loss"]:
                return dict(point)
            w = (prev["train_loss"] - target) / (prev["train_loss"] - point["train_loss"])
            return {k: (prev[k] + w * (v - prev[k]) if isinstance(v, (int, float)) and k != "lr" else v)
                    for k, v in point.items()}
        prev = point
    raise ValueError(f"train loss never reached {target}")


def matched_loss_points(selected: dict[str, list[dict]]) -> tuple[float, dict[str, dict]]:
    """The lowest train loss every optimizer reached, and each one's figures at that loss
    (interpolated between eval points), so optimizers are compared after fitting the corpus
    equally well rather than after equal steps."""
    target = max(min(p["train_loss"] for p in h) for h in selected.values())
    return target, {o: _at_loss(h, target) for o, h in selected.items()}


def table3(selected: dict[str, list[dict]], pairs: list[tuple[int, int]]) -> str:
    """The paper's Table 3 layout (clean pairs | corrupted pairs | train loss), as markdown: at the
    last step, and at matched train loss; exact match and token accuracy."""
    target, matched = matched_loss_points(selected)
    views = [("final step", {o: h[-1] for o, h in selected.items()}),
             (f"matched train loss {target:.3f} (interpolated between eval points)", matched)]
    heads = " | ".join(f"({p},{g})" for p, g in pairs)
    lines = []
    for metric, name in (("exact", "Exact match"), ("token", "Teacher-forced token accuracy")):
        for view, points in views:
            lines += [f"### {name}, {view}", "",
                      f"| Optimizer | step | Clean {heads} | Corrupted {heads} | Train loss |",
                      "|---|---|" + "---|" * (2 * len(pairs)) + "---|"]
            for o, pt in points.items():
                clean = " | ".join(f"{pt[f'clean_{metric}_{p}_{g}']:.1%}" for p, g in pairs)
                bad = " | ".join(f"{pt[f'corrupted_{metric}_{p}_{g}']:.1%}" for p, g in pairs)
                lines.append(f"| {o} (lr {pt['lr']:g}) | {pt['step']:.0f} | {clean} | {bad} | {pt['train_loss']:.3f} |")
            lines.append("")
    lines.append("Columns are (prompt length, generation length); blocks are from the training corpus.")
    return "\n".join(lines) + "\n"
