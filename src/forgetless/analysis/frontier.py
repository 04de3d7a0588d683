"""Frontiers of a study: the store's points grouped into panels, summarised, and drawn.

A panel is one (base model, task): the paper's Figures 2, 3 and 6 draw one per base optimizer
and task. Inside a panel each method (e.g. full-adamw, lora8-adamw) has a point cloud: every
eval checkpoint of every learning rate and seed of that method. The numbers come from
`forgetless.analysis.pareto`; this module only gathers, tabulates and plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from forgetless.analysis import pareto
from forgetless.metrics import (
    DELTAS,
    FORGETTING,
    LEARNING,
    X_DEFAULT,
    Y_DEFAULT,
    metric,
    recorded,
    value,
)

__all__ = ["DELTAS", "MethodCloud", "MethodSummary", "Panel", "Summary", "panels", "summarize", "print_tables", "plot"]


@dataclass
class MethodCloud:
    points: np.ndarray  # (n, 2): the x metric (forgetting), the y metric (learning)
    lrs: np.ndarray
    steps: np.ndarray
    runs: list[str] = field(default_factory=list)


@dataclass
class Panel:
    base: str
    base_optimizer: str
    task: str
    methods: dict[str, MethodCloud]
    maximize: tuple[bool, bool] = (False, False)
    base_point: tuple[float, float] = (float("nan"), float("nan"))  # step 0: the base model
    reference: str | None = None  # the text forgetting was measured on, when the store says
    x: str = X_DEFAULT  # the metrics on the axes (forgetless.metrics)
    y: str = Y_DEFAULT

    @property
    def title(self) -> str:
        return f"base {self.base} ({self.base_optimizer}) · {self.task}"


def axes(x: str = X_DEFAULT, y: str = Y_DEFAULT, metric_name: str | None = None) -> tuple[str, str]:
    """The (x, y) metric names, checked against the registry; `metric_name` is the older
    `--metric loss|accuracy` of the learning axis."""
    if metric_name is not None:
        if metric_name not in ("loss", "accuracy"):
            raise ValueError(f"metric must be 'loss' or 'accuracy'; got {metric_name!r}")
        y = "learning" if metric_name == "loss" else "accuracy"
    return metric(x, FORGETTING).name, metric(y, LEARNING).name


def panels(points: list, metric_name: str | None = None, x: str = X_DEFAULT,
           y: str = Y_DEFAULT) -> list[Panel]:
    """Finetune points (`Store.eval_points(study=...)`) grouped into panels, on the axes x (a
    forgetting metric) and y (a learning metric) of forgetless.metrics; only points where both
    were recorded. `metric_name` "loss" | "accuracy" picks y the older way."""
    x, y = axes(x, y, metric_name)
    groups: dict[tuple, dict[str, list]] = {}
    info: dict[tuple, dict] = {}
    for p in points:  # typed points (forgetless.sweep.records.EvalPoint; this box sits below it)
        p = _typed(p)
        if p.kind != "finetune" or not (recorded(p, x) and recorded(p, y)):
            continue
        if p.wise:  # WiSE-FT: interpolated after the run, not a trajectory point (forgetless compare)
            continue
        k = (p.meta.get("base"), p.meta.get("task"))
        info.setdefault(k, p.meta)
        groups.setdefault(k, {}).setdefault(p.method, []).append(p)
    out = []
    for k, by_method in groups.items():
        methods = {}
        for name, pts in by_method.items():
            methods[name] = MethodCloud(
                points=np.array([[value(q, x), value(q, y)] for q in pts], dtype=float),
                lrs=np.array([q.lr for q in pts], dtype=float),
                steps=np.array([q.step for q in pts]),
                runs=[q.run_id for q in pts])
        step0 = np.concatenate([m.points[m.steps == 0] for m in methods.values()])
        base_point = tuple(np.median(step0, axis=0)) if len(step0) else (float("nan"),) * 2
        # The step-0 point is the untouched base, the same for every method: it is drawn once as
        # the base point and left out of the clouds (it would cap every share at 1 - 1/n).
        methods = {name: MethodCloud(m.points[m.steps != 0], m.lrs[m.steps != 0], m.steps[m.steps != 0],
                                     [r for r, st in zip(m.runs, m.steps, strict=True) if st != 0])
                   for name, m in methods.items() if (m.steps != 0).any()}
        out.append(Panel(base=str(k[0]), base_optimizer=str(info[k].get("base_optimizer")), task=str(k[1]),
                         methods=dict(sorted(methods.items())),
                         maximize=(metric(x).maximize, metric(y).maximize),
                         base_point=base_point, reference=info[k].get("reference"), x=x, y=y))
    return sorted(out, key=lambda pn: (pn.task, pn.base))


def _typed(p):
    """A point given as a dict (the store's older `points()` rows) read like a typed point."""
    if not isinstance(p, Mapping):
        return p
    extra = p.get("extra") or {}
    return SimpleNamespace(**{**p, "kind": p.get("kind", "finetune"), "meta": p.get("meta") or {},
                              "extra": extra, "wise": extra.get("wise") is not None})


def learning_levels(panel: Panel, n: int = 4) -> list[float]:
    """n learning levels from the base's value towards the best reached: 25%, 50%, ... of the way."""
    best = [m.points[np.isfinite(m.points).all(axis=1), 1] for m in panel.methods.values()]
    best = np.concatenate(best)
    start = panel.base_point[1]
    if not len(best) or not np.isfinite(start):
        return []
    end = best.max() if panel.maximize[1] else best.min()
    return [float(f"{start + (end - start) * k / n:.3g}") for k in range(1, n + 1)]


@dataclass
class MethodSummary:
    """One method's frontier figures in a panel."""

    runs: int
    points: int
    pareto: int  # size of its Pareto set
    robust: np.ndarray  # indices of its robust frontier (paper A.1), ordered along it
    hypervolume: float
    best_lr: float  # the lr that learns most (Biderman et al. view), its best point and its points
    best_lr_point: np.ndarray
    best_lr_mask: np.ndarray
    within_delta: np.ndarray  # best learning within each Δ of DELTAS of the base's forgetting
    at_levels: np.ndarray  # least forgetting reaching each learning level


@dataclass
class Summary:
    """A panel's per-method figures, the pairwise dominance shares and what the tables need."""

    methods: dict[str, MethodSummary]
    dominance: dict[str, dict[str, float]]  # dominance[a][b]: share of b's points a dominates
    reference: np.ndarray  # of the hypervolume
    levels: list[float]
    deltas: tuple[float, ...]
    eps: object

    def __getitem__(self, key: str):  # read as the dict it used to be (summary["dominance"])
        return getattr(self, key)


def summarize(panel: Panel, eps=0.01, reference=None) -> Summary:
    """Per-method frontier figures, pairwise dominance shares and the two readable tables."""
    mx = panel.maximize
    clouds = {name: m.points for name, m in panel.methods.items()}
    ref = np.asarray(reference, float) if reference is not None else pareto.default_reference(*clouds.values(), maximize=mx)
    levels = learning_levels(panel)
    rows = {}
    for name, m in panel.methods.items():
        best = pareto.best_lr_mask(m.points, m.lrs, maximize=mx)
        fin = best & np.isfinite(m.points).all(axis=1)
        if fin.any():
            y = m.points[fin, 1]
            i = np.flatnonzero(fin)[int(np.argmax(y) if mx[1] else np.argmin(y))]
            best_lr, best_point = float(m.lrs[i]), m.points[i]
        else:
            best_lr, best_point = float("nan"), np.array([np.nan, np.nan])
        rows[name] = MethodSummary(
            runs=len(set(m.runs)), points=len(m.points), pareto=len(pareto.pareto_set(m.points, maximize=mx)),
            robust=pareto.robust_frontier(m.points, eps, maximize=mx),
            hypervolume=pareto.hypervolume(m.points, ref, maximize=mx),
            best_lr=best_lr, best_lr_point=best_point, best_lr_mask=best,
            within_delta=pareto.learning_within_forgetting(m.points, panel.base_point[0], DELTAS, maximize=mx),
            at_levels=pareto.forgetting_at_learning(m.points, levels, maximize=mx))
    shares = {a: {b: pareto.dominated_share(clouds[a], clouds[b], maximize=mx) for b in clouds if b != a}
              for a in clouds}
    return Summary(rows, shares, ref, levels, DELTAS, eps)


def print_tables(panel: Panel, summary: Summary, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape  # method and base names are the user's text, not markup
    from rich.table import Table

    console = console or Console()
    acc = panel.maximize[1]
    learn, forget = _short(panel.y), _short(panel.x)
    ref = summary.reference
    console.rule(f"[bold]{escape(panel.title)}")
    console.print(f"base model: {forget} {panel.base_point[0]:.4f}, {learn} {panel.base_point[1]:.4f}; "
                  f"hypervolume reference ({ref[0]:.4f}, {ref[1]:.4f}); robust frontier eps {summary.eps}")
    t = Table("method", "runs", "points", "Pareto", "robust", "hypervolume", "best lr",
              f"its best {learn}", f"its {forget}", title="frontiers (best lr: Biderman et al. view)")
    for name, r in summary.methods.items():
        t.add_row(escape(name), str(r.runs), str(r.points), str(r.pareto), str(len(r.robust)),
                  f"{r.hypervolume:.4f}", f"{r.best_lr:g}", f"{r.best_lr_point[1]:.4f}", f"{r.best_lr_point[0]:.4f}")
    console.print(t)
    names = list(summary.methods)
    t = Table("A \\ B", *map(escape, names), title="share of B's points dominated by some point of A")
    for a in names:
        t.add_row(escape(a), *("—" if a == b else f"{summary.dominance[a][b]:.2f}" for b in names))
    console.print(t)
    word = "highest" if acc else "lowest"
    t = Table("method", *(f"Δ≤{d:g}" for d in summary.deltas),
              title=f"{word} {learn} with {forget} within Δ of the base")
    for name, r in summary.methods.items():
        t.add_row(escape(name), *_cells(r.within_delta))
    console.print(t)
    if summary.levels:
        op = "≥" if acc else "≤"
        t = Table("method", *(f"{learn} {op} {v:g}" for v in summary.levels),
                  title=f"lowest {forget} reaching each learning level")
        for name, r in summary.methods.items():
            t.add_row(escape(name), *_cells(r.at_levels))
        console.print(t)


def _short(name: str) -> str:
    """A metric in a sentence: 'task loss', 'forgetting', 'KL(base ‖ model)'."""
    return metric(name).phrase


def _cells(values) -> list[str]:
    return ["—" if not np.isfinite(v) else f"{v:.4f}" for v in values]


def plot(panel_list: list[Panel], summaries: list[Summary], out: str | Path, best_lr_only: bool = False) -> Path:
    """One subplot per panel: each method's points faint, its robust frontier as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panel_list)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    names = sorted({m for pn in panel_list for m in pn.methods})
    colour = {m: plt.cm.tab10(i % 10) for i, m in enumerate(names)}
    for ax, pn, s in zip(axes.flat, panel_list, summaries, strict=False):
        for name, m in pn.methods.items():
            r = s.methods[name]
            pts = m.points[r.best_lr_mask] if best_lr_only else m.points
            ax.scatter(pts[:, 0], pts[:, 1], s=12, alpha=0.25, color=colour[name], linewidths=0)
            idx = (pareto.robust_frontier(pts, s.eps, maximize=pn.maximize) if best_lr_only else r.robust)
            front = pts[idx]
            ax.plot(front[:, 0], front[:, 1], "-o", ms=3.5, lw=1.6, color=colour[name], label=name)
        if np.isfinite(pn.base_point).all():
            ax.plot(*pn.base_point, marker="*", ms=11, color="black", ls="none", label="base")
        ax.set_title(pn.title + (" (best lr only)" if best_lr_only else ""), fontsize=9)
        ax.set_xlabel(metric(pn.x).axis_label(pn.reference), fontsize=8)
        ax.set_ylabel(metric(pn.y).axis_label(), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    from forgetless.analysis.plots import save_figure

    return save_figure(fig, out, dpi=130)
