"""The fingerprint's headline (issue 23 §1) on the shipped references: the reported failure case
(a real AdamW checkpoint whose attn_in_rowcv was 0.249) is Adam-like or unknown, never column
top-1 or Muon; the prior enters as documented (checked by hand); a feature that drifts with
training length more than it separates the groups does not vote (drift recomputed by hand); the
held-out evaluation along the length axis matches a refit by hand."""

import math

import numpy as np
import pytest

from forgetless.analysis import fingerprint_cli
from forgetless.analysis.fingerprint import FEATURE_SETS, calibrate, held_out, load_references
from forgetless.analysis.fingerprint_eval import by_axis
from forgetless.analysis.fingerprint_model import PRIOR_GROUPS, PRIOR_WITHIN, feature_drift

NAMES = FEATURE_SETS["weights"]


@pytest.fixture(scope="module")
def shipped():
    refs, _ = load_references()
    clf, loo = calibrate(refs, NAMES)
    return refs, clf, loo


def test_reported_failure_case_is_adam_like_never_column_top1(shipped, capsys):
    """Every Adam-like (l1->linf) reference with attn_in_rowcv moved to the real checkpoint's 0.249
    (above the Adam-like references' range, inside column top-1's)."""
    refs, clf, _ = shipped
    adam = [r for r in refs if r.family == "l1->linf"]
    lo = min(r.features["attn_in_rowcv"] for r in adam)
    hi = max(r.features["attn_in_rowcv"] for r in adam)
    assert hi < 0.249  # the situation of the report: outside the Adam-like references' span
    for r in adam:
        pred = clf.predict(dict(r.features, attn_in_rowcv=0.249))
        assert pred.headline in ("adam-like", "unknown"), r.name
        assert pred.fine_family in (None, "l1->linf"), r.name
        assert pred.groups is None or pred.groups["adam-like"] > pred.groups["muon-like"]
    # The report's own fine probabilities (column top-1 0.45, Adam-like 0.28, row top-1 0.27, Muon
    # 1e-4) summed by group, by hand: with uniform group and within-group weights, Adam-like gets
    # (0.45 + 0.28 + 0.27) / 3 / 2 against 1e-4 / 2; with the prior, AdamW's family takes
    # 0.98 * 0.28 of the element-wise mass against 0.01 * 0.45 and 0.01 * 0.27.
    p = {"l1->l1": 0.45, "l1->linf": 0.28, "linf->linf": 0.27, "l2->l2": 1e-4}
    d2 = np.array([-2 * clf.temperature * math.log(p[k]) for k in clf.families])
    g0 = clf.group_probabilities(d2, prior=False)
    assert g0["adam-like"] == pytest.approx((1.0 / 6) / (1.0 / 6 + 1e-4 / 2))
    post = dict(zip(clf.families, clf.posterior(d2, prior=True), strict=True))
    within = post["l1->linf"] / (post["l1->l1"] + post["l1->linf"] + post["linf->linf"])
    assert within == pytest.approx(0.98 * 0.28 / (0.98 * 0.28 + 0.01 * 0.45 + 0.01 * 0.27))
    assert within > 0.9  # so the fine family shown (if any) is AdamW's, never column top-1
    # The console's first word on it is the group.
    pred = clf.predict(dict(adam[0].features, attn_in_rowcv=0.249))
    fingerprint_cli._show_prediction("ckpt", pred, 1.0)
    first = capsys.readouterr().out.splitlines()[0]
    assert ("Adam-like (element-wise), p = " in first or "unknown" in first) and "l1->l1" not in first
    assert lo < 0.249


def test_prior_enters_as_documented(shipped):
    """P(k) ∝ π(group) π(k | group) exp(−d_k² / 2τ), by hand for one distance vector."""
    _, clf, _ = shipped
    d2 = np.array([1.0, 0.5, 2.0, 0.8])[: len(clf.families)]
    tau = clf.temperature
    groups = {"l1->l1": "adam-like", "l1->linf": "adam-like", "linf->linf": "adam-like", "l2->l2": "muon-like"}
    want = np.array([PRIOR_GROUPS[groups[k]] * PRIOR_WITHIN.get(k, 1.0) * math.exp(-d / (2 * tau))
                     for k, d in zip(clf.families, d2, strict=True)])
    assert clf.posterior(d2, prior=True) == pytest.approx(want / want.sum())
    flat = np.array([0.5 * (1 / 3 if groups[k] == "adam-like" else 1.0) * math.exp(-d / (2 * tau))
                     for k, d in zip(clf.families, d2, strict=True)])
    assert clf.posterior(d2, prior=False) == pytest.approx(flat / flat.sum())


def test_drifting_features_do_not_vote(shipped):
    """Drift per decade of steps (80 -> 240, same run settings) against the distance between the
    Adam-like group's centroid (mean of its three families') and Muon's, recomputed here."""
    refs, clf, _ = shipped
    drift = feature_drift(refs, NAMES)
    runs: dict[tuple, dict[int, object]] = {}
    for r in refs:
        runs.setdefault((r.preset, r.optimizer, r.seed, r.lr, r.weight_decay, r.conversion), {})[r.steps] = r
    pairs = [(lengths[min(lengths)], lengths[max(lengths)]) for lengths in runs.values() if len(lengths) > 1]
    assert len(pairs) == 30  # nano, micro, small x 5 optimizers x 2 (seed, lr); 5 of them reach 2400 steps
    for name in ("attn_in_rowcv", "attn_in_mpdev", "mlp_in_rowcv", "o_srank"):
        slopes = [(math.log(b.features[name]) - math.log(a.features[name])) / math.log10(b.steps / a.steps)
                  for a, b in pairs]
        rms = math.sqrt(sum(s * s for s in slopes) / len(slopes))
        fam = {f: np.mean([math.log(r.features[name]) for r in refs if r.family == f])
               for f in ("l1->linf", "l1->l1", "linf->linf", "l2->l2")}
        sep = abs(np.mean([fam["l1->linf"], fam["l1->l1"], fam["linf->linf"]]) - fam["l2->l2"])
        assert drift[name]["drift"] == pytest.approx(rms) and drift[name]["separation"] == pytest.approx(sep)
        assert drift[name]["votes"] == (rms < sep) == bool(clf.votes[NAMES.index(name)])
    assert not drift["attn_in_rowcv"]["votes"]  # the feature that decided the reported failure
    assert drift["attn_in_mpdev"]["votes"]


def test_length_held_out_by_hand_and_axes_worst_first(shipped):
    refs, _, _ = shipped
    res = held_out(refs, NAMES, "steps")
    clf, _ = calibrate([r for r in refs if r.steps != 240], NAMES)
    test = [r for r in refs if r.steps == 240]
    heads = [clf.predict(r.features).headline for r in test]
    fold = next(f for f in res["folds"] if f["held_out"] == 240)
    groups = ["muon-like" if r.family == "l2->l2" else "adam-like" for r in test]
    assert fold["right"] == sum(h == g for h, g in zip(heads, groups, strict=True))
    assert fold["unknown"] == heads.count("unknown")
    assert fold["wrong"] == fold["n"] - fold["right"] - fold["unknown"]
    axes = by_axis(refs, NAMES)
    accs = [a["headline_accuracy"] for a in axes]
    assert accs == sorted(accs) and {a["key"] for a in axes} >= {"preset", "steps"}
    # The shipped grid pairs seed i with lr i: one axis, named after both.
    assert sum("seed" in a["axis"] for a in axes) == 1
