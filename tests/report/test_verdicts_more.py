"""Claims 5-7 and the "partial" status, on hand-built tables whose right answer is known.

Effects are checked against a brute-force computation written here independently of the engine
(plain loops, numpy's interpolation, scipy's t quantile), statuses against the truth the table was
built with. Issue 21 §4.
"""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit

from forgetless.report.claim import make_verdict
from forgetless.report.statistics import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, PARTIAL, decide
from forgetless.report.tables import memorization_rows
from forgetless.report.verdicts_more import claim5_sparsity, claim6_throughout, claim7_memorization

SEEDS = (0, 1, 2)
KINDS = ("q", "o", "gate", "down", "head")
INPUT = "input sparsity, p = 1 against p ≠ 1 at q = ∞ (AdamW against row top-1)"
OUTPUT = "output sparsity, q = 1 against q ≠ 1 at p = 1 (column top-1 against AdamW)"


def _t_interval(effects):
    e = np.asarray(effects, dtype=float)
    half = stats.t.ppf(0.975, len(e) - 1) * e.std(ddof=1) / math.sqrt(len(e))
    return e.mean(), e.mean() - half, e.mean() + half


# ----- "partial" -------------------------------------------------------------------------------

def test_partial_names_the_missing_part_and_only_replaces_holds():
    held, missing = decide([0.2, 0.3, 0.25]), decide([])
    v = make_verdict(9, "t", "p", "x", {"a": held, "b": missing}, "ours", [])
    assert v.status == PARTIAL and v.missing == ["b"] and v.scale_note.startswith("not measured: b")
    assert (v.effect, v.n_units) == (pytest.approx(0.25), 3)  # the measured part's figures
    # A reversed part stays "does not hold": the missing part cannot rescue it.
    v = make_verdict(9, "t", "p", "x", {"a": decide([-0.2, -0.3, -0.25]), "b": missing}, "o", [])
    assert v.status == FAILS and "not measured: b" in v.scale_note
    v = make_verdict(9, "t", "p", "x", {"a": decide([0.2, -0.3, 0.25]), "b": missing}, "o", [])
    assert v.status == INCONCLUSIVE and v.missing == ["b"]
    # Nothing measured: not measured, not partial. Every part measured: no note.
    assert make_verdict(9, "t", "p", "x", {"a": missing, "b": missing}, "o", []).status == NOT_MEASURED
    v = make_verdict(9, "t", "p", "x", {"a": held, "b": held}, "o", [], "a note")
    assert v.status == HOLDS and v.missing == [] and v.scale_note == "a note"


def test_shown_parts_are_listed_and_never_combined():
    details = []
    v = make_verdict(9, "t", "p", "x", {"req": decide([0.2, 0.3, 0.25])}, "o", details,
                     shown={"extra": decide([-0.2, -0.3, -0.25])})
    assert v.status == HOLDS and v.parts == {"req": HOLDS} and v.shown == {"extra": FAILS}
    assert details[0].startswith("req: holds") and details[1].startswith("(shown, not required) extra: does not hold")


# ----- claim 5 -------------------------------------------------------------------------------

def _activations(rng, opts=("adamw", "rowtop1", "coltop1", "muon", "sgd")):
    """Random sparsities per (optimizer, seed, kind); the truth is whatever the draws say."""
    return [{"optimizer": o, "seed": s, "kind": k, "input_sparsity": rng.uniform(0, 1),
             "output_sparsity": rng.uniform(0, 1)} for o in opts for s in SEEDS for k in KINDS]


def _brute_contrast(rows, side, one, other):
    """Per seed: mean over probed kinds (head left out) of one's sparsity minus other's."""
    effects = []
    for s in SEEDS:
        diffs = []
        for k in KINDS:
            if k == "head":
                continue
            a = [r[f"{side}_sparsity"] for r in rows if (r["optimizer"], r["seed"], r["kind"]) == (one, s, k)]
            b = [r[f"{side}_sparsity"] for r in rows if (r["optimizer"], r["seed"], r["kind"]) == (other, s, k)]
            diffs.append(a[0] - b[0])
        effects.append(sum(diffs) / len(diffs))
    return effects


def test_claim5_each_contrast_varies_one_axis_only():
    rng = np.random.default_rng(5)
    rows = _activations(rng)
    v = claim5_sparsity(rows)
    # Input part: AdamW against row top-1 only (column top-1 has q = 1, Muon and SGD differ in q).
    mean, low, high = _t_interval(_brute_contrast(rows, "input", "adamw", "rowtop1"))
    assert (v.effect, v.low, v.high) == (pytest.approx(mean), pytest.approx(low), pytest.approx(high))
    # Output part: column top-1 against AdamW only (row top-1 has p = ∞). Read off once the
    # input part is removed (its bases absent), then it is the first measured part.
    no_row = claim5_sparsity([r for r in rows if r["optimizer"] != "rowtop1"])
    mean, low, high = _t_interval(_brute_contrast(rows, "output", "coltop1", "adamw"))
    assert (no_row.effect, no_row.low, no_row.high) == (pytest.approx(mean), pytest.approx(low), pytest.approx(high))


def _fixed(adamw_in, rowtop1_in, coltop1_out, adamw_out=0.3, coltop1_in=0.9, rowtop1_out=0.9):
    """Sparsities by optimizer with a small per-seed jitter; muon and sgd at extremes that must
    not matter."""
    values = {"adamw": (adamw_in, adamw_out), "rowtop1": (rowtop1_in, rowtop1_out),
              "coltop1": (coltop1_in, coltop1_out), "muon": (0.0, 0.0), "sgd": (1.0, 1.0)}
    return [{"optimizer": o, "seed": s, "kind": k, "input_sparsity": i + 0.003 * s,
             "output_sparsity": out + 0.002 * s * (o == "coltop1")}
            for o, (i, out) in values.items() for s in SEEDS for k in KINDS]


def test_claim5_statuses_and_missing_bases():
    assert claim5_sparsity(_fixed(0.4, 0.2, 0.5)).status == HOLDS
    assert claim5_sparsity(_fixed(0.2, 0.4, 0.1)).status == FAILS
    # Column top-1's sparse inputs (0.9) must not make the input part hold: AdamW = row top-1.
    v = claim5_sparsity(_fixed(0.3, 0.3, 0.5))
    assert v.parts[INPUT] == INCONCLUSIVE and v.parts[OUTPUT] == HOLDS and v.status == INCONCLUSIVE
    # Without row top-1 bases the input contrast is not measured: partial, and the note says which.
    v = claim5_sparsity([r for r in _fixed(0.4, 0.2, 0.5) if r["optimizer"] != "rowtop1"])
    assert v.status == PARTIAL and v.missing == [INPUT] and "rowtop1" in v.scale_note
    assert "input sparsity" in v.ours and "not measured" in v.ours
    # A reversed measured part with the other missing: does not hold.
    v = claim5_sparsity([r for r in _fixed(0.2, 0.4, 0.5) if r["optimizer"] != "coltop1"])
    assert v.status == FAILS and v.missing == [OUTPUT]
    # Only AdamW and Muon (p and q both differ): nothing measured.
    only = [r for r in _fixed(0.4, 0.2, 0.5) if r["optimizer"] in ("adamw", "muon", "unknown")]
    assert claim5_sparsity(only).status == NOT_MEASURED
    assert claim5_sparsity([]).status == NOT_MEASURED
    # A row top-1 base at another seed is no pair: the input part stays not measured.
    shifted = [dict(r, seed=r["seed"] + 10) if r["optimizer"] == "rowtop1" else r for r in _fixed(0.4, 0.2, 0.5)]
    assert claim5_sparsity(shifted).parts[INPUT] == NOT_MEASURED


# ----- claim 6 -------------------------------------------------------------------------------

def _throughout(instruct_gap, arith_gap, base_gap=0.3, seeds=SEEDS, tasks=("instruct", "arith")):
    """AdamW and Muon throughout; Muon's base learns `base_gap` better. One finetuned point per
    run, within every Δ of its base, so the finetuned AdamW − Muon gap is exactly as given (plus
    0.01 per seed on instruct)."""
    gaps = {"instruct": instruct_gap, "arith": arith_gap}
    rows = []
    for s in seeds:
        for task in tasks:
            for opt, l0, ft in (("adamw", 3.0, 2.0), ("muon", 3.0 - base_gap, 2.0 - gaps[task] - 0.01 * s * (task == "instruct"))):
                common = {"base_optimizer": opt, "optimizer": opt, "base_seed": s, "task": task, "kind": "full",
                          "method": f"full-{opt}", "lr": 1e-4, "seed": 0}
                rows += [{**common, "step": 0, "forgetting": 4.0, "learning": l0},
                         {**common, "step": 10, "forgetting": 4.05, "learning": ft}]
    return rows


def test_claim6_erosion_carries_the_claim_and_the_lead_is_shown():
    # The demo's case: Muon keeps its lead after instruct and widens it on reasoning. The lead
    # part holds, but it restates claim 1: the claim does not hold (it read "inconclusive").
    v = claim6_throughout(_throughout(0.3, 0.5))
    assert v.status == FAILS and list(v.parts) == ["erosion on reasoning beyond instruction"]
    assert v.shown["Muon ahead after instruction finetuning (restates claim 1)"] == HOLDS
    assert "erosion on reasoning beyond instruction: does not hold" in v.ours
    assert "(shown) Muon ahead after instruction finetuning (restates claim 1): holds" in v.ours
    # Erosion = (instruct change) − (reasoning change) = instruct gap − arith gap, per seed.
    mean, low, high = _t_interval([0.3 + 0.01 * s - 0.5 for s in SEEDS])
    assert (v.effect, v.low, v.high) == (pytest.approx(mean), pytest.approx(low), pytest.approx(high))
    # The paper's case: the lead survives instruct and is gone on reasoning.
    assert claim6_throughout(_throughout(0.3, 0.0)).status == HOLDS
    # Finetuning erodes every lead alike: the reasoning change alone would "hold"; the claim does not.
    v = claim6_throughout(_throughout(0.0, 0.0))
    assert v.status == INCONCLUSIVE
    assert v.shown["Muon's lead shrinks from base to finetuned on reasoning"] == HOLDS


def test_claim6_without_a_reasoning_task_is_not_measured_and_shows_the_lead():
    v = claim6_throughout(_throughout(0.3, 0.0, tasks=("instruct",)))
    assert v.status == NOT_MEASURED and "reasoning task" in v.scale_note
    assert v.shown["Muon ahead after instruction finetuning (restates claim 1)"] == HOLDS
    assert claim6_throughout([]).status == NOT_MEASURED


# ----- claim 7 -------------------------------------------------------------------------------

def _curve(losses, clean, corrupted, clean_tok=None, corrupted_tok=None):
    clean_tok = clean_tok or clean
    corrupted_tok = corrupted_tok or corrupted
    return [{"step": 50 * i, "train_loss": loss, "clean_exact": a, "corrupted_exact": b,
             "clean_token": c, "corrupted_token": d}
            for i, (loss, a, b, c, d) in enumerate(zip(losses, clean, corrupted, clean_tok, corrupted_tok, strict=True))]


def _mem_row(opt, seed, curve, n_eval=256):
    return {"optimizer": opt, "seed": seed, "n_eval": n_eval, "clean": curve[-1]["clean_exact"],
            "corrupted": curve[-1]["corrupted_exact"], "curve": curve}


# Muon fits fastest. At the final step it leads on clean *and* corrupted blocks (speed), but at a
# training loss both reach it has memorised more corrupted and learned fewer clean blocks.
CURVES = {
    "muon": ([5.0, 3.5, 2.5, 1.5, 1.0], [0.0, 0.2, 0.4, 0.8, 0.9], [0.0, 0.1, 0.3, 0.7, 0.9]),
    "adamw": ([5.0, 4.0, 3.0, 2.5, 2.0], [0.0, 0.2, 0.5, 0.6, 0.7], [0.0, 0.0, 0.1, 0.2, 0.3]),
    "sgd": ([5.0, 4.5, 4.0, 3.5, 3.0], [0.0, 0.1, 0.3, 0.5, 0.6], [0.0, 0.0, 0.0, 0.02, 0.05]),
}


def _memorisation(jitter=0.01, opts=("muon", "adamw", "sgd")):
    rows = []
    for s in SEEDS:
        for o in opts:
            losses, clean, bad = CURVES[o]
            rows.append(_mem_row(o, s, _curve(losses, [c + jitter * s for c in clean], [b - jitter * s * (b > 0.1) for b in bad])))
    return rows


def _brute_matched(rows, hi, lo, key):
    """Per seed: hi's minus lo's `key` at the lowest loss both reach, read on the logit scale by
    numpy's interpolation (the curves' losses decrease, so np.interp on the reversed arrays is
    linear in the loss), rates clipped to half an eval block."""
    out = []
    for s in SEEDS:
        a, b = (next(r for r in rows if (r["optimizer"], r["seed"]) == (o, s)) for o in (hi, lo))
        eps = 0.5 / min(a["n_eval"], b["n_eval"])
        target = max(min(p["train_loss"] for p in a["curve"]), min(p["train_loss"] for p in b["curve"]))
        at = [expit(np.interp(target, [p["train_loss"] for p in r["curve"]][::-1],
                              logit(np.clip([p[key] for p in r["curve"]][::-1], eps, 1 - eps))))
              for r in (a, b)]
        out.append(at[0] - at[1])
    return out


def test_claim7_decides_at_matched_training_loss_not_the_final_step():
    rows = _memorisation()
    v = claim7_memorization(rows)
    assert v.status == HOLDS, v.details
    mean, low, high = _t_interval(_brute_matched(rows, "muon", "adamw", "corrupted_exact"))
    assert (v.effect, v.low, v.high) == (pytest.approx(mean), pytest.approx(low), pytest.approx(high))
    # By hand for seed 0: both reach 2.0; Muon crosses it halfway from 2.5 to 1.5, so its corrupted
    # exact match there is halfway between logit(0.3) = −logit(0.7) and logit(0.7): 0.5, against
    # AdamW's 0.3 at its last point; its clean one is expit((logit(0.4) + logit(0.8)) / 2) = 0.620.
    assert _brute_matched(rows, "muon", "adamw", "corrupted_exact")[0] == pytest.approx(0.2)
    assert _brute_matched(rows, "muon", "adamw", "clean_exact")[0] == pytest.approx(0.6202 - 0.7, abs=1e-4)
    # The final-step rates alone (no curve) tell another story: Muon ahead on clean blocks too.
    final = [{k: val for k, val in r.items() if k != "curve"} for r in rows]
    f = claim7_memorization(final)
    assert f.parts["muon memorises clean blocks less than adamw"] == FAILS and f.status == INCONCLUSIVE
    assert any("final step, no curve recorded" in d for d in f.details)


def test_claim7_uses_token_accuracy_where_exact_match_is_zero():
    rows = []
    for s in SEEDS:  # nothing is reproduced exactly; token accuracy at the end 0.38 / 0.09 / 0.04
        for o, tok in (("muon", 0.38), ("adamw", 0.09), ("sgd", 0.04)):
            losses = CURVES[o][0]
            zero = [0.0] * 5
            ramp = [tok * i / 4 + 0.005 * s for i in range(5)]
            rows.append(_mem_row(o, s, _curve(losses, zero, zero, [0.5 - x for x in ramp], ramp)))
    v = claim7_memorization(rows)
    assert v.parts["muon memorises corrupted blocks more than adamw"] == HOLDS
    assert any("corrupted token accuracy at matched training loss" in d for d in v.details)
    mean, _, _ = _t_interval(_brute_matched(rows, "muon", "adamw", "corrupted_token"))
    assert v.effect == pytest.approx(mean)


def test_claim7_saturation_is_inconclusive_whatever_the_interval():
    rows = []
    for s in SEEDS:  # both at >= 98% on corrupted blocks, Muon one point ahead in every seed
        for o, top in (("muon", 0.995), ("adamw", 0.985), ("sgd", 0.5)):
            losses = CURVES[o][0]
            rows.append(_mem_row(o, s, _curve(losses, [0.5] * 5, [top + 0.0001 * s] * 5), n_eval=100_000))
    v = claim7_memorization(rows)
    assert v.parts["muon memorises corrupted blocks more than adamw"] == INCONCLUSIVE
    assert v.status == INCONCLUSIVE and "saturated" in v.scale_note
    assert decide([0.01, 0.0101, 0.0102], 0.001).status == HOLDS  # the same effects would decide unsaturated


def test_claim7_missing_optimizers():
    v = claim7_memorization(_memorisation(opts=("muon", "adamw")))
    assert v.status == PARTIAL and v.missing == ["adamw memorises corrupted blocks more than sgd"]
    assert "sgd" in v.scale_note
    assert claim7_memorization(_memorisation(opts=("muon", "sgd"))).status == NOT_MEASURED
    assert claim7_memorization([]).status == NOT_MEASURED
    # A diverged run: its curve stops at its last finite loss, which the other must reach.
    rows = _memorisation()
    for r in rows:
        if r["optimizer"] == "adamw":
            r["curve"][-1] = dict(r["curve"][-1], train_loss=float("nan"))
    assert claim7_memorization(rows).parts["muon memorises corrupted blocks more than adamw"] == HOLDS


def test_memorization_rows_carry_the_first_pairs_curve():
    def point(step, loss, base):
        return {"optimizer": "x", "lr": 1e-3, "step": step, "train_loss": loss,
                **{f"{sp}_{m}_{p}_{g}": base + 0.1 * (p == 4) + 0.01 * (sp == "corrupted") + 0.001 * (m == "token")
                   for sp in ("clean", "corrupted") for m in ("exact", "token") for p, g in ((2, 2), (4, 4))}}
    history = [point(0, 5.0, 0.0), point(10, 3.0, 0.2), point(20, 2.0, 0.4)]
    result = {"config": {"pairs": [[2, 2], [4, 4]], "seed": 7, "n_eval": 16},
              "selected": {"muon": history, "adamw": [dict(p, optimizer="adamw") for p in history]}}
    rows = memorization_rows([result])
    assert [r["optimizer"] for r in rows] == ["muon", "adamw"] and rows[0]["seed"] == 7
    assert rows[0]["pair"] == (2, 2) and rows[0]["n_eval"] == 16
    assert [p["step"] for p in rows[0]["curve"]] == [0, 10, 20]
    last = rows[0]["curve"][-1]
    assert last == {"step": 20, "train_loss": 2.0, "clean_exact": 0.4, "corrupted_exact": pytest.approx(0.41),
                    "clean_token": pytest.approx(0.401), "corrupted_token": pytest.approx(0.411)}
    assert rows[0]["corrupted"] == pytest.approx(0.41)
