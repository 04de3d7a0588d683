"""Claims 5-7: activation sparsity, Muon throughout, memorisation (see forgetless.report.verdicts)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from forgetless.optim import describe

from .claim import Verdict, base_forgetting, group, make_verdict
from .effects import cloud, delta_view
from .statistics import NOT_MEASURED, decide

INSTRUCTION_TASKS = {"instruct", "alpaca"}
REASONING_TASKS = {"arith", "metamathqa"}
NOT_PROBED = {"head", "embed", "hidden", "other"}  # the head is trained by AdamW in every run


def _axis_is_one(optimizer: str, axis: str) -> bool | None:
    try:
        return str(getattr(describe(optimizer), axis)) == "1"
    except (KeyError, ValueError):
        return None


def claim5_sparsity(activations: list[dict], margin: float = 0.005) -> Verdict:
    paper = "Figures 4, 5: p = 1 optimizers (SignSGD, AdamW, column top-1) give sparser inputs; q = 1 sparser outputs"
    title = "Optimizers with p = 1 give sparser input activations, q = 1 sparser outputs"
    test = ("per pretraining seed: mean over module kinds (head left out) of the p = 1 (q = 1) models' "
            "input (output) sparsity minus the other models'")
    rows = [r for r in activations if r.get("kind") not in NOT_PROBED]
    decisions, details = {}, []
    for axis, side in (("p", "input"), ("q", "output")):
        effects, per_kind, ratio = [], defaultdict(list), defaultdict(list)
        for (_seed,), seed_rows in group(rows, "seed").items():
            kinds = []
            for (kind,), kind_rows in group(seed_rows, "kind").items():
                one = [r for r in kind_rows if _axis_is_one(r["optimizer"], axis)]
                rest = [r for r in kind_rows if _axis_is_one(r["optimizer"], axis) is False]
                if not one or not rest:
                    continue
                e = np.mean([r[f"{side}_sparsity"] for r in one]) - np.mean([r[f"{side}_sparsity"] for r in rest])
                kinds.append(e)
                per_kind[kind].append(e)
                key = f"{side}_l1_l2"
                if all(key in r for r in one + rest):  # lower ℓ1/ℓ2 = sparser; shown, not deciding
                    ratio[kind].append(np.mean([r[key] for r in rest]) - np.mean([r[key] for r in one]))
            if kinds:
                effects.append(float(np.mean(kinds)))
        name = f"{side} sparsity ({axis} = 1 against {axis} ≠ 1)"
        decisions[name] = decide(effects, margin)
        if not effects:
            details.append(f"{name}: needs models pretrained with {axis} = 1 and {axis} ≠ 1 at the same seed")
        for kind, values in per_kind.items():
            line = f"{side} sparsity at {kind}: {axis} = 1 minus others {np.mean(values):+.3f}"
            if ratio.get(kind):
                line += f"; ℓ1/ℓ2 others minus {axis} = 1 {np.mean(ratio[kind]):+.3f}"
            details.append(line + f" ({len(values)} seed(s))")
    if not rows:
        return make_verdict(5, title, paper, test, {"activations": decide([])}, "needs activation probes", [])
    ours = "; ".join(f"{n}: {d.mean:+.3f}" for n, d in decisions.items() if d.status != NOT_MEASURED)
    note = ("" if decisions["output sparsity (q = 1 against q ≠ 1)"].status != NOT_MEASURED else
            "the output part needs a q = 1 base (coltop1) pretrained at the same seeds")
    return make_verdict(5, title, paper, test, decisions, ours or "not measured", details, note)


def _throughout_gap(rows: list[dict]) -> tuple[float, float] | None:
    """(base gap, finetuned gap) of AdamW − Muon learning loss on one task and seed, or None.

    The base gap is at step 0; the finetuned gap is the Δ-view gap (best learning within Δ of each
    model's own base forgetting), averaged over the Δ both reach, so each model is allowed the same
    forgetting and absolute pretraining losses do not enter.
    """
    sides = {}
    for opt in ("adamw", "muon"):
        own = [r for r in rows if r["kind"] == "full" and r["base_optimizer"] == opt and r["optimizer"] == opt]
        base = [r["learning"] for r in own if r.get("step") == 0]
        if not own or not base:
            return None
        sides[opt] = (base[0], delta_view(cloud(own), base_forgetting(own)))
    both = np.isfinite(sides["adamw"][1]) & np.isfinite(sides["muon"][1])
    if not both.any():
        return None
    ft = float(np.mean(sides["adamw"][1][both] - sides["muon"][1][both]))
    return sides["adamw"][0] - sides["muon"][0], ft


def claim6_throughout(points: list[dict], margin: float = 0.01) -> Verdict:
    paper = ("Figure 6: Muon throughout is clearly better on Alpaca, close on Magicoder, slightly worse "
             "on MetaMathQA, though its bases were better on all (Table 1)")
    title = "Muon's pretraining lead survives instruction finetuning and erodes on reasoning"
    test = ("per pretraining seed: change of the AdamW − Muon learning gap from base to finetuned "
            "frontier (Δ-view), instruct minus reasoning")
    erosion, lead, details = [], [], []
    for (seed,), rows in group(points, "base_seed").items():
        gaps = {}
        for (task,), task_rows in group(rows, "task").items():
            g = _throughout_gap(task_rows)
            if g is not None:
                gaps[task] = g
                details.append(f"seed {seed}, {task}: AdamW − Muon base {g[0]:+.3f}, finetuned {g[1]:+.3f}")
        ins = [g for t, g in gaps.items() if t in INSTRUCTION_TASKS]
        rea = [g for t, g in gaps.items() if t in REASONING_TASKS]
        if ins:
            lead.append(float(np.mean([g[1] for g in ins])))
        if ins and rea:
            erosion.append(float(np.mean([g[1] - g[0] for g in ins]) - np.mean([g[1] - g[0] for g in rea])))
    decisions = {"erosion on reasoning beyond instruction": decide(erosion, margin),
                 "Muon ahead after instruction finetuning": decide(lead, margin)}
    if not lead and not erosion:
        return make_verdict(6, title, paper, test, decisions,
                            "needs AdamW-throughout and Muon-throughout finetunes on an instruction task", details)
    note = "" if erosion else "the erosion part needs a reasoning task (arith) beside the instruction task"
    ours = "; ".join(f"{n}: {d.mean:+.3f}" for n, d in decisions.items() if d.status != NOT_MEASURED)
    return make_verdict(6, title, paper, test, decisions, ours, details, note)


def _rate_margin(rows: list[dict], a: str, b: str, col: str) -> float:
    """Resolution of a difference of two exact-match rates: 1/n and the binomial error of each."""
    ns = [r.get("n_eval") for r in rows if r.get("n_eval")]
    if not ns:
        return 0.01
    n = min(ns)
    p = np.mean([r[col] for r in rows if r["optimizer"] in (a, b)])
    return max(1.0 / n, math.sqrt(max(p * (1 - p), 0.25 / n) / n))


def claim7_memorization(memorization: list[dict]) -> Verdict:
    paper = ("Table 3: corrupted exact match Muon 65.0/12.2/5.2% > AdamW 55.8/7.0/2.3% > SGD "
             "32.9/1.3/0.0%; clean Muon 88.9/44.8/25.4% < AdamW 90.1/49.8/29.7% < SGD 93.4/60.3/40.8%")
    title = "Muon memorises corrupted blocks more and clean blocks less than AdamW; SGD least"
    test = "per seed, at each optimizer's best lr: differences of exact-match rates on corrupted and clean blocks"
    by = {(r["optimizer"], r["seed"]): r for r in memorization}
    opts = {o for o, _ in by}
    parts = [("muon", "adamw", "corrupted", 1.0), ("muon", "adamw", "clean", -1.0)]
    if "sgd" in opts:
        parts.append(("adamw", "sgd", "corrupted", 1.0))
    decisions, details = {}, []
    for hi, lo, col, sign in parts:
        seeds = sorted({s for o, s in by if o == hi} & {s for o, s in by if o == lo}, key=str)
        effects = [sign * (by[(hi, s)][col] - by[(lo, s)][col]) for s in seeds]
        word = "more" if sign > 0 else "less"
        decisions[f"{hi} memorises {col} blocks {word} than {lo}"] = decide(
            effects, _rate_margin(memorization, hi, lo, col))
    for o in sorted(opts):
        rows = [r for k, r in by.items() if k[0] == o]
        extra = ""
        if all(r.get("onset") is not None for r in rows):
            extra += f", onset step {np.mean([r['onset'] for r in rows]):.0f}"
        if all(r.get("matched_corrupted") is not None for r in rows):
            extra += (f", at matched training loss clean {np.mean([r['matched_clean'] for r in rows]):.3f} "
                      f"corrupted {np.mean([r['matched_corrupted'] for r in rows]):.3f}")
        details.append(f"{o}: clean {np.mean([r['clean'] for r in rows]):.3f} corrupted "
                       f"{np.mean([r['corrupted'] for r in rows]):.3f} over {len(rows)} seed(s){extra}")
    if not {"muon", "adamw"} <= opts:
        return make_verdict(7, title, paper, test, {"memorisation": decide([])},
                            "needs memorisation runs of muon and adamw", details)
    ours = "; ".join(details)
    note = ""
    saturated = [r for r in memorization if r["optimizer"] == "adamw" and not 0.2 <= r["corrupted"] <= 0.8]
    if saturated:
        note = ("AdamW's corrupted exact match is outside 20-80% (saturated or unlearned), so the "
                "memorisation test cannot separate the optimizers at this size")
    return make_verdict(7, title, paper, test, decisions, ours, details, note)
