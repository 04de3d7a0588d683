"""One verdict per claim of the paper, computed from measurement tables.

Every claim is decided by the same rule (forgetless.report.statistics): its effect is computed once
per unit of evidence, a (base model, pretraining seed) pair, signed so that positive is what the
paper claims, and the units are combined by a two-sided t-test at a named level. "holds" and
"does not hold" are symmetric; fewer than three units, or an interval that contains 0, give
"inconclusive" with the direction seen; "not measured" says what the tables lack. The effect each
claim tests, as the paper states it:

1. Muon pretrains lower: AdamW − Muon validation loss per seed (task losses of the bases shown).
2. Same family, best frontier, on every base: per base family and per cross family, the gap
   between the same-family and the cross-family frontier (forgetless.report.effects.path_gap),
   mean over tasks per unit; one required part per (base family, cross family), combined by
   statistics.every_part; consistency and main effects shown (forgetless.report.per_base).
3. Full beats LoRA: the same-family full-finetuning frontier against LoRA's (all ranks), one part
   per base family LoRA was run on. LoRA's rank order and the best-lr view (paper Remark 1) are
   shown as findings, not conditions.
4. Muon's weights have higher stable rank: Muon − AdamW mean stable rank of hidden matrices.
5. p = 1 gives sparser inputs, q = 1 sparser outputs: one axis of the norm varied at a time,
   AdamW against row top-1 at q = ∞ (inputs), column top-1 against AdamW at p = 1 (outputs); per
   module kind (output head left out), paired per seed; the ℓ1/ℓ2 ratio shown beside it.
6. Muon's pretraining lead survives instruction finetuning and erodes on reasoning: the change of
   the AdamW − Muon gap from base to finetuned frontier, instruct minus reasoning (required); Muon
   ahead after instruction finetuning is shown, not required (it restates claim 1).
7. Muon memorises corrupted blocks more and clean blocks less than AdamW; SGD memorises least:
   each pair at the training loss both reach, read off the training curves (row key `curve`).
Why these statistics: forgetless.report.verdicts_more.

Tables, as the report builder reads them from the results store:
- pretrain rows: optimizer, seed, val_loss, task_losses {task: loss of the base model}
- point rows: forgetless.report.rows.Row (base_optimizer, base_seed, task, method, finetuning
  "full" | "lora", optimizer, rank, lr, seed, step, forgetting, learning, other metrics by name);
  dicts with those keys (`kind` for finetuning) are taken too
- spectrum rows: optimizer, seed, stable_rank (mean over the model's hidden matrices)
- activation rows: optimizer, seed, kind (module kind), input_sparsity, output_sparsity, and
  optionally input_l1_l2, output_l1_l2
- memorization rows: optimizer, seed, clean (exact match), corrupted (exact match), and optionally
  n_eval, onset (first step with corrupted exact match > 0), matched_clean, matched_corrupted
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from forgetless.analysis.pareto import dominated_share
from forgetless.metrics import DELTAS, X_DEFAULT, metric
from forgetless.optim import same_family

from .claim import Verdict, base_forgetting, group, make_verdict, parts_line
from .effects import FORGETTING_WINDOW, cloud, delta_view, frontier_effect
from .per_base import REQUIRED_BASES, PerBase, decide_per_base, family
from .rows import PretrainRow, Row, SpectrumRow, as_rows
from .statistics import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, PARTIAL, decide
from .verdicts_more import (
    INSTRUCTION_TASKS,
    REASONING_TASKS,
    claim5_sparsity,
    claim6_throughout,
    claim7_memorization,
)

__all__ = ["INSTRUCTION_TASKS", "REASONING_TASKS", "FAILS", "HOLDS", "INCONCLUSIVE", "NOT_MEASURED", "PARTIAL", "Verdict", "all_verdicts", "claim1_pretraining",
           "claim2_same_optimizer", "claim3_lora", "claim4_stable_rank", "claim5_sparsity",
           "claim6_throughout", "claim7_memorization"]


def claim1_pretraining(pretrain: list, margin: float = 0.01) -> Verdict:
    paper = "Table 1: validation loss AdamW 3.010 vs Muon 2.974; Alpaca/MetaMathQA/Magicoder lower for Muon"
    title = "Muon pretrains to lower losses than AdamW"
    test = "AdamW − Muon validation loss, paired per pretraining seed"
    pretrain = PretrainRow.many(pretrain)
    adam = {r.seed: r for r in pretrain if r.optimizer == "adamw"}
    muon = {r.seed: r for r in pretrain if r.optimizer == "muon"}
    seeds = sorted(set(adam) & set(muon), key=str)
    if not seeds:
        return make_verdict(1, title, paper, test, {"validation loss": decide([])},
                        "needs pretraining runs with both adamw and muon", [])
    d = decide([adam[s].val_loss - muon[s].val_loss for s in seeds], margin)
    ours = (f"val loss AdamW {np.mean([adam[s].val_loss for s in seeds]):.3f} vs Muon "
            f"{np.mean([muon[s].val_loss for s in seeds]):.3f} over {len(seeds)} seed(s)")
    details = []
    for task in sorted({t for r in pretrain for t in (r.task_losses or {})}):
        diffs = [adam[s].task_losses[task] - muon[s].task_losses[task] for s in seeds
                 if task in (adam[s].task_losses or {}) and task in (muon[s].task_losses or {})]
        details.append(f"(reported, not required) {task} loss of the bases, AdamW − Muon: "
                       + decide(diffs, margin).text())
    return make_verdict(1, title, paper, test, {"validation loss": d}, ours, details)


# Margin of the frontier gap (nats), from two measured quantities (benchmarks/verdict_calibration.py,
# docs/BENCHMARKS.md, docs/report.md):
# - the null bias of the per-unit path gap, which more units cannot average away: with dense
#   early evaluation at most 0.008 nats over every simulated null (3x speed either way round,
#   crossing frontiers both ways; 0.014 with evaluation every N steps, on crossing frontiers);
# - the resolution of the paired evaluation: every method is evaluated on the same held-out
#   sample, so what a gap between two models is uncertain by is the standard error of a paired
#   difference of their losses. Measured on a real nano store (benchmarks/paired_eval_noise.py):
#   up to 0.010 nats on a 4096-token forgetting sample and 0.014 on 16 task records, for models
#   0.11-0.15 nats of forgetting apart (a single loss's own error is 0.023-0.037: unpaired, the
#   metric could not resolve these gaps at all).
# Margin = bias bound + resolution = 0.008 + 0.010 to 0.014 ≈ 0.02: with it, no null decided in
# more than 4% of simulated studies at 3, 6 or 12 units per base, and the rate fell with more units.
FRONTIER_MARGIN = 0.02


def _cross_groups(rows: list[Row], base: str) -> dict[str, list[Row]]:
    """Full finetunes of each family other than the base's, one group per family."""
    fams: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.finetuning == "full" and not same_family(r.optimizer, base):
            fams[family(r.optimizer)].append(r)
    return {"full " + "/".join(sorted({r.optimizer for r in v})): v for v in fams.values()}


def _delta_lines(points: list[Row], same, other, x: str = X_DEFAULT) -> list[str]:
    """The Δ-view beside the frontier test (shown, never deciding): cross − same best learning."""
    gaps = defaultdict(list)
    for (base, _seed, _task), rows in group(points, "base_optimizer", "base_seed", "task").items():
        f0 = base_forgetting(rows, x)
        a = delta_view(cloud([r for r in rows if same(r, base)], x), f0)
        for b_rows in other(rows, base).values():
            gaps[base].append(delta_view(cloud(b_rows, x), f0) - a)
    lines = []
    for base, g in gaps.items():
        g = np.array(g)
        m = [float(np.mean(c[np.isfinite(c)])) if np.isfinite(c).any() else float("nan") for c in g.T]
        cells = ", ".join(f"Δ={d:g}: {v:+.3f}" for d, v in zip(DELTAS, m, strict=True))
        lines.append(f"(Δ-view, shown, not deciding) base {base}: other − same best learning loss "
                     f"within Δ of the base's {_word(x)} (positive = same family learns more): {cells}")
    return lines


def _per_base_verdict(claim: int, title: str, paper: str, test: str, pb: PerBase, ours_empty: str,
                      details: list[str]) -> Verdict:
    """A Verdict whose status is `every_part` of the per-base parts, effect that of the deciding part."""
    measured = any(d.status != NOT_MEASURED for d in pb.parts.values())
    if not measured:
        unused = [line for line in pb.details if "not evidence" in line]
        return make_verdict(claim, title, paper, test, pb.parts or {"frontier": decide([])},
                            f"no unit is evidence: {unused[0]}" if unused else ours_empty, details)
    ours = parts_line(pb.parts, pb.shown)
    v = make_verdict(claim, title, paper, test, pb.parts, ours, details, shown=pb.shown)
    v.status = pb.status  # every part must hold; one reversed part is enough against (not `combine`)
    head = pb.headline()
    v.effect, v.low, v.high, v.n_units, v.level = head.mean, head.low, head.high, head.n_units, head.level
    return v


def _word(x: str) -> str:
    """The forgetting metric x in a sentence: 'forgetting', 'KL(base ‖ model)'."""
    return metric(x).phrase


def _same(r: Row, base: str) -> bool:
    return r.finetuning == "full" and same_family(r.optimizer, base)


def claim2_same_optimizer(points: list, margin: float = FRONTIER_MARGIN, x: str = X_DEFAULT) -> Verdict:
    """Claim 2 on the forgetting metric x (forgetless.metrics): `forgetting` decides the report's
    verdict; another (kl_to_base) gives the same test on a second measure of forgetting."""
    paper = "Figure 2: each base's own optimizer has the best frontier on Alpaca, MetaMathQA, Magicoder"
    title = "Full finetuning with the pretraining optimizer's family has the best frontier, on every base"
    word = _word(x)
    test = (f"per base family and cross family, per (base, seed): how much more the same-family "
            f"frontier learns at matched {word} (nats; envelopes over interpolated run paths, "
            f"{word} window [F0, F0 + {FORGETTING_WINDOW:g}]), mean over tasks; holds when every "
            f"part holds, does not hold when any part is reversed")
    full = [r for r in as_rows(points) if r.finetuning == "full"]
    if x != X_DEFAULT:  # points measured before the metric existed carry none: left out
        full = [r for r in full if np.isfinite(r.value(x))]
    pb = decide_per_base(full, _same, _cross_groups, margin, "same family", REQUIRED_BASES, x=x)
    return _per_base_verdict(2, title, paper, test, pb,
                             "needs full finetunes with two optimizer families on a base",
                             _delta_lines(full, _same, _cross_groups, x) + pb.details)


def claim3_lora(points: list, margin: float = FRONTIER_MARGIN) -> Verdict:
    paper = ("Figure 3: for every LoRA checkpoint some same-optimizer full-finetuning checkpoint is "
             "better; larger ranks do better; Remark 1 / Fig. 8: at the best lr LoRA forgets less")
    title = "Same-optimizer full finetuning dominates LoRA, on every base LoRA was run on"
    test = (f"per base family, per (base, seed): how much more the same-family full-finetuning "
            f"frontier learns than LoRA's at matched forgetting (nats; path envelopes, forgetting "
            f"window [F0, F0 + {FORGETTING_WINDOW:g}]), mean over tasks")
    points = as_rows(points)
    lora_units = {(r.base_optimizer, r.base_seed) for r in points if r.finetuning == "lora"}
    rows = [r for r in points if (r.base_optimizer, r.base_seed) in lora_units]

    def lora(task_rows, base):
        return {"LoRA": [r for r in task_rows if r.finetuning == "lora"]}

    pb = decide_per_base(rows, _same, lora, margin, "same-family full")
    findings = []
    for (base, task), panel in group(rows, "base_optimizer", "task").items():
        full, lo = cloud([r for r in panel if _same(r, base)]), cloud([r for r in panel if r.finetuning == "lora"])
        findings.append(f"(finding) base {base}, {task}: {dominated_share(full, lo):.2f} of all "
                        f"{len(lo)} LoRA points dominated by full finetuning")
        ranks = sorted({r.rank for r in panel if r.finetuning == "lora"})
        if len(ranks) >= 2:
            hi_r = cloud([r for r in panel if r.finetuning == "lora" and r.rank == ranks[-1]])
            lo_r = cloud([r for r in panel if r.finetuning == "lora" and r.rank == ranks[0]])
            e = frontier_effect(hi_r, lo_r)[0]
            findings.append(f"(finding) base {base}, {task}: rank {ranks[-1]} against rank {ranks[0]} "
                            f"frontier gap {e:+.3f} nats (positive = larger rank better)")
        fb, lb = _best_lr(panel, _same, base), _best_lr(panel, lambda r, b: r.finetuning == "lora", base)
        if fb and lb:
            findings.append(
                f"(finding) base {base}, {task}, each method at its best lr: LoRA (lr {lb.lr:g}) "
                f"learning {lb.learning:.3f} forgetting {lb.forgetting:.3f}; full (lr {fb.lr:g}) "
                f"learning {fb.learning:.3f} forgetting {fb.forgetting:.3f}")
    return _per_base_verdict(3, title, paper, test, pb,
                             "needs LoRA and same-family full finetunes on one base", findings + pb.details)


def _best_lr(rows: list[Row], pick, base) -> Row | None:
    """The best-learning point of a method (paper Remark 1: each method at its best lr)."""
    own = [r for r in rows if pick(r, base) and r.step != 0 and np.isfinite(r.learning)]
    return min(own, key=lambda r: r.learning) if own else None


def claim4_stable_rank(spectra: list, rel_margin: float = 0.05) -> Verdict:
    paper = "Table 2: Muon-pretrained weights have higher stable rank and singular-value density"
    title = "Muon-pretrained weights have higher stable rank than AdamW-pretrained"
    test = "Muon − AdamW mean stable rank of the hidden matrices, paired per pretraining seed"
    by = {(r.optimizer, r.seed): r.stable_rank for r in SpectrumRow.many(spectra)}
    seeds = sorted({s for (o, s) in by if o == "adamw"} & {s for (o, s) in by if o == "muon"}, key=str)
    if not seeds:
        return make_verdict(4, title, paper, test, {"stable rank": decide([])},
                        "needs spectra of adamw and muon bases", [])
    adam = float(np.mean([by[("adamw", s)] for s in seeds]))
    muon = float(np.mean([by[("muon", s)] for s in seeds]))
    d = decide([by[("muon", s)] - by[("adamw", s)] for s in seeds], rel_margin * abs(adam))
    ours = f"mean stable rank AdamW {adam:.1f} vs Muon {muon:.1f} over {len(seeds)} seed(s)"
    return make_verdict(4, title, paper, test, {"stable rank": d}, ours, [])



def all_verdicts(tables: dict[str, list]) -> list[Verdict]:
    points = as_rows(tables.get("points", []))
    return [
        claim1_pretraining(tables.get("pretrain", [])),
        claim2_same_optimizer(points),
        claim3_lora(points),
        claim4_stable_rank(tables.get("spectra", [])),
        claim5_sparsity(tables.get("activations", [])),
        claim6_throughout(points),
        claim7_memorization(tables.get("memorization", [])),
    ]

