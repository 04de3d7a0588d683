"""Verdict logic on hand-built measurement tables whose right answer is known.

Each unit is a (base, pretraining seed) pair; three units are the fewest that can decide. The
engine's error rates over many simulated tables are in test_verdict_calibration.py.
"""

import pytest

from forgetless.report.effects import frontier_gap
from forgetless.report.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    all_verdicts,
    claim1_pretraining,
    claim2_same_optimizer,
    claim3_lora,
    claim4_stable_rank,
    claim5_sparsity,
    claim6_throughout,
    claim7_memorization,
)

SEEDS = (0, 1, 2)


def _pre(opt, seed, val, arith):
    return {"optimizer": opt, "seed": seed, "val_loss": val, "task_losses": {"arith": arith}}


def test_claim1_holds_fails_inconclusive():
    holds = [r for s, (a, m) in enumerate([(4.13, 3.79), (4.17, 3.79), (4.10, 3.80)])
             for r in (_pre("adamw", s, a, 3.0), _pre("muon", s, m, 2.8))]
    assert claim1_pretraining(holds).status == HOLDS
    fails = [dict(r, val_loss=8 - r["val_loss"]) for r in holds]
    assert claim1_pretraining(fails).status == FAILS
    # Seeds disagree in sign: inconclusive.
    noisy = [_pre("adamw", 0, 4.0, 3.0), _pre("muon", 0, 3.7, 2.7), _pre("adamw", 1, 3.8, 2.7),
             _pre("muon", 1, 4.0, 3.0), _pre("adamw", 2, 3.9, 2.7), _pre("muon", 2, 3.9, 3.0)]
    assert claim1_pretraining(noisy).status == INCONCLUSIVE
    # One seed, however large the gap: inconclusive, with the direction and the seeds needed.
    one = claim1_pretraining(holds[:2])
    assert one.status == INCONCLUSIVE and "as claimed" in one.details[0] and "3 units" in one.details[0]
    assert claim1_pretraining([_pre("adamw", 0, 4.0, 3.0)]).status == NOT_MEASURED


def _run(base, opt, task, lr, pts, kind="full", rank=None, base_seed=0):
    return [{"base_optimizer": base, "base_seed": base_seed, "task": task, "method": f"{kind}-{opt}",
             "kind": kind, "optimizer": opt, "rank": rank, "lr": lr, "seed": 0, "step": i,
             "forgetting": f, "learning": y} for i, (f, y) in enumerate(pts)]


def _good(shift):  # a run's trajectory: learning falls, forgetting rises; shift moves it up
    return [(4.0 + 0.1 * i, 3.0 - 0.3 * i + (shift if i else 0.0)) for i in range(5)]


def test_frontier_gap_by_hand():
    import numpy as np

    a = np.array([[1.0, 2.0], [2.0, 1.0]])
    b = np.array([[1.0, 2.5], [2.0, 1.5]])
    # front_B − front_A is 0.5 at every forgetting level of [1, 2].
    assert frontier_gap(a, b) == pytest.approx(0.5)
    assert frontier_gap(b, a) == pytest.approx(-0.5)
    # B reaches forgetting 3 as well, A does not: the common range stays [1, 2].
    assert frontier_gap(a, np.vstack([b, [[3.0, 0.0]]])) == pytest.approx(0.5)


def test_claim2_same_family_frontier_is_decided_over_units():
    pts = []
    for seed, shift in zip(SEEDS, (0.2, 0.25, 0.3), strict=True):
        for base in ("adamw", "muon"):
            other = "muon" if base == "adamw" else "adamw"
            pts += _run(base, base, "arith", 1e-4, _good(0.0), base_seed=seed)
            pts += _run(base, other, "arith", 1e-4, _good(shift), base_seed=seed)
    verdict = claim2_same_optimizer(pts)
    assert verdict.status == HOLDS, verdict.details
    assert verdict.n_units == 6 and verdict.effect == pytest.approx(0.25)
    # The cross family's frontier lower everywhere: does not hold.
    rev = [dict(r, optimizer=("muon" if r["optimizer"] == "adamw" else "adamw")) for r in pts]
    assert claim2_same_optimizer(rev).status == FAILS
    # Same family by family, not by name: signsgd on an AdamW base counts as the same family.
    lion = [dict(r, optimizer="lion") if r["base_optimizer"] == "adamw" and r["optimizer"] == "adamw" else r
            for r in pts]
    assert claim2_same_optimizer(lion).status == HOLDS
    # Identical frontiers: no effect.
    tie = [dict(r, learning=r["learning"] - (0.0 if r["optimizer"] == r["base_optimizer"] or r["step"] == 0
                                              else {0: 0.2, 1: 0.25, 2: 0.3}[r["base_seed"]])) for r in pts]
    assert claim2_same_optimizer(tie).status == INCONCLUSIVE


def test_claim3_full_dominates_lora_whatever_the_best_lr_view():
    pts = []
    for seed in SEEDS:
        pts += _run("adamw", "adamw", "arith", 3e-4, _good(0.0), base_seed=seed)
        # LoRA learns less at every step; at its best lr it also forgets less (Remark 1): still
        # dominated, and that does not count against the claim.
        pts += _run("adamw", "adamw", "arith", 1e-3, [(4.0, 3.0), (4.05, 2.9), (4.1, 2.75), (4.2, 2.5)],
                    kind="lora", rank=8, base_seed=seed)
    verdict = claim3_lora(pts)
    assert verdict.status == HOLDS, verdict.details
    assert any("best lr" in d for d in verdict.details)
    swapped = [dict(r, kind="lora" if r["kind"] == "full" else "full") for r in pts]
    assert claim3_lora(swapped).status == FAILS
    assert claim3_lora(_run("adamw", "adamw", "arith", 3e-4, _good(0.0))).status == NOT_MEASURED


def test_claim4_stable_rank():
    rows = [{"optimizer": "adamw", "seed": s, "stable_rank": 10.0 + s} for s in SEEDS]
    rows += [{"optimizer": "muon", "seed": s, "stable_rank": 34.0 - s} for s in SEEDS]
    assert claim4_stable_rank(rows).status == HOLDS
    close = [{"optimizer": o, "seed": s, "stable_rank": v + 0.01 * s}
             for s in SEEDS for o, v in (("adamw", 10.0), ("muon", 10.2))]
    assert claim4_stable_rank(close).status == INCONCLUSIVE  # 2% < the 5% relative margin


def _act(p1_in, q1_out, seeds=SEEDS):
    rows = []
    for s in seeds:
        for opt, p1, q1 in (("adamw", 1, 0), ("muon", 0, 0), ("coltop1", 1, 1), ("rowtop1", 0, 0)):
            for kind in ("o", "down", "head"):
                rows.append({"optimizer": opt, "seed": s, "kind": kind,
                             "input_sparsity": 0.1 + p1_in * p1 + 0.001 * s,
                             "output_sparsity": 0.1 + q1_out * q1 + 0.002 * s})
    return rows


def test_claim5_sparsity_by_norm():
    assert claim5_sparsity(_act(0.2, 0.2)).status == HOLDS
    assert claim5_sparsity(_act(-0.2, -0.2)).status == FAILS
    # Without a q = 1 model the output part is not measured: it does not downgrade the input part.
    no_q1 = [r for r in _act(0.2, 0.2) if r["optimizer"] != "coltop1"]
    verdict = claim5_sparsity(no_q1)
    assert verdict.status == HOLDS and verdict.parts["output sparsity (q = 1 against q ≠ 1)"] == NOT_MEASURED
    assert "q = 1 base" in verdict.scale_note
    # The head is trained by AdamW in every run: a huge head difference changes nothing.
    rows = [dict(r, input_sparsity=0.9) if r["kind"] == "head" and r["optimizer"] == "muon" else r
            for r in _act(0.2, 0.2)]
    assert claim5_sparsity(rows).status == HOLDS


def _throughout(ft_gap_instruct, ft_gap_arith, base_gap=0.3):
    """Muon's base learns both tasks `base_gap` better; after finetuning the gaps are as given."""
    pts = []
    for seed in SEEDS:
        jitter = 0.01 * seed
        for task, ft in (("instruct", ft_gap_instruct), ("arith", ft_gap_arith)):
            adam = [(4.0, 3.0)] + [(4.0 + 0.1 * i, 3.0 - 0.3 * i) for i in range(1, 5)]
            muon = [(3.7, 3.0 - base_gap)] + [(3.7 + 0.1 * i, 3.0 - 0.3 * i - ft - jitter) for i in range(1, 5)]
            pts += _run("adamw", "adamw", task, 1e-4, adam, base_seed=seed)
            pts += _run("muon", "muon", task, 1e-4, muon, base_seed=seed)
    return pts


def test_claim6_change_of_the_gap_instruct_against_reasoning():
    # The paper: the lead survives on instruct, is gone on reasoning (a tie is consistent).
    assert claim6_throughout(_throughout(0.3, 0.0)).status == HOLDS
    # Muon falls behind on instruct and keeps its lead on reasoning: the reverse.
    assert claim6_throughout(_throughout(-0.3, 0.3)).status == FAILS
    # The lead survives both finetunes: the erosion part fails, the lead part holds: mixed.
    assert claim6_throughout(_throughout(0.3, 0.3)).status == INCONCLUSIVE


def test_claim7_memorization_order():
    paper_like = [{"optimizer": o, "seed": s, "n_eval": 1024, "clean": c + 0.005 * s, "corrupted": k - 0.005 * s}
                  for s in SEEDS for o, c, k in (("muon", 0.45, 0.65), ("adamw", 0.6, 0.5), ("sgd", 0.75, 0.35))]
    assert claim7_memorization(paper_like).status == HOLDS
    flipped = [dict(r, corrupted=1 - r["corrupted"], clean=1 - r["clean"]) for r in paper_like]
    assert claim7_memorization(flipped).status == FAILS
    # AdamW's corrupted exact match at 100%: the test saturates, and the report says so.
    saturated = [dict(r, corrupted=1.0) for r in paper_like]
    assert "saturated" in claim7_memorization(saturated).scale_note


def test_all_verdicts_on_empty_tables_say_not_measured():
    verdicts = all_verdicts({})
    assert [v.claim for v in verdicts] == list(range(1, 8))
    assert all(v.status == NOT_MEASURED for v in verdicts)
    assert all(v.paper and v.title for v in verdicts)  # the paper's figure is always set beside ours
