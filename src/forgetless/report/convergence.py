"""Claim 2 per pretraining budget: the report of a study whose bases come at several budgets
(issue 22; `forgetless reproduce --preset convergence`, sweep/presets/convergence.yaml).

A study with a list of budgets (sweep.branches) pretrains one constant-lr trunk per (family, seed)
and a decay branch per budget. Claims are decided budget by budget, never across budgets: a unit of
evidence is a (base family, seed) at one budget, and pooling budgets would mix bases of different
quality. For each budget this module gives:
- the bases: final validation loss of each (family, seed) after its decay branch, and its distance
  from convergence = that loss minus the same (family, seed)'s loss at the largest budget;
- claim 2 decided by `verdicts.claim2_same_optimizer` on that budget's finetune points alone: the
  verdict, each required part (per base family against each cross family) and the shown parts
  (consistency effect, main effect), each with its mean and interval over units;
then one table and one figure (effects against tokens per parameter, the bases' losses beside).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from forgetless.report.render import Section, Table
from forgetless.report.tables import finetune_rows
from forgetless.report.verdicts import Verdict, claim2_same_optimizer
from forgetless.sweep.records import EvalPoint, Run
from forgetless.sweep.store import Store


@dataclass
class Budget:
    tokens: int
    tokens_per_param: float
    val_loss: dict[str, list[float]]  # family -> per seed
    distance: dict[str, list[float]]  # family -> per seed, loss minus the largest budget's
    finetunes_done: int
    finetunes: int
    verdict: Verdict | None  # claim 2 on this budget's points (None: no finetune finished)


@dataclass
class Convergence:
    n_params: int | None
    budgets: list[Budget] = field(default_factory=list)


def n_params(checkpoint: Path) -> int:
    """N = V·d + L(4d² + 3df) + (2L + 1)d of a tied-embedding Llama (models/presets.py)."""
    c = json.loads((checkpoint / "config.json").read_text())
    v, d, layers, f = c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    return v * d + layers * (4 * d * d + 3 * d * f) + (2 * layers + 1) * d


def has_budgets(runs: dict[str, dict] | dict[str, Run]) -> bool:
    runs = {cid: r if isinstance(r, Run) else Run.from_row(r) for cid, r in runs.items()}
    return any(r.kind == "pretrain" and r.meta.get("budget") for r in runs.values())


def _unit(branch: Run) -> tuple:
    """(family, seed, budget) of a decay branch, from its labels."""
    m = branch.meta
    return m.get("base_optimizer"), m.get("base_seed"), m.get("base_tokens")


def measure(store_path: Path, study: str, root: Path | None = None) -> Convergence:
    """Per budget: the bases' losses and claim 2, from a store of a budgeted study."""
    with Store(store_path) as st:
        runs = st.run_records(study)
        rows = finetune_rows(st, study)
        points = st.eval_points(study=study)
    branches = {cid: r for cid, r in runs.items() if r.kind == "pretrain" and r.meta.get("budget")}
    last: dict[str, EvalPoint] = {}  # a branch's last evaluation: the finished base's validation loss
    for p in points:
        if p.run_id in branches and (p.run_id not in last or p.step > last[p.run_id].step):
            last[p.run_id] = p
    n = None
    for r in branches.values():
        out = Path(r.out_dir or "")
        if root is not None and not out.is_absolute():
            out = root / out
        found = sorted((out / "checkpoints").glob("step-*"))
        if found:
            n = n_params(found[-1])
            break
    loss = {_unit(r): last[cid].forgetting for cid, r in branches.items() if r.status == "done" and cid in last}
    budget_of_run = {cid: r.meta.get("base_tokens") for cid, r in runs.items() if r.kind == "finetune"}
    result = Convergence(n)
    budgets = sorted({_unit(r)[2] for r in branches.values()})
    for b in budgets:
        top = budgets[-1]
        val, dist = {}, {}
        for fam in sorted({f for (f, _s, t) in loss if t == b}):
            seeds = sorted(s for (f, s, t) in loss if f == fam and t == b)
            val[fam] = [loss[(fam, s, b)] for s in seeds]
            dist[fam] = [loss[(fam, s, b)] - loss[(fam, s, top)] for s in seeds if (fam, s, top) in loss]
        mine = [r for r in rows if budget_of_run.get(r.run_id) == b]
        fts = [r for r in runs.values() if r.kind == "finetune" and r.meta.get("base_tokens") == b]
        done = sum(r.status in ("done", "diverged") for r in fts)
        result.budgets.append(Budget(b, b / n if n else float("nan"), val, dist, done, len(fts),
                                     claim2_same_optimizer(mine) if mine else None))
    return result


def _fmt(d) -> str:
    if d is None or not math.isfinite(getattr(d, "mean", float("nan"))):
        return "not measured"
    return f"{d.status}, {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] over {d.n_units}"


def _mean(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f}" if xs else "-"


def table(c: Convergence) -> Table:
    families = sorted({f for b in c.budgets for f in b.val_loss})
    headers = ["tokens/param", "pretraining tokens",
               *[f"val loss {f} (distance)" for f in families], "finetunes done", "claim 2",
               "parts and shown effects (mean [interval] over units)"]
    rows = []
    for b in c.budgets:
        cells = [f"{_mean(b.val_loss.get(f, []))} ("
                 + (f"{statistics.mean(b.distance[f]):+.3f}" if b.distance.get(f) else "-") + ")" for f in families]
        parts = []
        if b.verdict is not None:
            for decisions in (b.verdict.part_decisions, b.verdict.shown_decisions):
                parts += [f"{name}: {_fmt(d)}" for name, d in (decisions or {}).items()]
        rows.append([f"{b.tokens_per_param:.2f}", f"{b.tokens:,}", *cells, f"{b.finetunes_done}/{b.finetunes}",
                     b.verdict.status if b.verdict else "not run", "; ".join(parts)])
    return Table(headers, rows, caption="Claim 2 per pretraining budget (same family minus cross family, nats)")


def figure(c: Convergence, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for b in c.budgets:
        if b.verdict is None:
            continue
        for decisions in (b.verdict.part_decisions, b.verdict.shown_decisions):
            for name, d in (decisions or {}).items():
                if math.isfinite(d.mean):
                    series[name].append((b.tokens_per_param, d.mean, d.low, d.high))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.6, 1]})
    for k, (name, pts) in enumerate(sorted(series.items())):
        x = [p[0] * (1.03 ** (k - len(series) / 2)) for p in pts]  # spread the markers a little
        low = [p[1] - p[2] if math.isfinite(p[2]) else 0.0 for p in pts]
        high = [p[3] - p[1] if math.isfinite(p[3]) else 0.0 for p in pts]
        ax.errorbar(x, [p[1] for p in pts], yerr=[low, high], marker="o", capsize=3,
                    label=name if len(name) < 70 else name[:67] + "...")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining tokens per parameter")
    ax.set_ylabel("effect, nats (positive = as the paper claims)")
    ax.set_title("claim 2 per budget: parts, consistency and main effect (intervals over seeds)")
    if series:
        ax.legend(fontsize=6.5, loc="best")
    for fam in sorted({f for b in c.budgets for f in b.val_loss}):
        pts = [(b.tokens_per_param, b.val_loss[fam]) for b in c.budgets if b.val_loss.get(fam)]
        bx.errorbar([p[0] for p in pts], [statistics.mean(v) for _, v in pts],
                    yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in pts], marker="o", capsize=3,
                    label=f"{fam} bases")
    bx.set_xscale("log")
    bx.set_xlabel("pretraining tokens per parameter")
    bx.set_ylabel("validation loss after the decay branch (nats)")
    bx.set_title("bases: mean over seeds (± sd)")
    bx.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def section(c: Convergence, fig_dir: Path) -> Section:
    """The report's section: the table, the figure, and how to read them."""
    paragraphs = [
        "Each budget is a finished base: a constant-lr trunk shared by every budget and a decay branch "
        "at that budget (sweep.branches). Claim 2 is decided per budget over its own (family, seed) "
        "units; the required parts are per base family, the consistency and main effects are shown. "
        "Distance from convergence: a base's validation loss minus the same seed's at the largest budget.",
        f"Parameters per model: {c.n_params:,}." if c.n_params else "Parameters per model: not found "
        "(no branch checkpoint).",
    ]
    figures = [(figure(c, fig_dir / "convergence.png"), "claim 2's parts and effects against the "
                "pretraining budget (left) and the bases' validation losses (right)")] if c.budgets else []
    return Section("Claim 2 against the pretraining budget", paragraphs, [table(c)], figures)


def verdicts(c: Convergence) -> list[Verdict]:
    """Claim 2 of each budget, titled with its budget (the console's verdict table)."""
    out = []
    for b in c.budgets:
        if b.verdict is not None:
            b.verdict.title = f"{b.verdict.title} (bases at {b.tokens_per_param:.2g} tokens per parameter)"
            out.append(b.verdict)
    return out
