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

from forgetless.report.claim import base_forgetting, group
from forgetless.report.effects import DELTAS, cloud, delta_view, front, frontier_gap
from forgetless.report.statistics import FAILS, HOLDS, LEVEL, Decision, decide
from forgetless.report.verdicts import FRONTIER_MARGIN


def rows_from_store(store, study: str | None = None) -> list[dict]:
    """Finetune eval points as rows: the remedy (method, or method+wise), the unit, the costs."""
    runs = {r["cell_id"]: r for r in store.runs(study)}
    out = []
    for p in store.points(study=study):
        if p["kind"] != "finetune":
            continue
        meta, extra = p.get("meta") or {}, p.get("extra") or {}
        alpha = extra.get("wise")
        label = str(meta.get("base"))
        seed = meta.get("base_seed")
        base = label.rsplit("/s", 1)[0] if seed is not None and label.endswith(f"/s{seed}") else label
        config = (runs.get(p["run_id"]) or {}).get("config") or {}
        out.append({"run_id": p["run_id"], "base": base, "base_optimizer": meta.get("base_optimizer"),
                    "base_seed": seed, "finetune_seed": meta.get("seed"),
                    "reference": meta.get("reference") or _reference(config),
                    "task": meta.get("task"), "method": p["method"],
                    "remedy": p["method"] + ("+wise" if alpha is not None else ""), "wise": alpha,
                    "lr": p["lr"], "step": p["step"], "forgetting": p["forgetting"], "learning": p["learning"],
                    "tokens": p.get("tokens"), "replay_tokens": extra.get("replay_tokens"),
                    "wise_evaluations": extra.get("wise_evaluations"),
                    "optimizer": (runs.get(p["run_id"]) or {}).get("config", {}).get("optimizer")})
    return out


def _reference(config: dict) -> str | None:
    """The reference text forgetting was measured on, as a run's config names it."""
    ref = config.get("forget_corpus") or (config.get("settings") or {}).get("forget_corpus")
    return None if ref is None else str(ref)


def rows_from_run(run_dir: str | Path, label: str | None = None) -> list[dict]:
    """The eval points of one `forgetless finetune` run directory as rows: its trajectory and, when
    it was run with `wise`, its WiSE curve. Its remedy is `label` (several run directories compared:
    each its own), else the method and optimizer. The unit of evidence is the finetuning seed: a
    downloaded checkpoint has no pretraining seeds to repeat."""
    import json

    import yaml

    path = Path(run_dir)
    cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
    method = label or f"{cfg.get('method', 'full')}-{cfg.get('optimizer')}"
    out = []
    for line in (path / "metrics.jsonl").read_text().splitlines():
        try:
            p = json.loads(line)
        except ValueError:
            continue
        if not isinstance(p, dict) or p.get("kind") != "eval" or p.get("learning") is None:
            continue
        alpha = p.get("wise")
        out.append({"run_id": str(path), "base": Path(str(cfg.get("base"))).name, "base_optimizer": None,
                    "base_seed": None, "finetune_seed": cfg.get("seed", 0), "reference": _reference(cfg),
                    "task": cfg.get("task"), "method": method,
                    "remedy": method + ("+wise" if alpha is not None else ""), "wise": alpha, "lr": cfg.get("lr"),
                    "step": p["step"], "forgetting": p["forgetting"], "learning": p["learning"],
                    "tokens": p.get("tokens"), "replay_tokens": p.get("replay_tokens"),
                    "wise_evaluations": p.get("wise_evaluations"), "optimizer": cfg.get("optimizer")})
    return out


def remedy_cloud(rows: list[dict]) -> np.ndarray:
    """(n, 2) points of a remedy: step 0 and WiSE at α = 0 (both the untouched base) left out."""
    return cloud([r for r in rows if r.get("wise") != 0])


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
    pairs: list[Pair] = field(default_factory=list)
    units: int = 0
    best: str | None = None
    answer: str = ""


def _cost(rows: list[dict]) -> dict[str, float]:
    """Per run (mean over runs): finetune tokens, replay tokens, WiSE evaluations."""
    by_run = group(rows, "run_id")
    tokens = [max((r["tokens"] or 0) for r in rs) for rs in by_run.values()]
    replay = [max((r["replay_tokens"] or 0) for r in rs) for rs in by_run.values()]
    wise = [len({r["wise"] for r in rs if r["wise"] is not None}) for rs in by_run.values()]
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    return {"runs": len(by_run), "tokens": mean(tokens), "replay_tokens": mean(replay), "wise_evaluations": mean(wise)}


def compare_panel(base: str, task: str, rows: list[dict], margin: float = FRONTIER_MARGIN) -> PanelComparison:
    """One (base, task): clouds, Δ-view, pairwise decisions over pretraining seeds, costs, answer."""
    remedies = sorted({r["remedy"] for r in rows})
    by_remedy = {m: [r for r in rows if r["remedy"] == m] for m in remedies}
    # A study's bases come in pretraining seeds; one downloaded checkpoint has none, and its
    # repeats are finetuning seeds (the only seeds a user can run again).
    pretrained_here = any(r.get("base_seed") is not None for r in rows)
    units = group(rows, "base_optimizer", "base_seed") if pretrained_here else group(rows, "finetune_seed")
    references = sorted({str(r["reference"]) for r in rows if r.get("reference")})
    steps0 = [r for r in rows if r["step"] == 0]
    base_point = (float(np.median([r["forgetting"] for r in steps0])), float(np.median([r["learning"] for r in steps0]))) \
        if steps0 else (math.nan, math.nan)
    delta = {}
    for m in remedies:
        per_unit = [delta_view(remedy_cloud([r for r in urows if r["remedy"] == m]), base_forgetting(urows))
                    for urows in units.values()]
        with np.errstate(all="ignore"):
            stacked = np.array(per_unit, dtype=float).reshape(-1, len(DELTAS))
            delta[m] = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in stacked.T])
    pc = PanelComparison(base, task, remedies, {m: remedy_cloud(by_remedy[m]) for m in remedies}, base_point,
                         delta, {m: _cost(by_remedy[m]) for m in remedies}, units=len(units),
                         optimizer={m: str(by_remedy[m][0].get("optimizer")) for m in remedies},
                         unit="pretraining seed" if pretrained_here else "finetuning seed",
                         reference=" + ".join(references) or "held-out pretraining text")
    for i, a in enumerate(remedies):
        for b in remedies[i + 1:]:
            effects = []
            for urows in units.values():
                ca = remedy_cloud([r for r in urows if r["remedy"] == a])
                cb = remedy_cloud([r for r in urows if r["remedy"] == b])
                if len(ca) and len(cb):
                    effects.append(frontier_gap(ca, cb))
            pc.pairs.append(Pair(a, b, decide(effects, margin), effects))
    holm(pc.pairs, margin)
    pc.best, pc.answer = _answer(pc)
    return pc


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


def _record(pc: PanelComparison) -> dict[str, dict]:
    """Per remedy: decisive wins, decisive losses, undecided, mean gap over its pairs."""
    rec = {m: {"wins": [], "losses": [], "open": [], "gaps": []} for m in pc.remedies}
    for p in pc.pairs:
        if not p.effects:
            continue
        sign = {HOLDS: 1, FAILS: -1}.get(p.decision.status, 0)
        for me, other, s in ((p.a, p.b, sign), (p.b, p.a, -sign)):
            rec[me]["wins" if s > 0 else "losses" if s < 0 else "open"].append(other)
            rec[me]["gaps"].append(p.decision.mean * (1 if me == p.a else -1))
    return rec


def _answer(pc: PanelComparison) -> tuple[str | None, str]:
    rec = _record(pc)
    scored = [m for m in pc.remedies if rec[m]["gaps"]]
    where = f"base {pc.base} · {pc.task}"
    if len(scored) < 2:
        return None, f"{where}: fewer than two remedies with points; nothing to compare."
    best = max(scored, key=lambda m: (len(rec[m]["wins"]) - len(rec[m]["losses"]), float(np.mean(rec[m]["gaps"]))))
    r = rec[best]
    gap = float(np.mean(r["gaps"]))
    how = (f"the calibrated test over {pc.units} {pc.unit}(s): per seed the frontier gap in nats of task "
           f"loss at matched forgetting, two-sided t at family level {LEVEL:g} with Holm's correction over the "
           f"{len(pc.pairs)} pairs, margin {FRONTIER_MARGIN:g}")
    if not any(rec[m]["wins"] for m in scored):
        return best, (f"{where}: no remedy's frontier is decisively better than another's by {how}. The largest "
                      f"mean gap is {best}'s ({gap:+.3f} nats against the others on average), which is not "
                      f"enough to choose it: more {pc.unit}s would decide.")
    n_other = len(scored) - 1
    if len(r["wins"]) == n_other:
        return best, (f"{where}: {best} gives the best frontier, decisively better than each of the other "
                      f"{n_other} remedies by {how} (mean gap {gap:+.3f} nats).")
    lost = f"; but {', '.join(r['losses'])} beat(s) it" if r["losses"] else ""
    return best, (f"{where}: {best} is ahead, decisively better than {len(r['wins'])} of {n_other} remedies "
                  f"({', '.join(r['wins'])}) by {how}; against {', '.join(r['open']) or 'none'} the test is "
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


def compare(rows: list[dict], margin: float = FRONTIER_MARGIN) -> list[PanelComparison]:
    panels = group(rows, "base", "task")
    return [compare_panel(str(b), str(t), rs, margin) for (b, t), rs in panels.items()]


def _fmt(v: float, spec: str = ".3f") -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, spec)


def _cost_text(c: dict[str, float]) -> str:
    parts = []
    if c["replay_tokens"]:
        share = c["replay_tokens"] / c["tokens"] if c["tokens"] else math.nan
        parts.append(f"{c['replay_tokens']:,.0f} replay tokens/run ({_fmt(100 * share, '.1f')}% of its tokens)")
    if c["wise_evaluations"]:
        parts.append(f"{c['wise_evaluations']:g} WiSE evaluations/run")
    return "; ".join(parts) or "none"


def markdown(results: list[PanelComparison], figures: dict[tuple[str, str], Path] | None = None) -> str:
    """The comparison as Markdown: per panel the figure, the Δ-view with costs, the pairwise
    decisions, then the answer paragraph."""
    out = ["# Forgetting remedies compared", ""]
    for pc in results:
        out += [f"## base {_md(pc.base)} · {_md(pc.task)}", ""]
        if figures and (pc.base, pc.task) in figures:
            out += [f"![frontiers]({figures[(pc.base, pc.task)].name})", ""]
        out += [f"Base model: forgetting {_fmt(pc.base_point[0])}, task loss {_fmt(pc.base_point[1])}; "
                f"{pc.units} {pc.unit}(s); forgetting measured on {_md(pc.reference)}.", "",
                "| remedy | runs | " + " | ".join(f"Δ≤{d:g}" for d in DELTAS) + " | extra cost |",
                "|---|---|" + "---|" * len(DELTAS) + "---|"]
        for m in pc.remedies:
            out.append(f"| {_md(m)} | {pc.cost[m]['runs']} | " + " | ".join(_fmt(v) for v in pc.delta[m])
                       + f" | {_cost_text(pc.cost[m])} |")
        out += ["", f"Best task loss with forgetting within Δ nats of the base (mean over {pc.unit}s; "
                "lower is better).", "", "| A | B | A's frontier gap over B (nats) | verdict |", "|---|---|---|---|"]
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
        ax.set_xlabel(f"forgetting: loss on {pc.reference} (lower is better)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    axes[0][0].set_ylabel("learning: task loss (lower is better)", fontsize=8)
    return save_figure(fig, path, dpi=130)


def run_compare(rows: list[dict], out_dir: str | Path) -> tuple[list[PanelComparison], Path]:
    """The comparison of the rows, one figure per panel and compare.md in `out_dir`."""
    results = compare(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for pc in results:
        slug = f"{pc.base}-{pc.task}".replace("/", "_").replace(":", "_")
        figures[(pc.base, pc.task)] = plot(pc, out / f"compare-{slug}.png")
    md = out / "compare.md"
    md.write_text(markdown(results, figures))
    return results, md

