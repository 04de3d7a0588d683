"""Verdict logic on hand-built measurement tables whose right answer is known.

Each unit is a (base, pretraining seed) pair; three units are the fewest that can decide. The
engine's error rates over many simulated tables are in test_verdict_calibration.py.
"""

import pytest

from forgetless.report.effects import frontier_gap, path_gap
from forgetless.report.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    PARTIAL,
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


def _root_path(k, us, f0=4.0, l0=3.0):
    """A path straight in (√(F − F0), L): L = L0 − k·√(F − F0), sampled at √(F − F0) = us."""
    import numpy as np

    us = np.asarray(us, dtype=float)
    return np.column_stack([f0 + us**2, l0 - k * us])


def test_path_gap_cannot_be_biased_by_speed():
    import numpy as np

    # Both methods move along one frontier L = 3 − √(F − 4) from the base (4, 3); B is twice as
    # fast, so it has checkpoints only at every other point of A's (and its first far from the base).
    a, b = [_root_path(1.0, np.arange(9) * 0.1)], [_root_path(1.0, np.arange(9)[::2] * 0.1)]
    assert path_gap(a, b, 4.0) == pytest.approx(0.0, abs=1e-12)
    # The step envelope over checkpoints alone (the rule before issue 21) calls the sparse method
    # worse: a staircase above the curve.
    assert frontier_gap(a[0][1:], b[0][1:]) > 0.02


def test_path_gap_by_hand_and_the_window():
    import numpy as np

    # A: L = 3 − √(F − 4), B: L = 3 − 0.5 √(F − 4), both reaching F = 6.25. Over the window
    # [4, 4.5] the gap is 0.5 √(F − 4), whose mean is 0.5 · (2/3) · √0.5 = 0.2357 (the equally
    # spaced grid of 64 points is within 1% of the integral).
    us = (0.0, 0.5, 1.0, 1.5)
    a, b = [_root_path(1.0, us)], [_root_path(0.5, us)]
    assert path_gap(a, b, 4.0, window=0.5) == pytest.approx(0.5 * 2 / 3 * 0.5**0.5, rel=0.01)
    assert path_gap(a, b, 4.0, window=2.0) == pytest.approx(0.5 * 2 / 3 * 2.0**0.5, rel=0.01)
    # A checkpoint that learns without forgetting (F = 3.99 < F0) is credited from F0 on: the
    # segment from it to (4.25, 2.5) is L = 2.75 − 0.5 √(F − 4), 0.25 − 0.5 √(F − 4) better than A
    # up to F = 4.25: ∫₀^0.25 (0.25 − 0.5 √x) dx / 0.5 = 0.0417, and on the 64-point grid the
    # mean of max(0, 0.25 − 0.5 √x) over x = 0 … 0.5.
    low = [np.array([[4.0, 3.0], [3.99, 2.8], [4.25, 2.5], [5.0, 2.0], [6.25, 1.5]])]
    x = np.linspace(0.0, 0.5, 64)
    credit = np.mean(np.maximum(0.0, 0.25 - 0.5 * np.sqrt(x)))
    assert credit == pytest.approx(0.0417, abs=0.002)
    assert path_gap(low, b, 4.0) - path_gap(a, b, 4.0) == pytest.approx(credit)
    # One method never forgot measurably (less than MIN_WINDOW = 0.01 above the base): the window
    # is [F0, F0 + 0.01], who learns more at no measurable forgetting. A's path reaches 2.9 at
    # F = 4.005 (straight in √(F − 4)) and stays there; B is 3 − 0.5 √(F − 4).
    f = np.linspace(4.0, 4.01, 64)
    front_a = 3.0 - 0.1 * np.minimum(np.sqrt(f - 4.0) / np.sqrt(0.005), 1.0)
    expected = np.mean((3.0 - 0.5 * np.sqrt(f - 4.0)) - front_a)
    assert path_gap([np.array([[4.0, 3.0], [4.005, 2.9]])], b, 4.0) == pytest.approx(expected)
    # Both methods lowered the held-out loss (every checkpoint below F0): the best learning of each.
    down_a, down_b = [np.array([[4.0, 3.0], [3.95, 2.5]])], [np.array([[4.0, 3.0], [3.97, 2.7]])]
    assert path_gap(down_a, down_b, 4.0) == pytest.approx(0.2)


def _claim2_points(gap_adamw_base, gap_muon_base, extra=None):
    """Three seeds per base; the cross family's run is shifted up by `gap` (positive = same better).
    Shifts stay below 0.3 (the first step's gain), so every checkpoint learns more than the base
    and the envelope is linear in the shift."""""
    pts = []
    for seed, jitter in zip(SEEDS, (-0.05, 0.0, 0.05), strict=True):
        for base, gap in (("adamw", gap_adamw_base), ("muon", gap_muon_base)):
            other = "muon" if base == "adamw" else "adamw"
            pts += _run(base, base, "arith", 1e-4, _good(0.0), base_seed=seed)
            pts += _run(base, other, "arith", 1e-4, _good(gap + jitter), base_seed=seed)
            for opt, shift in (extra or {}).get(base, {}).items():
                pts += _run(base, opt, "arith", 1e-4, _good(shift + jitter), base_seed=seed)
    return pts


# _good(s) against _good(0) on [F0, F0 + 0.4] (both reach F0 + 0.4 < F0 + window): from the base
# to the first checkpoints (F0 + 0.1) the gap grows like s·√((F − F0)/0.1) (paths interpolated
# in √(F − F0)), then stays s: mean (s · (2/3) · 0.1 + s · 0.3) / 0.4 = 0.9167 s.
PATH_SHARE = (0.1 * 2 / 3 + 0.3) / 0.4


def test_claim2_holds_only_when_it_holds_on_every_base():
    verdict = claim2_same_optimizer(_claim2_points(0.25, 0.25))
    assert verdict.status == HOLDS, verdict.details
    assert len(verdict.part_decisions) == 2 and all(d.status == HOLDS for d in verdict.part_decisions.values())
    for d in verdict.part_decisions.values():
        assert d.n_units == 3 and d.mean == pytest.approx(PATH_SHARE * 0.25, rel=0.02)
    consistency = next(d for k, d in verdict.shown_decisions.items() if k.startswith("consistency"))
    assert consistency.status == HOLDS and consistency.mean == pytest.approx(PATH_SHARE * 0.25, rel=0.02)
    main = next(d for k, d in verdict.shown_decisions.items() if k.startswith("main effect"))
    assert main.mean == pytest.approx(0.0, abs=1e-9) and main.status == INCONCLUSIVE
    # The cross family's frontier lower on both bases: does not hold.
    assert claim2_same_optimizer(_claim2_points(-0.25, -0.25)).status == FAILS
    # Same family by family, not by name: lion on an AdamW base counts as the same family.
    lion = [dict(r, optimizer="lion") if r["base_optimizer"] == "adamw" and r["optimizer"] == "adamw" else r
            for r in _claim2_points(0.25, 0.25)]
    assert claim2_same_optimizer(lion).status == HOLDS
    # Identical frontiers: no effect.
    assert claim2_same_optimizer(_claim2_points(0.0, 0.0)).status == INCONCLUSIVE


def test_a_main_effect_of_the_finetuning_optimizer_is_not_consistency():
    # Muon finetuning better by 0.2 on every base: on AdamW bases the same family loses (−0.2),
    # on Muon bases it wins (+0.2). Pooled, the mean is 0; per base, the AdamW part is reversed.
    verdict = claim2_same_optimizer(_claim2_points(-0.2, 0.2))
    assert verdict.status == FAILS
    parts = {k.split(":")[0]: d for k, d in verdict.part_decisions.items()}
    assert parts["on adamw bases"].status == FAILS and parts["on muon bases"].status == HOLDS
    assert verdict.effect == pytest.approx(-0.2 * PATH_SHARE, rel=0.02)  # the deciding (reversed) part
    consistency = next(d for k, d in verdict.shown_decisions.items() if k.startswith("consistency"))
    assert consistency.mean == pytest.approx(0.0, abs=1e-9) and consistency.status == INCONCLUSIVE
    main = next((k, d) for k, d in verdict.shown_decisions.items() if k.startswith("main effect"))
    assert "muon finetuning better than adamw" in main[0]
    assert main[1].status == HOLDS and main[1].mean == pytest.approx(0.2 * PATH_SHARE, rel=0.02)


def test_each_cross_family_is_its_own_part():
    # On AdamW bases the same family beats SGD by 1.0 but loses to Muon by 0.2: the average over
    # cross families (+0.4) would call it a win; per cross family the Muon part is reversed.
    verdict = claim2_same_optimizer(_claim2_points(-0.2, 0.25, extra={"adamw": {"sgd": 1.0}}))
    assert verdict.status == FAILS
    names = sorted(verdict.part_decisions)
    assert any("against full sgd" in n for n in names) and any("adamw bases" in n and "full muon" in n for n in names)
    sgd = next(d for n, d in verdict.part_decisions.items() if "full sgd" in n)
    assert sgd.status == HOLDS


def test_a_base_family_not_measured_makes_the_claim_partial():
    only_adamw = [r for r in _claim2_points(0.25, 0.25) if r["base_optimizer"] == "adamw"]
    verdict = claim2_same_optimizer(only_adamw)
    assert verdict.status == PARTIAL
    assert [d.status for d in verdict.part_decisions.values()].count(NOT_MEASURED) == 1


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
    # Without a q = 1 model the output part is not measured: "partial", naming it (more in
    # tests/report/test_verdicts_more.py).
    no_q1 = [r for r in _act(0.2, 0.2) if r["optimizer"] != "coltop1"]
    verdict = claim5_sparsity(no_q1)
    assert verdict.status == "partial" and verdict.missing == [n for n in verdict.parts if "output" in n]
    assert "coltop1" in verdict.scale_note
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


def test_the_verdict_table_shows_each_base_and_the_shown_effects(tmp_path):
    from forgetless.report.document import verdict_lines, verdict_sections
    from forgetless.report.render import write_report

    verdict = claim2_same_optimizer(_claim2_points(-0.2, 0.2))
    lines = verdict_lines([verdict])
    assert lines[0][:3] == ("2", verdict.title, FAILS)
    adamw = next(line for line in lines if "on adamw bases" in line[1])
    d = next(d for k, d in verdict.part_decisions.items() if "on adamw bases" in k)
    assert adamw[2] == FAILS and adamw[3] == f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
    assert adamw[4] == "3" and adamw[5] == "required part"
    roles = {line[1].strip().split(" ")[0]: line[5] for line in lines[1:]}
    assert roles["consistency"] == roles["main"] == "shown, not required"
    md, _ = write_report("t", verdict_sections([verdict]), tmp_path)
    assert "on muon bases: same family against full adamw | holds" in md.read_text()
