"""Runs ten times longer than the longest reference, classified by the shipped references (they are
not among them): the features of two nano runs of 24,000 steps (AdamW and Muon, lr 3e-3, seed 0),
measured by benchmarks/fingerprint_drift.py --out. What would make the fingerprint wrong on real,
long-trained checkpoints is drift with training length carrying a Muon run into the Adam-like range;
the drift table in docs/BENCHMARKS.md shows Muon's `mpdev` features level off instead (0.14, 0.07,
0.06 at 24,000 steps against AdamW's 0.24, 0.17, 0.11)."""

from __future__ import annotations

from pathlib import Path

from forgetless.analysis.fingerprint import fingerprint, load_references

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fingerprint_24000_steps.json"


def _runs():
    refs, _ = load_references(FIXTURE)
    return {r.optimizer: r for r in refs}


def test_the_long_runs_are_not_among_the_shipped_references():
    shipped = {r.name for r in load_references()[0]}
    runs = _runs()
    assert set(runs) == {"adamw", "muon"} and all(r.steps == 24000 for r in runs.values())
    assert not shipped & {r.name for r in runs.values()}


def test_a_long_adamw_run_stays_adam_like():
    pred = fingerprint(_runs()["adamw"].features)
    assert pred.headline == "adam-like" and pred.probability >= 0.8
    assert pred.headline_without_prior == "adam-like"


def test_a_long_muon_run_is_never_called_adam_like():
    """It is not recognised either: the groups are near even (Adam-like 0.50 with the prior, Muon-like
    0.63 without), no group reaches 0.8, and recommend falls back to AdamW with a warning."""
    pred = fingerprint(_runs()["muon"].features)
    assert pred.headline == "unknown" and pred.headline_without_prior != "adam-like"
    assert pred.groups is not None and max(pred.groups.values()) < 0.8
    assert pred.groups_without_prior["muon-like"] > pred.groups_without_prior["adam-like"]
    # its mpdev features, which decide every real checkpoint tried, stay below AdamW's at the same length
    adamw = _runs()["adamw"].features
    for name in ("attn_in_mpdev", "mlp_in_mpdev", "down_mpdev"):
        assert _runs()["muon"].features[name] < adamw[name], name
