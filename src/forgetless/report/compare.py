"""`forgetless compare`: every forgetting remedy of a study on one frontier per (base, task).

A remedy is a study method (full or LoRA finetuning with an optimizer, a learning-rate grid, and
any of replay, l2sp in its settings), plus one WiSE-FT remedy "<method>+wise" per method run with
`wise`: the interpolated weights of each finished run, α = 0 (the base itself) left out like the
step-0 point. For each panel:

- the frontier figure: every remedy's points (all learning rates, checkpoints and pretraining
  seeds) and the front of the pooled cloud, the base marked;
- the Δ-view: the best task loss within Δ nats of the base's forgetting (report.effects.delta_view),
  per pretraining seed, averaged;
- pairwise dominance, decided as the verdicts decide claim 2: per unit (base, pretraining seed) the
  frontier gap of A over B (report.effects.frontier_gap, nats of task loss at matched forgetting,
  positive = A better), then report.statistics.decide over the units with the verdicts' frontier
  margin: "holds" = A's frontier is better, "does not hold" = B's, "inconclusive" = not separable.
  A panel of k remedies makes k(k−1)/2 such tests, so they are decided with Holm's step-down
  (the smallest p-value at LEVEL/m, the next at LEVEL/(m−1), ..., stopping at the first that
  fails), which aims the chance that any pair of equal remedies is called decisive at LEVEL
  (measured: 16/200 simulated null panels of 10 remedies at 3 seeds, against 179/200 without;
  tests/report/test_compare_calibration.py, benchmarks/compare_calibration.py);
- the cost beside it: replay tokens per run (and their share of the finetune's tokens), WiSE
  evaluations per run;
- the answer: the remedy with the most decisive wins and no decisive loss, and how sure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forgetless.errors import UserError
from forgetless.metrics import DELTAS, FORGETTING, LEARNING, X_DEFAULT, Y_DEFAULT, metric
from forgetless.report.claim import base_forgetting, group
from forgetless.report.effects import cloud, delta_view, front, frontier_gap
from forgetless.report.rows import Row, as_rows, rows_from_run, rows_from_store
from forgetless.report.statistics import FAILS, HOLDS, LEVEL, Decision, decide
from forgetless.report.verdicts import FRONTIER_MARGIN

__all__ = ["DELTAS", "PanelComparison", "Row", "answer", "compare", "compare_panel", "holm", "markdown", "plot",
           "rows_from_run", "rows_from_store", "run_compare"]


def remedy_cloud(rows: list[Row], x: str = X_DEFAULT, y: str = Y_DEFAULT) -> np.ndarray:
    """(n, 2) points of a remedy on the axes x, y: step 0 and WiSE at α = 0 (both the untouched
    base) left out."""
    return cloud([r for r in rows if r.wise != 0], x, y)


@dataclass
class Pair:
    a: str
    b: str
    decision: Decision
    effects: list[float]  # per unit: frontier gap, positive = a better


@dataclass
class PanelComparison:
    base: str
    task: str
    remedies: list[str]
    clouds: dict[str, np.ndarray]
    base_point: tuple[float, float]
    delta: dict[str, np.ndarray]  # remedy -> best learning within each Δ of DELTAS (mean over units)
    cost: dict[str, dict[str, float]]
    optimizer: dict[str, str] = field(default_factory=dict)  # remedy -> its finetuning optimizer
    unit: str = "pretraining seed"  # what one unit of evidence is: a pretraining or a finetuning seed
    reference: str = "held-out pretraining text"  # what forgetting was measured on
    x: str = X_DEFAULT  # the metrics of the axes (forgetless.metrics)
    y: str = Y_DEFAULT
    pairs: list[Pair] = field(default_factory=list)
    units: int = 0
    best: str | None = None
    answer: str = ""


def _cost(rows: list[Row]) -> dict[str, float]:
    """Per run (mean over runs): finetune tokens, replay tokens, WiSE evaluations."""
    by_run = group(rows, "run_id")
    tokens = [max((r.tokens or 0) for r in rs) for rs in by_run.values()]
    replay = [max((_finite(r.value("replay_tokens")) or 0) for r in rs) for rs in by_run.values()]
    wise = [len({r.wise for r in rs if r.wise is not None}) for rs in by_run.values()]
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    return {"runs": len(by_run), "tokens": mean(tokens), "replay_tokens": mean(replay), "wise_evaluations": mean(wise)}


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def compare_panel(base: str, task: str, rows: list[Row], margin: float = FRONTIER_MARGIN,
                  x: str = X_DEFAULT, y: str = Y_DEFAULT) -> PanelComparison:
    """One (base, task): clouds, Δ-view, pairwise decisions over pretraining seeds, costs, answer,
    on the axes x (a forgetting metric) and y (a learning metric) of forgetless.metrics."""
    rows = as_rows(rows)
    remedies = sorted({r.remedy for r in rows})
    by_remedy = {m: [r for r in rows if r.remedy == m] for m in remedies}
    # A study's bases come in pretraining seeds; one downloaded checkpoint has none, and its
    # repeats are finetuning seeds (the only seeds a user can run again).
    pretrained_here = any(r.base_seed is not None for r in rows)
    units = group(rows, "base_optimizer", "base_seed") if pretrained_here else group(rows, "seed")
    references = sorted({str(r.reference) for r in rows if r.reference})
    steps0 = [r for r in rows if r.step == 0]
    base_point = (float(np.median([r.value(x) for r in steps0])), float(np.median([r.value(y) for r in steps0]))) \
        if steps0 else (math.nan, math.nan)
    delta = {}
    for m in remedies:
        per_unit = [delta_view(remedy_cloud([r for r in urows if r.remedy == m], x, y), base_forgetting(urows, x))
                    for urows in units.values()]
        with np.errstate(all="ignore"):
            stacked = np.array(per_unit, dtype=float).reshape(-1, len(DELTAS))
            delta[m] = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in stacked.T])
    pc = PanelComparison(base, task, remedies, {m: remedy_cloud(by_remedy[m]) for m in remedies}, base_point,
                         delta, {m: _cost(by_remedy[m]) for m in remedies}, units=len(units),
                         optimizer={m: str(by_remedy[m][0].optimizer) for m in remedies},
                         unit="pretraining seed" if pretrained_here else "finetuning seed",
                         reference=" + ".join(references) or "held-out pretraining text", x=x, y=y)
    for i, a in enumerate(remedies):
        for b in remedies[i + 1:]:
            effects = []
            for urows in units.values():
                ca = remedy_cloud([r for r in urows if r.remedy == a], x, y)
                cb = remedy_cloud([r for r in urows if r.remedy == b], x, y)
                if len(ca) and len(cb):
                    effects.append(frontier_gap(ca, cb))
            pc.pairs.append(Pair(a, b, decide(effects, margin), effects))
    holm(pc.pairs, margin)
    pc.best, pc.answer = _answer(pc)
    return pc


def _axis_words(pc: PanelComparison) -> tuple[str, str]:
    """(learning, forgetting) as the answer and the tables say them: 'task loss', 'forgetting'."""
    return metric(pc.y).phrase, metric(pc.x).phrase


def holm(pairs: list[Pair], margin: float, level: float = LEVEL) -> None:
    """Re-decide `pairs` in place with Holm's step-down over their p-values, so that the family of
    tests has error rate at most `level`: the j-th smallest p-value (0-based) is tested at
    level/(m − j); from the first that is not below its level, every later pair is inconclusive."""
    tested = sorted((p for p in pairs if np.isfinite(p.decision.p_value)), key=lambda p: p.decision.p_value)
    m, stop_level = len(tested), None
    for j, p in enumerate(tested):
        step_level = level / (m - j)
        if stop_level is None and p.decision.p_value > step_level:
            stop_level = step_level  # p at or above this level from here on: none is decisive
        p.decision = decide(p.effects, margin, level=stop_level or step_level)


@dataclass
class Record:
    """One remedy's pairs: decisive wins, decisive losses, undecided, and its gap in each."""

    wins: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    open: list[str] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)


def _record(pc: PanelComparison) -> dict[str, Record]:
    """Per remedy: decisive wins, decisive losses, undecided, mean gap over its pairs."""
    rec = {m: Record() for m in pc.remedies}
    for p in pc.pairs:
        if not p.effects:
            continue
        sign = {HOLDS: 1, FAILS: -1}.get(p.decision.status, 0)
        for me, other, s in ((p.a, p.b, sign), (p.b, p.a, -sign)):
            (rec[me].wins if s > 0 else rec[me].losses if s < 0 else rec[me].open).append(other)
            rec[me].gaps.append(p.decision.mean * (1 if me == p.a else -1))
    return rec


def _answer(pc: PanelComparison) -> tuple[str | None, str]:
    rec = _record(pc)
    scored = [m for m in pc.remedies if rec[m].gaps]
    where = f"base {pc.base} · {pc.task}"
    if len(scored) < 2:
        return None, f"{where}: fewer than two remedies with points; nothing to compare."
    best = max(scored, key=lambda m: (len(rec[m].wins) - len(rec[m].losses), float(np.mean(rec[m].gaps))))
    r = rec[best]
    gap = float(np.mean(r.gaps))
    learn, forget = _axis_words(pc)
    unit = metric(pc.y).unit
    how = (f"the calibrated test over {pc.units} {pc.unit}(s): per seed the frontier gap in {unit} of "
           f"{learn} at matched {forget}, two-sided t at family level {LEVEL:g} with Holm's correction over the "
           f"{len(pc.pairs)} pairs, margin {FRONTIER_MARGIN:g}")
    if not any(rec[m].wins for m in scored):
        return best, (f"{where}: no remedy's frontier is decisively better than another's by {how}. The largest "
                      f"mean gap is {best}'s ({gap:+.3f} {unit} against the others on average), which is not "
                      f"enough to choose it: more {pc.unit}s would decide.")
    n_other = len(scored) - 1
    if len(r.wins) == n_other:
        return best, (f"{where}: {best} gives the best frontier, decisively better than each of the other "
                      f"{n_other} remedies by {how} (mean gap {gap:+.3f} {unit}).")
    lost = f"; but {', '.join(r.losses)} beat(s) it" if r.losses else ""
    return best, (f"{where}: {best} is ahead, decisively better than {len(r.wins)} of {n_other} remedies "
                  f"({', '.join(r.wins)}) by {how}; against {', '.join(r.open) or 'none'} the test is "
                  f"inconclusive, so those remain as good as far as these seeds tell{lost}.")


def answer(results: list[PanelComparison]) -> str:
    """The one paragraph: each panel's answer, then the remedy best in most panels."""
    named = [pc.best for pc in results if pc.best]
    if not named:
        return " ".join(pc.answer for pc in results)
    top = max(sorted(set(named)), key=named.count)
    decided = sum(1 for pc in results if pc.best == top and "decisively better" in pc.answer and "no remedy" not in pc.answer)
    tail = (f"Over the {len(results)} base × task panels, {top} leads in {named.count(top)} "
            f"({decided} of them with at least one decisive win).")
    return " ".join(pc.answer for pc in results) + " " + tail


def compare(rows: list[Row], margin: float = FRONTIER_MARGIN, x: str = X_DEFAULT,
            y: str = Y_DEFAULT) -> list[PanelComparison]:
    """Every (base, task) panel compared on the axes x, y (metric names, forgetless.metrics); rows
    without the x metric (a store written before it existed) are left out."""
    x, y = metric(x, FORGETTING).name, metric(y, LEARNING).name
    if metric(y).maximize:  # the frontier gaps and the Δ-view take lower as better
        raise UserError(f"compare: learning metric {y!r} is higher-is-better; compare ranks by a loss "
                        "(learning); draw accuracy with `forgetless frontier --y accuracy`")
    rows = [r for r in as_rows(rows) if r.step == 0 or x == X_DEFAULT or math.isfinite(r.value(x))]
    panels: dict[tuple, list[Row]] = {}
    for r in rows:
        panels.setdefault((r.base_model, r.task), []).append(r)
    return [compare_panel(str(b), str(t), rs, margin, x, y) for (b, t), rs in sorted(panels.items(), key=str)]


def _fmt(v: float, spec: str = ".3f") -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, spec)


def _cost_text(c: dict[str, float]) -> str:
    parts = []
    replay, tokens, wise = c.get("replay_tokens"), c.get("tokens"), c.get("wise_evaluations")
    if replay:
        share = replay / tokens if tokens else math.nan
        parts.append(f"{replay:,.0f} replay tokens/run ({_fmt(100 * share, '.1f')}% of its tokens)")
    if wise:
        parts.append(f"{wise:g} WiSE evaluations/run")
    return "; ".join(parts) or "none"


def markdown(results: list[PanelComparison], figures: dict[tuple[str, str], Path] | None = None) -> str:
    """The comparison as Markdown: per panel the figure, the Δ-view with costs, the pairwise
    decisions, then the answer paragraph."""
    out = ["# Forgetting remedies compared", ""]
    for pc in results:
        out += [f"## base {_md(pc.base)} · {_md(pc.task)}", ""]
        if figures and (pc.base, pc.task) in figures:
            out += [f"![frontiers]({figures[(pc.base, pc.task)].name})", ""]
        learn, forget = _axis_words(pc)
        out += [f"Base model: {forget} {_fmt(pc.base_point[0])}, {learn} {_fmt(pc.base_point[1])}; "
                f"{pc.units} {pc.unit}(s); forgetting measured on {_md(pc.reference)}.", "",
                "| remedy | runs | " + " | ".join(f"Δ≤{d:g}" for d in DELTAS) + " | extra cost |",
                "|---|---|" + "---|" * len(DELTAS) + "---|"]
        for m in pc.remedies:
            out.append(f"| {_md(m)} | {pc.cost[m].get('runs')} | " + " | ".join(_fmt(v) for v in pc.delta[m])
                       + f" | {_cost_text(pc.cost[m])} |")
        best = "Highest" if metric(pc.y).maximize else "Best"
        out += ["", f"{best} {learn} with {forget} within Δ {metric(pc.x).unit} of the base (mean over {pc.unit}s; "
                f"{metric(pc.y).better} is better).", "",
                f"| A | B | A's frontier gap over B ({metric(pc.y).unit}) | verdict |", "|---|---|---|---|"]
        for p in pc.pairs:
            verdict = {HOLDS: f"{_md(p.a)} better", FAILS: f"{_md(p.b)} better"}.get(p.decision.status, p.decision.status)
            out.append(f"| {_md(p.a)} | {_md(p.b)} | {p.decision.text()} | {verdict} |")
        out += ["", pc.answer, ""]
    out += ["## Answer", "", answer(results), ""]
    return "\n".join(out)


def _md(label: str) -> str:
    """A user's label (method, base, task) as Markdown text: no HTML passes through (a renderer
    would run `<script>`), and a `|` does not split a table cell."""
    import html

    return html.escape(str(label), quote=False).replace("|", "\\|")


def plot(pc: PanelComparison, path: str | Path) -> Path:
    """The frontiers of every remedy of one panel on one figure, costs in the legend: one plot per
    finetuning optimizer, on shared axes (a dozen frontiers on one plot cannot be read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from forgetless.analysis.plots import save_figure

    optimizers = sorted(set(pc.optimizer.values()))
    fig, axes = plt.subplots(1, len(optimizers), figsize=(6.0 * len(optimizers), 4.8), sharex=True, sharey=True,
                             squeeze=False)
    for ax, opt in zip(axes[0], optimizers, strict=True):
        mine = [m for m in pc.remedies if pc.optimizer[m] == opt]
        methods = sorted({m.removesuffix("+wise") for m in mine})
        for m in mine:  # a method's WiSE curve in its colour, dashed
            pts, colour = pc.clouds[m], plt.cm.tab10(methods.index(m.removesuffix("+wise")) % 10)
            if not len(pts):
                continue
            # every point visible: opaque enough to see one alone, WiSE points as diamonds
            wise = m.endswith("+wise")
            ax.scatter(pts[:, 0], pts[:, 1], s=30 if wise else 22, alpha=0.85, color=colour, marker="D" if wise else "o",
                       edgecolors="black", linewidths=0.4, zorder=3)
            xs = np.sort(pts[:, 0])
            cost = _cost_text(pc.cost[m])
            ax.step(xs, front(pts, xs), where="post", lw=1.6, color=colour, ls="--" if m.endswith("+wise") else "-",
                    label=m + ("" if cost == "none" else f" ({cost.split(' (')[0].replace('/run', '')})"))
        if all(np.isfinite(pc.base_point)):
            ax.plot(*pc.base_point, marker="*", ms=12, color="black", ls="none", label="base")
        ax.set_title(f"base {pc.base} · {pc.task} · finetuned with {opt}", fontsize=9)
        ax.set_xlabel(metric(pc.x).axis_label(pc.reference), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    axes[0][0].set_ylabel(metric(pc.y).axis_label(), fontsize=8)
    return save_figure(fig, path, dpi=130)


def run_compare(rows: list[Row], out_dir: str | Path, x: str = X_DEFAULT,
                y: str = Y_DEFAULT) -> tuple[list[PanelComparison], Path]:
    """The comparison of the rows on the axes x, y, one figure per panel and compare.md in `out_dir`."""
    results = compare(rows, x=x, y=y)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for pc in results:
        slug = f"{pc.base}-{pc.task}".replace("/", "_").replace(":", "_")
        figures[(pc.base, pc.task)] = plot(pc, out / f"compare-{slug}.png")
    md = out / "compare.md"
    md.write_text(markdown(results, figures))
    return results, md

