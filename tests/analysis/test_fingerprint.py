"""The fingerprint tells tiny AdamW- and Muon-pretrained models apart, also at a held-out width,
and reports the leave-one-out accuracy it measured."""

import json
import math

import numpy as np
import pytest
import torch
from analysis_models import tiny_llama

from forgetless.analysis.fingerprint import (
    FEATURE_SETS,
    Reference,
    calibrate,
    fingerprint,
    leave_one_out,
    load_references,
    model_features,
    save_references,
)
from forgetless.optim import build


def markov_tokens(n: int, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    """A sparse Markov chain: each token has 3 possible successors, so there is much to learn."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, size=(vocab, 3))
    out, t = np.empty(n, dtype=np.int64), 0
    for i in range(n):
        out[i], t = t, successors[t, rng.integers(0, 3)]
    return torch.as_tensor(out)


TOKENS = markov_tokens(20000)
WINDOWS = torch.stack([TOKENS[i : i + 32] for i in range(0, 4096, 512)])


def pretrain_tiny(optimizer: str, seed: int, hidden: int, steps: int = 60) -> torch.nn.Module:
    model = tiny_llama(seed, hidden=hidden).train()
    opt = build(model, optimizer, lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(TOKENS) - 33, (8,), generator=g)
        x = torch.stack([TOKENS[s : s + 32] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def references() -> list[Reference]:
    refs = []
    for optimizer in ("adamw", "muon"):
        for seed in (0, 1):
            feats = model_features(pretrain_tiny(optimizer, seed, hidden=32), WINDOWS)
            refs.append(Reference(f"{optimizer}-{seed}", optimizer, optimizer, feats, preset="w32", seed=seed))
    return refs


def brute_force_loo(refs: list[Reference], names: list[str]) -> float:
    """Nearest centroid, standardised by the pooled within-class std, refitted without each model."""
    X = np.array([[r.features[n] for n in names] for r in refs])
    y = np.array([r.family for r in refs])
    right = 0
    for i in range(len(refs)):
        keep = np.arange(len(refs)) != i
        fams = sorted(set(y[keep]))
        cents = {f: X[keep & (y == f)].mean(0) for f in fams}
        resid = np.concatenate([X[keep & (y == f)] - cents[f] for f in fams])
        sd = np.sqrt((resid**2).sum(0) / (keep.sum() - len(fams)))
        dist = {f: np.mean(((X[i] - cents[f]) / sd) ** 2) for f in fams}
        right += min(dist, key=dist.get) == y[i]
    return right / len(refs)


def test_adamw_and_muon_told_apart_at_held_out_width(references, tmp_path):
    for names in FEATURE_SETS.values():
        clf, loo = calibrate(references, names)
        assert loo["accuracy"] == pytest.approx(brute_force_loo(references, names))
        assert loo["n"] == 4
    path = tmp_path / "ref.json"
    save_references(references, path)
    doc = json.loads(path.read_text())
    assert doc["evaluation"]["full"]["loo"]["accuracy"] == pytest.approx(brute_force_loo(references, FEATURE_SETS["full"]))
    assert load_references(path)[0][0].features == references[0].features
    # Width 48 was never calibrated on: the features are scale-free, the family must still show.
    for optimizer in ("adamw", "muon"):
        feats = model_features(pretrain_tiny(optimizer, seed=7, hidden=48), WINDOWS)
        for spectrum_only in (False, True):
            if spectrum_only:
                feats = {k: v for k, v in feats.items() if k in FEATURE_SETS["spectrum"]}
            pred = fingerprint(feats, path)
            assert pred.nearest == optimizer
            assert pred.feature_set == ("spectrum" if spectrum_only else "full")
            assert pred.probabilities[optimizer] > 0.5
            assert math.isclose(sum(pred.probabilities.values()), 1.0)


def test_far_checkpoint_is_unknown(references):
    clf, loo = calibrate(references, FEATURE_SETS["spectrum"])
    far = {k: 10 * v for k, v in references[0].features.items()}
    pred = clf.predict(far)
    assert pred.family == "unknown" and pred.distance > loo["unknown_distance"]
    assert clf.predict(references[0].features).family == references[0].family


def test_one_family_is_refused(references):
    with pytest.raises(ValueError, match="two optimizer families"):
        calibrate([r for r in references if r.family == "adamw"], FEATURE_SETS["spectrum"])


def test_loo_reports_its_own_predictions(references):
    loo = leave_one_out(references, FEATURE_SETS["spectrum"])
    assert loo["accuracy"] == np.mean([p == t for p, t in zip(loo["predictions"], loo["truth"], strict=True)])
