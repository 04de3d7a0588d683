"""Verdict logic on synthetic measurement tables built so that each claim holds, fails or ties."""

import pytest

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
    decide,
)


def test_decide_by_hand():
    assert decide([0.10, 0.12], margin=0.02)[0] == HOLDS  # mean 0.11 > spread 0.02
    assert decide([-0.10, -0.12], margin=0.02)[0] == FAILS
    assert decide([0.3, -0.1], margin=0.02)[0] == INCONCLUSIVE  # spread 0.4 > mean 0.1
    assert decide([0.01], margin=0.02)[0] == INCONCLUSIVE  # one seed: the margin is the noise
    assert decide([], margin=0.02)[0] == NOT_MEASURED
    status, mean, noise = decide([0.3, -0.1], margin=0.02)
    assert mean == pytest.approx(0.1) and noise == pytest.approx(0.4)


def _pre(opt, seed, val, arith):
    return {"optimizer": opt, "seed": seed, "val_loss": val, "task_losses": {"arith": arith}}


def test_claim1_holds_fails_inconclusive():
    holds = [_pre("adamw", 0, 4.13, 3.0), _pre("muon", 0, 3.79, 2.8),
             _pre("adamw", 1, 4.17, 3.1), _pre("muon", 1, 3.79, 2.9)]
    assert claim1_pretraining(holds).status == HOLDS
    fails = [_pre("adamw", 0, 3.7, 2.5), _pre("muon", 0, 4.0, 2.9)]
    assert claim1_pretraining(fails).status == FAILS
    # The seeds disagree by more than the mean effect: inconclusive.
    noisy = [_pre("adamw", 0, 4.0, 3.0), _pre("muon", 0, 3.7, 2.7),
             _pre("adamw", 1, 3.8, 2.7), _pre("muon", 1, 4.0, 3.0)]
    assert claim1_pretraining(noisy).status == INCONCLUSIVE
    assert claim1_pretraining([_pre("adamw", 0, 4.0, 3.0)]).status == NOT_MEASURED


def _run(base, opt, task, lr, pts, kind="full", rank=None, base_seed=0):
    return [{"base_optimizer": base, "base_seed": base_seed, "task": task, "method": f"{kind}-{opt}",
             "kind": kind, "optimizer": opt, "rank": rank, "lr": lr, "seed": 0, "step": i,
             "forgetting": f, "learning": y} for i, (f, y) in enumerate(pts)]


def _good(shift):  # a run's trajectory: learning falls, forgetting rises; shift moves it up-right
    return [(4.0 + 0.1 * i + shift, 3.0 - 0.3 * i + shift) for i in range(5)]


def test_claim2_same_optimizer_dominates():
    pts = []
    for base in ("adamw", "muon"):
        for task in ("arith", "instruct"):
            pts += _run(base, base, task, 1e-4, _good(0.0))
            pts += _run(base, "muon" if base == "adamw" else "adamw", task, 1e-4, _good(0.2))
    verdict = claim2_same_optimizer(pts)
    assert verdict.status == HOLDS, verdict.details
    # The reverse: the other optimizer's points are lower-left everywhere.
    rev = []
    for base in ("adamw", "muon"):
        rev += _run(base, base, "arith", 1e-4, _good(0.2))
        rev += _run(base, "muon" if base == "adamw" else "adamw", "arith", 1e-4, _good(0.0))
    assert claim2_same_optimizer(rev).status == FAILS
    # Identical clouds: neither dominates the other.
    tie = _run("adamw", "adamw", "arith", 1e-4, _good(0.0)) + _run("adamw", "muon", "arith", 1e-4, _good(0.0))
    assert claim2_same_optimizer(tie).status == INCONCLUSIVE


def test_claim3_full_beats_lora_and_ranks_order():
    pts = _run("adamw", "adamw", "arith", 3e-4, _good(0.0))
    pts += _run("adamw", "adamw", "arith", 1e-3, _good(0.3), kind="lora", rank=8)
    pts += _run("adamw", "adamw", "arith", 1e-3, _good(0.15), kind="lora", rank=32)
    verdict = claim3_lora(pts)
    assert "dominance holds" in verdict.ours and "ranks holds" in verdict.ours
    # Best-lr view: full's best point learns more (2.0) than LoRA's best (2.15), and LoRA's
    # best forgets more here (4.55 > 4.4): the Biderman view fails, so the claim as a whole fails.
    assert "best-lr view does not hold" in verdict.ours
    assert verdict.status == FAILS
    assert claim3_lora(_run("adamw", "adamw", "arith", 3e-4, _good(0.0))).status == NOT_MEASURED


def test_claim3_best_lr_view_holds_when_lora_learns_and_forgets_less():
    full = _run("adamw", "adamw", "arith", 3e-4, [(4.0, 3.0), (4.5, 1.0)])
    # LoRA stops at learning 1.5 (learns less) but forgetting 4.2 (forgets less); its ranks order.
    lora = _run("adamw", "adamw", "arith", 1e-3, [(4.0, 3.0), (4.3, 1.6)], kind="lora", rank=8)
    lora += _run("adamw", "adamw", "arith", 1e-3, [(4.0, 3.0), (4.2, 1.5)], kind="lora", rank=32)
    verdict = claim3_lora(full + lora)
    assert "best-lr view holds" in verdict.ours, verdict.details


def test_claim4_stable_rank():
    rows = [{"optimizer": "adamw", "seed": s, "stable_rank": 10.0 + s} for s in (0, 1)]
    rows += [{"optimizer": "muon", "seed": s, "stable_rank": 34.0 - s} for s in (0, 1)]
    assert claim4_stable_rank(rows).status == HOLDS
    close = [{"optimizer": "adamw", "seed": 0, "stable_rank": 10.0},
             {"optimizer": "muon", "seed": 0, "stable_rank": 10.2}]
    assert claim4_stable_rank(close).status == INCONCLUSIVE  # 2% < the 5% relative margin


def test_claim5_sparsity_by_norm():
    rows = []
    for opt, inp, out in (("adamw", 0.30, 0.10), ("signsgd", 0.35, 0.12), ("muon", 0.10, 0.10),
                          ("coltop1", 0.40, 0.30), ("rowtop1", 0.12, 0.08)):
        for kind in ("o", "down"):
            rows.append({"optimizer": opt, "seed": 0, "kind": kind, "input_sparsity": inp,
                         "output_sparsity": out})
    verdict = claim5_sparsity(rows)
    assert verdict.status == HOLDS, verdict.details
    only_two = [r for r in rows if r["optimizer"] in ("adamw", "muon")]
    # No q = 1 optimizer among AdamW and Muon: the output part is not measured, so the whole
    # claim cannot hold, but the input part is reported.
    verdict = claim5_sparsity(only_two)
    assert verdict.status == INCONCLUSIVE
    assert any("q = 1" in d for d in verdict.details)


def test_claim6_throughout():
    pts = _run("muon", "muon", "instruct", 1e-4, _good(0.0)) + _run("adamw", "adamw", "instruct", 1e-4, _good(0.3))
    pts += _run("muon", "muon", "arith", 1e-4, _good(0.3)) + _run("adamw", "adamw", "arith", 1e-4, _good(0.0))
    assert claim6_throughout(pts).status == HOLDS
    pts = _run("muon", "muon", "instruct", 1e-4, _good(0.3)) + _run("adamw", "adamw", "instruct", 1e-4, _good(0.0))
    pts += _run("muon", "muon", "arith", 1e-4, _good(0.3)) + _run("adamw", "adamw", "arith", 1e-4, _good(0.0))
    assert claim6_throughout(pts).status == FAILS


def test_claim7_memorization_order():
    paper_like = [{"optimizer": "muon", "seed": 0, "clean": 0.889, "corrupted": 0.650},
                  {"optimizer": "adamw", "seed": 0, "clean": 0.901, "corrupted": 0.558},
                  {"optimizer": "sgd", "seed": 0, "clean": 0.934, "corrupted": 0.329}]
    assert claim7_memorization(paper_like).status == HOLDS
    flipped = [dict(r, corrupted=1 - r["corrupted"]) for r in paper_like]
    assert claim7_memorization(flipped).status == FAILS


def test_all_verdicts_on_empty_tables_say_not_measured():
    verdicts = all_verdicts({})
    assert [v.claim for v in verdicts] == list(range(1, 8))
    assert all(v.status == NOT_MEASURED for v in verdicts)
    assert all(v.paper and v.title for v in verdicts)  # the paper's figure is always set beside ours
