"""How well the fingerprint transfers: leave-one-out along every axis the references vary on.

For each axis (size = preset, training length = steps, lr, seed, weight decay, conversion, tied or
untied embeddings) and
each of its values: calibrate on the references without that value (voting features, temperature
and unknown limits included) and classify those with it. The headline (Adam-like / Muon-like /
unknown, with the prior, as a real checkpoint gets it) is scored first; the fine family after it.
Axes are listed worst headline accuracy first. A fold whose calibration side is smaller than its
half its test side is skipped (and listed as skipped).
"""

from __future__ import annotations

import math

import numpy as np

from .fingerprint_model import Reference, calibrate, feature_drift, group_of, leave_one_out, matrix

AXES = {"preset": "size", "steps": "training length", "lr": "learning rate", "seed": "seed",
        "weight_decay": "weight decay", "conversion": "conversion", "tied": "embeddings tied"}
ADAM_VS_MUON = ("l1->linf", "l2->l2")


def held_out(refs: list[Reference], feature_names: list[str], key: str,
             families: tuple[str, ...] | None = None) -> dict:
    """Leave-one-`key`-out: for each value of the reference field `key`, calibrate on the
    references without it and classify those with it. `families` restricts both sides to those
    families. Headline: right (the true group, at ≥ the confidence), unknown, wrong, both with and
    without the prior; fine: the nearest family."""
    if families is not None:
        refs = [r for r in refs if r.family in families]
    values = sorted({getattr(r, key) for r in refs})
    out: dict = {"key": key, "axis": AXES.get(key, key), "n": 0, "folds": []}
    if len(values) < 2:
        return out
    truth, pred = [], []
    score = {"right": 0, "unknown": 0, "wrong": 0, "right_without_prior": 0, "wrong_without_prior": 0}
    for v in values:
        train = [r for r in refs if getattr(r, key) != v]
        test = [r for r in refs if getattr(r, key) == v]
        if len({r.family for r in train}) < 2 or 2 * len(train) < len(test):
            # a fold calibrated on fewer references than it tests (weight decay 0.1 held out, with
            # only the weight-decay-0 runs left) measures that small set's range, not transfer
            out.setdefault("skipped", []).append({"held_out": v, "n": len(test), "n_calibration": len(train)})
            continue
        clf, _ = calibrate(train, feature_names)
        preds = [clf.predict(r.features) for r in test]
        fold = {"held_out": v, "n": len(test), "right": 0, "unknown": 0, "wrong": 0, "fine_right": 0,
                "wrong_names": []}
        for p, r in zip(preds, test, strict=True):
            g = group_of(r.family)
            verdict = "unknown" if p.headline == "unknown" else ("right" if p.headline == g else "wrong")
            fold[verdict] += 1
            if verdict == "wrong":
                fold["wrong_names"].append(r.name)
            score[verdict] += 1
            if p.headline_without_prior != "unknown":
                score["right_without_prior" if p.headline_without_prior == g else "wrong_without_prior"] += 1
            fold["fine_right"] += p.nearest == r.family
            truth.append(r.family)
            pred.append(p.nearest)
        out["folds"].append(fold)
    n = len(truth)
    fams = sorted(set(truth) | set(pred))
    right = sum(a == b for a, b in zip(truth, pred, strict=True))
    out.update(score, n=n, headline_accuracy=score["right"] / n if n else math.nan,
               fine_right=right, accuracy=right / n if n else math.nan,
               confusion={t: {p: sum(a == t and b == p for a, b in zip(truth, pred, strict=True)) for p in fams}
                          for t in fams})
    return out


def by_axis(refs: list[Reference], feature_names: list[str]) -> list[dict]:
    """`held_out` along every axis with at least two values, worst headline accuracy first. Two
    axes that split the references the same way (seed i paired with lr i in the shipped grid) are
    one axis, named after both."""
    res, seen = [], {}
    for key in AXES:
        split = frozenset(frozenset(r.name for r in refs if getattr(r, key) == v) for v in {getattr(r, key) for r in refs})
        if len(split) < 2:
            continue
        if split in seen:
            seen[split]["axis"] += f" = {AXES[key]} (paired in the grid)"
            continue
        seen[split] = held_out(refs, feature_names, key)
        res.append(seen[split])
    return sorted((r for r in res if r["n"]), key=lambda r: (r["headline_accuracy"], -r["wrong"]))


def evaluate(refs: list[Reference], feature_sets: dict[str, list[str]]) -> dict:
    """Per feature set measured on every reference: leave-one-out (headline and fine), the
    drift table, every axis held out (worst first), and size / length held out on Adam-like vs
    Muon only."""
    out: dict = {}
    for set_name, names in feature_sets.items():
        if not np.isfinite(matrix(refs, names)).all():
            continue  # this feature set was not measured on every reference
        out[set_name] = {"loo": leave_one_out(refs, names), "drift": feature_drift(refs, names),
                         "axes": by_axis(refs, names),
                         "size_adam_muon": held_out(refs, names, "preset", ADAM_VS_MUON),
                         "length_adam_muon": held_out(refs, names, "steps", ADAM_VS_MUON)}
    return out
