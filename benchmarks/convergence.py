"""The convergence study's result (issue 22 §2): claim 2 per pretraining budget, read from a
`forgetless sweep convergence` store.

For each budget (tokens per parameter) it prints:
- the bases: final validation loss of each (family, seed) after its decay branch, and its
  distance from convergence = that loss minus the same (family, seed)'s loss at the largest budget;
- claim 2 decided by `forgetless.report.verdicts.claim2_same_optimizer` on that budget's finetune
  points alone (the same evaluation sample for every method): the verdict, each required part
  (per base family, against each cross family), and the shown parts (consistency effect, main
  effect), each with its mean and interval over units; read generically from the Verdict's
  `part_decisions` / `shown_decisions`, so new parts appear without a change here.
Then a markdown table and a figure (effects with intervals against tokens per parameter; the
bases' losses beside them).

    python benchmarks/convergence.py runs/convergence --figure docs/figures/convergence.png --md out.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

from forgetless.report.tables import finetune_rows
from forgetless.report.verdicts import claim2_same_optimizer
from forgetless.sweep.store import Store

STUDY = "convergence"


def n_params(checkpoint: Path) -> int:
    """N = V·d + L(4d² + 3df) + (2L + 1)d of a tied-embedding Llama (docs/training.md)."""
    c = json.loads((checkpoint / "config.json").read_text())
    v, d, layers, f = c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    return v * d + layers * (4 * d * d + 3 * d * f) + (2 * layers + 1) * d


def fmt(d) -> str:
    if d is None or not math.isfinite(getattr(d, "mean", float("nan"))):
        return "not measured"
    return f"{d.status}, {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] over {d.n_units}"


def collect(store_path: Path, study: str):
    with Store(store_path) as st:
        runs = st.runs_by_id(study)
        rows = finetune_rows(st, study)
        points = st.points(study=study)
    branches = {cid: r for cid, r in runs.items() if r["kind"] == "pretrain" and r["meta"].get("budget")}
    last: dict[str, dict] = {}
    for p in points:
        if p["run_id"] in branches and (p["run_id"] not in last or p["step"] > last[p["run_id"]]["step"]):
            last[p["run_id"]] = p
    budget_of_run = {cid: r["meta"].get("base_tokens") for cid, r in runs.items()
                     if r["kind"] == "finetune" and r["meta"].get("base_tokens")}
    return runs, rows, branches, last, budget_of_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="the sweep directory (holds results.sqlite)")
    ap.add_argument("--study", default=STUDY)
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown table here")
    args = ap.parse_args()
    runs, rows, branches, last, budget_of_run = collect(args.sweep / "results.sqlite", args.study)
    n = None
    for r in branches.values():
        ckpt = Path(r["out_dir"] or "") / "checkpoints"
        found = sorted(ckpt.glob("step-*"))
        if found:
            n = n_params(found[-1])
            break
    budgets = sorted({r["meta"]["base_tokens"] for r in branches.values()})
    loss = {(r["meta"]["base_optimizer"], r["meta"]["base_seed"], r["meta"]["base_tokens"]): last[cid]["forgetting"]
            for cid, r in branches.items() if r["status"] == "done" and cid in last}
    top = max(budgets)
    out: list[str] = []
    say = out.append
    finished = [r["finished_at"] for r in runs.values() if r.get("finished_at")]
    started = [r["started_at"] for r in runs.values() if r.get("started_at")]
    status = defaultdict(int)
    for r in runs.values():
        status[r["status"]] += 1
    say(f"store {args.sweep}: {len(runs)} cells ({dict(status)}); parameters N = {n:,}" if n else
        f"store {args.sweep}: {len(runs)} cells ({dict(status)})")
    if started and finished:
        say(f"wall time so far: first start to last finish {(max(finished) - min(started)) / 60:.1f} min "
            f"({time.strftime('%H:%M', time.gmtime(min(started)))}-{time.strftime('%H:%M', time.gmtime(max(finished)))} UTC)")
    table = ["| tokens/param | pretraining tokens | val loss AdamW (dist.) | val loss Muon (dist.) | finetunes done | "
             "claim 2 | parts and shown effects (mean [interval] over units) |", "|---|---|---|---|---|---|---|"]
    series: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    losses: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for b in budgets:
        tpp = b / n if n else float("nan")
        say(f"\n== budget {b:,} tokens ({tpp:.2f} tokens per parameter) ==")
        cells = []
        for fam in ("adamw", "muon"):
            seeds = sorted(s for (f, s, t) in loss if f == fam and t == b)
            vals = [loss[(fam, s, b)] for s in seeds]
            dist = [loss[(fam, s, b)] - loss[(fam, s, top)] for s in seeds if (fam, s, top) in loss]
            say(f"  {fam} bases: val loss " + ", ".join(f"s{s} {v:.3f}" for s, v in zip(seeds, vals, strict=True))
                + ("; distance from convergence " + ", ".join(f"{x:+.3f}" for x in dist) if dist else ""))
            if vals:
                mean = statistics.mean(vals)
                cells.append(f"{mean:.3f}" + (f" ({statistics.mean(dist):+.3f})" if dist else ""))
                spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
                losses[fam].append((tpp, mean, spread))
            else:
                cells.append("-")
        mine = [r for r in rows if budget_of_run.get(r["run_id"]) == b]
        n_ft = sum(1 for r in runs.values() if r["kind"] == "finetune" and r["meta"].get("base_tokens") == b)
        n_done = sum(1 for r in runs.values() if r["kind"] == "finetune" and r["meta"].get("base_tokens") == b
                     and r["status"] in ("done", "diverged"))
        if not mine:
            table.append(f"| {tpp:.2f} | {b:,} | {cells[0]} | {cells[1]} | {n_done}/{n_ft} | not run | |")
            continue
        v = claim2_same_optimizer(mine)
        say(f"  claim 2: {v.status}; {v.ours}")
        parts = []
        for kind, decisions in (("part", getattr(v, "part_decisions", {}) or {}),
                                ("shown", getattr(v, "shown_decisions", {}) or {})):
            for name, d in decisions.items():
                say(f"    {kind}: {name}: {fmt(d)}")
                parts.append(f"{name}: {fmt(d)}")
                if math.isfinite(d.mean):
                    series[name].append((tpp, d.mean, d.low, d.high))
        table.append(f"| {tpp:.2f} | {b:,} | {cells[0]} | {cells[1]} | {n_done}/{n_ft} | {v.status} | "
                     + "<br>".join(parts) + " |")
    say("\n" + "\n".join(table))
    text = "\n".join(out)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    if args.figure and (series or losses):
        figure(series, losses, args.figure)
        print(f"\nfigure: {args.figure}")


def figure(series, losses, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.6, 1]})
    for k, (name, pts) in enumerate(sorted(series.items())):
        pts.sort()
        x = [p[0] * (1.03 ** (k - len(series) / 2)) for p in pts]  # spread the markers a little
        y = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name if len(name) < 70 else name[:67] + "...")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining tokens per parameter")
    ax.set_ylabel("effect, nats (positive = as the paper claims)")
    ax.set_title("claim 2 per budget: parts, consistency and main effect (intervals over seeds)")
    ax.legend(fontsize=6.5, loc="best")
    for fam, pts in sorted(losses.items()):
        pts.sort()
        bx.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=f"{fam} bases")
    bx.set_xscale("log")
    bx.set_xlabel("pretraining tokens per parameter")
    bx.set_ylabel("validation loss after the decay branch (nats)")
    bx.set_title("bases: mean over seeds (± sd)")
    bx.legend()
    ticks = sorted({round(p[0], 2) for pts in losses.values() for p in pts})
    for axis in (ax, bx):
        axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
        axis.minorticks_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    main()
