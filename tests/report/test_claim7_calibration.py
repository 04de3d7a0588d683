"""Claim 7 on simulated training curves with a known truth: speed must not pass for memorisation.

Every run moves along a path of (clean loss, corrupted loss) as its progress s goes from 0 to 1:
clean loss 5 − 3s, corrupted loss 5 − 3s^γ (γ > 1: patterns are learned before rote memorisation,
as the paper's Figure 7 shows); the training loss is their mean. Progress grows as
s = 1 − exp(−v·t), Muon twice as fast (v = 3) as AdamW and SGD (1.5), each run's speed jittered
by a factor exp(N(0, 0.05)). Exact match on a split is a logistic step in that split's loss
(centre 3.0, width 0.3), token accuracy a wider one (centre 3.8, width 0.5), drawn binomially over
1024 eval blocks (token accuracy over 4096 tokens) at 5 eval points per run, as sparse as the
quick preset's. The truth bends the path:
- truth 0: γ = 2 for everyone; Muon only gets further along the same path;
- truth +1 (the paper): Muon's γ = 1 (its corrupted loss falls earlier, its clean loss later, at
  the same training loss), SGD's γ = 3;
- truth −1: the reverse.
Every run draws its own γ shift (sd 0.03), as real seeds disagree.

Required: with no effect, a decisive verdict in at most 10% of 200 studies at 3 and 6 seeds; the
effect or its reverse found in at least 80% with 3 seeds. The final-step rates alone credit speed:
under the null they find Muon ahead on clean blocks as well, which the last test shows.
"""

from collections import Counter

import numpy as np
import pytest

from forgetless.report.statistics import FAILS, HOLDS
from forgetless.report.verdicts_more import _at_loss, claim7_memorization

N_STUDIES = 200
N_EVAL = 1024
SPEED = {"muon": 3.0, "adamw": 1.5, "sgd": 1.5}
N_POINTS = 5  # eval points per run, as in the quick preset (200 steps, every 50)
BEND = {"muon": -1.0, "adamw": 0.0, "sgd": 1.0}  # γ − 2 per unit of truth
GAMMA_SD, SPEED_SD = 0.03, 0.05  # per run: γ and speed jitter


def _logistic(loss, centre, width):
    return 1 / (1 + np.exp((loss - centre) / width))


def _study(truth: int, seeds: int, rng) -> list[dict]:
    rows = []
    for seed in range(seeds):
        for opt, v in SPEED.items():
            gamma = 2.0 + truth * BEND[opt] + rng.normal(0, GAMMA_SD)
            speed = v * np.exp(rng.normal(0, SPEED_SD))
            curve = []
            for i in range(N_POINTS):
                s = 1 - np.exp(-speed * i / (N_POINTS - 1))
                clean_loss, bad_loss = 5 - 3 * s, 5 - 3 * s**gamma
                point = {"step": 25 * i, "train_loss": (clean_loss + bad_loss) / 2}
                for split, loss in (("clean", clean_loss), ("corrupted", bad_loss)):
                    point[f"{split}_exact"] = rng.binomial(N_EVAL, _logistic(loss, 3.0, 0.3)) / N_EVAL
                    point[f"{split}_token"] = rng.binomial(4 * N_EVAL, _logistic(loss, 3.8, 0.5)) / (4 * N_EVAL)
                curve.append(point)
            rows.append({"optimizer": opt, "seed": seed, "n_eval": N_EVAL, "clean": curve[-1]["clean_exact"],
                         "corrupted": curve[-1]["corrupted_exact"], "curve": curve})
    return rows


@pytest.fixture(scope="module")
def rates() -> dict[tuple, Counter]:
    rng = np.random.default_rng(21)
    out = {}
    for truth, seeds in ((0, 3), (0, 6), (1, 3), (-1, 3)):
        on_curve, final, parts = Counter(), Counter(), Counter()
        for _ in range(N_STUDIES):
            study = _study(truth, seeds, rng)
            verdict = claim7_memorization(study)
            on_curve[verdict.status] += 1
            parts.update(name for name, status in verdict.parts.items() if status in (HOLDS, FAILS))
            no_curve = [{k: v for k, v in r.items() if k != "curve"} for r in study]
            final[claim7_memorization(no_curve).parts["muon memorises clean blocks less than adamw"]] += 1
        out[(truth, seeds)] = on_curve
        out[(truth, seeds, "final clean part")] = final
        out[(truth, seeds, "decisive parts")] = parts
        print(f"truth {truth:+d}, {seeds} seeds: at matched loss {dict(on_curve)}, decisive parts "
              f"{dict(parts)}; final step, clean part {dict(final)}")
    return out


@pytest.mark.parametrize("seeds", [3, 6])
def test_speed_alone_rarely_decides(rates, seeds):
    k = rates[(0, seeds)]
    assert (k[HOLDS] + k[FAILS]) / N_STUDIES <= 0.10
    # Nor does any single part: the matched-loss reading is not biased towards the faster one.
    assert all(n / N_STUDIES <= 0.10 for n in rates[(0, seeds, "decisive parts")].values())


def test_the_effect_and_its_reverse_are_found_with_three_seeds(rates):
    assert rates[(1, 3)][HOLDS] / N_STUDIES >= 0.80 and rates[(1, 3)][FAILS] == 0
    assert rates[(-1, 3)][FAILS] / N_STUDIES >= 0.80 and rates[(-1, 3)][HOLDS] == 0


def test_the_final_step_credits_speed(rates):
    # No effect, but Muon is further along: at the final step it "learns clean blocks more".
    assert rates[(0, 3, "final clean part")][FAILS] / N_STUDIES >= 0.80


def test_logit_interpolation_misreads_a_sparse_curve_far_less_than_linear():
    """Noise-free, no effect, 5 eval points: Muon 1.8-4x faster crosses AdamW's final loss between
    two of its points. The matched-loss difference should be 0; linear interpolation of the rate
    is off by up to 0.10, the logit reading by about 0.01."""
    def curve(v):
        out = []
        for i in range(5):
            s = 1 - np.exp(-v * i / 4)
            clean, bad = 5 - 3 * s, 5 - 3 * s**2
            out.append({"step": i, "train_loss": (clean + bad) / 2, "clean_exact": _logistic(clean, 3.0, 0.3),
                        "corrupted_exact": _logistic(bad, 3.0, 0.3)})
        return out

    def linear(c, target, key):  # the naive reading, by numpy (losses decrease along the curve)
        return np.interp(target, [p["train_loss"] for p in c][::-1], [p[key] for p in c][::-1])

    worst_linear, worst_logit = 0.0, 0.0
    adamw = curve(1.5)
    for v in np.linspace(2.7, 6.0, 12):
        muon = curve(v)
        target = max(min(p["train_loss"] for p in muon), adamw[-1]["train_loss"])
        for key in ("clean_exact", "corrupted_exact"):
            worst_linear = max(worst_linear, abs(linear(muon, target, key) - linear(adamw, target, key)))
            worst_logit = max(worst_logit, abs(_at_loss(muon, target, key, 1e-3) - _at_loss(adamw, target, key, 1e-3)))
    assert worst_linear > 0.05 and worst_logit < 0.015
