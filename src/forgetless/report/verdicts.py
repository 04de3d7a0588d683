"""One verdict per claim of the paper, computed from measurement tables.

Every claim compares an effect with the noise it must clear. The noise is the spread of that
effect across pretraining seeds (max − min of the per-seed effects) when there are several seeds,
and never less than a fixed margin (the `margin` of each claim) so that a single seed cannot turn a
hair's-breadth difference into a verdict. Then:

- "holds": the effect has the claimed sign and is larger than the noise;
- "does not hold": it has the opposite sign and is larger than the noise;
- "inconclusive": it is within the noise;
- "not measured": the tables lack what the claim needs (say which).

A claim with several parts holds when every part holds and fails when any part fails.

Tables are lists of plain dicts (rows), as the report builder reads them from the results store:
- pretrain rows: optimizer, seed, val_loss, task_losses {task: loss of the base model}
- point rows: base_optimizer, base_seed, task, method, kind ("full" | "lora"), optimizer, rank,
  lr, seed, step, forgetting, learning
- spectrum rows: optimizer, seed, stable_rank (mean over the model's hidden matrices)
- activation rows: optimizer, seed, kind (module kind), input_sparsity, output_sparsity
- memorization rows: optimizer, seed, clean (exact match), corrupted (exact match)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from forgetless.analysis.pareto import default_reference, dominated_share, hypervolume
from forgetless.optim import describe

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
INSTRUCTION_TASKS = {"instruct", "alpaca"}
REASONING_TASKS = {"arith", "metamathqa"}


@dataclass
class Verdict:
    claim: int
    title: str
    status: str
    ours: str  # our numbers, in one line
    paper: str  # the paper's figure or numbers to set beside ours
    details: list[str] = field(default_factory=list)


def decide(effects: list[float], margin: float) -> tuple[str, float, float]:
    """Status of an effect measured once per seed (positive = as claimed): (status, mean, noise)."""
    values = np.asarray([e for e in effects if np.isfinite(e)], dtype=float)
    if len(values) == 0:
        return NOT_MEASURED, float("nan"), float("nan")
    noise = max(margin, float(values.max() - values.min()) if len(values) > 1 else 0.0)
    mean = float(values.mean())
    if mean > noise:
        return HOLDS, mean, noise
    if mean < -noise:
        return FAILS, mean, noise
    return INCONCLUSIVE, mean, noise


def combine(statuses: list[str]) -> str:
    measured = [s for s in statuses if s != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    if FAILS in measured:
        return FAILS
    if all(s == HOLDS for s in measured) and len(measured) == len(statuses):
        return HOLDS
    return INCONCLUSIVE


def _points(rows: list[dict]) -> np.ndarray:
    return np.array([[r["forgetting"], r["learning"]] for r in rows], dtype=float).reshape(-1, 2)


def _group(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in keys)].append(row)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def _fmt(status: str, mean: float, noise: float) -> str:
    return f"{status} (effect {mean:+.3f}, noise {noise:.3f})"


def claim1_pretraining(pretrain: list[dict], margin: float = 0.02) -> Verdict:
    paper = "Table 1: validation loss AdamW 3.010 vs Muon 2.974; Alpaca/MetaMathQA/Magicoder lower for Muon"
    by_opt = _group(pretrain, "optimizer")
    if ("adamw",) not in by_opt or ("muon",) not in by_opt:
        return Verdict(1, "Muon pretrains to lower losses than AdamW", NOT_MEASURED,
                       "needs pretraining runs with both adamw and muon", paper)
    adam = {r["seed"]: r for r in by_opt[("adamw",)]}
    muon = {r["seed"]: r for r in by_opt[("muon",)]}
    seeds = sorted(set(adam) & set(muon))
    parts, details = [], []
    status, mean, noise = decide([adam[s]["val_loss"] - muon[s]["val_loss"] for s in seeds], margin)
    parts.append(status)
    ours = (f"val loss AdamW {np.mean([adam[s]['val_loss'] for s in seeds]):.3f} vs Muon "
            f"{np.mean([muon[s]['val_loss'] for s in seeds]):.3f} over {len(seeds)} seed(s)")
    details.append("validation loss: " + _fmt(status, mean, noise))
    tasks = sorted({t for r in pretrain for t in (r.get("task_losses") or {})})
    for task in tasks:
        diffs = [adam[s]["task_losses"][task] - muon[s]["task_losses"][task] for s in seeds
                 if task in (adam[s].get("task_losses") or {}) and task in (muon[s].get("task_losses") or {})]
        status, mean, noise = decide(diffs, margin)
        parts.append(status)
        details.append(f"{task} loss of the base model: " + _fmt(status, mean, noise))
    return Verdict(1, "Muon pretrains to lower losses than AdamW", combine(parts), ours, paper, details)


def _share_effects(points: list[dict], a_of, b_of, margin: float, label: str):
    """Per (base optimizer, task): effect = share of B dominated by A − share of A dominated by B."""
    statuses, details = [], []
    for (base, task), rows in _group(points, "base_optimizer", "task").items():
        effects, shares = [], []
        for (_seed,), seed_rows in _group(rows, "base_seed").items():
            a = _points([r for r in seed_rows if a_of(r, base)])
            b = _points([r for r in seed_rows if b_of(r, base)])
            if len(a) == 0 or len(b) == 0:
                continue
            ab, ba = dominated_share(a, b), dominated_share(b, a)
            effects.append(ab - ba)
            shares.append((ab, ba))
        if not effects:
            continue
        status, mean, noise = decide(effects, margin)
        statuses.append(status)
        ab, ba = np.mean(shares, axis=0)
        details.append(f"base {base}, task {task}: {label} dominates {ab:.2f} of the others' points, "
                       f"is dominated on {ba:.2f}: " + _fmt(status, mean, noise))
    return statuses, details


def claim2_same_optimizer(points: list[dict], margin: float = 0.05) -> Verdict:
    paper = "Figure 2: each base's own optimizer has the best frontier on Alpaca, MetaMathQA, Magicoder"
    full = [r for r in points if r["kind"] == "full"]
    statuses, details = _share_effects(
        full,
        lambda r, base: r["optimizer"] == base,
        lambda r, base: r["optimizer"] != base,
        margin, "same-optimizer full finetuning",
    )
    title = "Full finetuning with the pretraining optimizer has the best frontier"
    if not statuses:
        return Verdict(2, title, NOT_MEASURED, "needs full finetunes with two optimizers on a base", paper)
    ours = f"{sum(s == HOLDS for s in statuses)} of {len(statuses)} (base, task) panels hold"
    return Verdict(2, title, combine(statuses), ours, paper, details)


def claim3_lora(points: list[dict], margin: float = 0.05, hv_margin: float = 0.01) -> Verdict:
    paper = ("Figure 3: same-optimizer full finetuning dominates LoRA once lr is swept, larger ranks "
             "do better; appendix B.1: at each method's best lr, LoRA learns less and forgets less")
    title = "Same-optimizer full finetuning beats LoRA; larger ranks beat smaller"
    if not any(r["kind"] == "lora" for r in points):
        return Verdict(3, title, NOT_MEASURED, "needs LoRA finetunes", paper)
    statuses, details = _share_effects(
        points,
        lambda r, base: r["kind"] == "full" and r["optimizer"] == base,
        lambda r, base: r["kind"] == "lora",
        margin, "same-optimizer full finetuning against LoRA:",
    )
    rank_status, best_lr_status = [], []
    for (base, task), rows in _group(points, "base_optimizer", "task").items():
        lora = [r for r in rows if r["kind"] == "lora"]
        ranks = sorted({r["rank"] for r in lora})
        reference = default_reference(_points(rows))
        if len(ranks) >= 2:
            effects = []
            for (_seed,), seed_rows in _group(lora, "base_seed").items():
                hv = {k: hypervolume(_points([r for r in seed_rows if r["rank"] == k]), reference)
                      for k in (ranks[0], ranks[-1])}
                effects.append(hv[ranks[-1]] - hv[ranks[0]])
            status, mean, noise = decide(effects, hv_margin)
            rank_status.append(status)
            details.append(f"base {base}, task {task}: hypervolume rank {ranks[-1]} − rank {ranks[0]}: "
                           + _fmt(status, mean, noise))
        full = [r for r in rows if r["kind"] == "full" and r["optimizer"] == base]
        if lora and full:
            f_best, l_best = _best_lr_point(full), _best_lr_point(lora)
            learns_less = l_best["learning"] > f_best["learning"]
            forgets_less = l_best["forgetting"] < f_best["forgetting"]
            best_lr_status.append(HOLDS if learns_less and forgets_less else FAILS)
            details.append(
                f"base {base}, task {task}, best lr only: LoRA (lr {l_best['lr']:g}) learning "
                f"{l_best['learning']:.3f} forgetting {l_best['forgetting']:.3f}; full (lr "
                f"{f_best['lr']:g}) learning {f_best['learning']:.3f} forgetting {f_best['forgetting']:.3f}"
            )
    ours = (f"dominance {combine(statuses)}, ranks {combine(rank_status)}, "
            f"best-lr view {combine(best_lr_status)}")
    status = combine([combine(statuses), combine(rank_status), combine(best_lr_status)])
    return Verdict(3, title, status, ours, paper, details)


def _best_lr_point(rows: list[dict]) -> dict:
    """The best point of the learning rate that learns most (Biderman et al.'s view)."""
    return min(rows, key=lambda r: r["learning"])


def claim4_stable_rank(spectra: list[dict], rel_margin: float = 0.05) -> Verdict:
    paper = "Table 2: Muon-pretrained weights have higher stable rank and singular-value density"
    title = "Muon-pretrained weights have higher stable rank than AdamW-pretrained"
    by = {(r["optimizer"], r["seed"]): r["stable_rank"] for r in spectra}
    seeds = sorted({s for (o, s) in by if o == "adamw"} & {s for (o, s) in by if o == "muon"})
    if not seeds:
        return Verdict(4, title, NOT_MEASURED, "needs spectra of adamw and muon bases", paper)
    adam = np.mean([by[("adamw", s)] for s in seeds])
    muon = np.mean([by[("muon", s)] for s in seeds])
    status, mean, noise = decide([by[("muon", s)] - by[("adamw", s)] for s in seeds], rel_margin * adam)
    ours = f"mean stable rank AdamW {adam:.1f} vs Muon {muon:.1f} over {len(seeds)} seed(s)"
    return Verdict(4, title, status, ours, paper, ["Muon − AdamW: " + _fmt(status, mean, noise)])


def claim5_sparsity(activations: list[dict], margin: float = 0.01) -> Verdict:
    paper = "Figures 4, 5: p = 1 optimizers (SignSGD, AdamW, column top-1) give sparser inputs; q = 1 sparser outputs"
    title = "Optimizers with p = 1 give sparser input activations, q = 1 sparser outputs"
    per_model = _group(activations, "optimizer", "seed")
    means = {k: (np.mean([r["input_sparsity"] for r in v]), np.mean([r["output_sparsity"] for r in v]))
             for k, v in per_model.items()}
    parts, details = [], []
    for axis, name, col in (("p", "input", 0), ("q", "output", 1)):
        ones = [m[col] for (opt, _s), m in means.items() if str(getattr(describe(opt), axis)) == "1"]
        rest = [m[col] for (opt, _s), m in means.items() if str(getattr(describe(opt), axis)) != "1"]
        if not ones or not rest:
            parts.append(NOT_MEASURED)
            details.append(f"{name} sparsity: needs models pretrained with {axis} = 1 and {axis} ≠ 1")
            continue
        status, mean, noise = decide([np.mean(ones) - np.mean(rest)], margin)
        parts.append(status)
        details.append(f"{name} sparsity, {axis} = 1 mean {np.mean(ones):.3f} vs others "
                       f"{np.mean(rest):.3f}: " + _fmt(status, mean, noise))
    for (kind,), rows in _group(activations, "kind").items():
        cells = ", ".join(f"{r['optimizer']} {r['input_sparsity']:.3f}" for r in rows)
        details.append(f"input sparsity at {kind}: {cells}")
    if not means:
        return Verdict(5, title, NOT_MEASURED, "needs activation probes", paper)
    ours = "; ".join(d for d in details[:2])
    return Verdict(5, title, combine(parts), ours, paper, details)


def claim6_throughout(points: list[dict], margin: float = 0.05) -> Verdict:
    paper = "Figure 6: Muon throughout wins on Alpaca, roughly ties on Magicoder, loses slightly on MetaMathQA"
    title = "Muon throughout beats AdamW throughout on instruction following, not on reasoning"
    parts, details = [], []
    for task, rows in _group(points, "task").items():
        task = task[0]
        if task not in INSTRUCTION_TASKS | REASONING_TASKS:
            continue
        effects = []
        for (_seed,), seed_rows in _group(rows, "base_seed").items():
            muon = _points([r for r in seed_rows if r["kind"] == "full" and r["base_optimizer"] == "muon" and r["optimizer"] == "muon"])
            adam = _points([r for r in seed_rows if r["kind"] == "full" and r["base_optimizer"] == "adamw" and r["optimizer"] == "adamw"])
            if len(muon) and len(adam):
                effects.append(dominated_share(muon, adam) - dominated_share(adam, muon))
        status, mean, noise = decide(effects, margin)
        if task in REASONING_TASKS and status != NOT_MEASURED:
            # The claim here is that Muon's advantage disappears: holds when Muon is not ahead.
            status = FAILS if status == HOLDS else HOLDS
        parts.append(status)
        details.append(f"{task}: Muon-throughout minus AdamW-throughout dominance {mean:+.3f} "
                       f"(noise {noise:.3f}) -> claim part {status}")
    if not parts:
        return Verdict(6, title, NOT_MEASURED, "needs an instruction and a reasoning task", paper)
    has_both = any(t in INSTRUCTION_TASKS for (t,) in _group(points, "task")) and any(
        t in REASONING_TASKS for (t,) in _group(points, "task"))
    status = combine(parts) if has_both else INCONCLUSIVE
    return Verdict(6, title, status, "; ".join(details), paper, details)


def claim7_memorization(memorization: list[dict], margin: float = 0.01) -> Verdict:
    paper = ("Table 3: corrupted exact match Muon 65.0/12.2/5.2% > AdamW 55.8/7.0/2.3% > SGD "
             "32.9/1.3/0.0%; clean Muon 88.9/44.8/25.4% < AdamW 90.1/49.8/29.7% < SGD 93.4/60.3/40.8%")
    title = "Muon memorises corrupted blocks more and clean blocks less than AdamW; SGD least"
    by = {(r["optimizer"], r["seed"]): r for r in memorization}
    opts = {o for o, _ in by}
    if not {"muon", "adamw"} <= opts:
        return Verdict(7, title, NOT_MEASURED, "needs memorisation runs of muon and adamw", paper)
    order = [o for o in ("muon", "adamw", "sgd") if o in opts]
    parts, details = [], []
    for hi, lo in zip(order, order[1:], strict=False):
        seeds = sorted({s for o, s in by if o == hi} & {s for o, s in by if o == lo})
        for col, sign in (("corrupted", 1.0), ("clean", -1.0)):
            status, mean, noise = decide([sign * (by[(hi, s)][col] - by[(lo, s)][col]) for s in seeds], margin)
            parts.append(status)
            details.append(f"{col}: {hi} − {lo} = {sign * mean:+.3f} (noise {noise:.3f}) -> {status}")
    ours = ", ".join(f"{o}: clean {np.mean([by[k]['clean'] for k in by if k[0] == o]):.3f} corrupted "
                     f"{np.mean([by[k]['corrupted'] for k in by if k[0] == o]):.3f}" for o in order)
    return Verdict(7, title, combine(parts), ours, paper, details)


def all_verdicts(tables: dict[str, list[dict]]) -> list[Verdict]:
    points = tables.get("points", [])
    return [
        claim1_pretraining(tables.get("pretrain", [])),
        claim2_same_optimizer(points),
        claim3_lora(points),
        claim4_stable_rank(tables.get("spectra", [])),
        claim5_sparsity(tables.get("activations", [])),
        claim6_throughout(points),
        claim7_memorization(tables.get("memorization", [])),
    ]
