"""`forgetless fingerprint` end to end: a random init answers "unknown" without probabilities and
says which feature is out of range; a trained model's answer names its deciding features; --json
carries every field."""

import json

import pytest
import torch
from analysis_models import tiny_llama
from test_fingerprint import pretrain_tiny
from typer.testing import CliRunner

from forgetless.analysis.fingerprint import (
    TRAINED_FEATURE,
    Reference,
    model_features,
    save_references,
)
from forgetless.cli import app
from forgetless.optim import describe

FIELDS = {"checkpoint", "seconds", "headline", "label", "probability", "groups", "groups_without_prior",
          "headline_without_prior", "fine_family", "family", "nearest", "probabilities", "distances", "distance",
          "unknown_distance", "out_of_range", "range_limit", "deciding", "missing", "feature_set"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    refs = [Reference(f"{o}-{s}", o, describe(o).family, model_features(pretrain_tiny(o, s, hidden=32, lr=lr)), preset="w32",
                      seed=s, lr=lr, steps=60) for o in ("adamw", "muon") for s, lr in ((0, 3e-3), (1, 1e-2))]
    path = tmp_path_factory.mktemp("ref") / "ref.json"
    save_references(refs, path)
    return str(path)


def _save(model: torch.nn.Module, path) -> str:
    model.save_pretrained(path)  # weights and config only: the weights-only path needs no tokenizer
    return str(path)


def test_random_init_is_unknown_without_probabilities(reference, tmp_path):
    ckpt = _save(tiny_llama(seed=3, hidden=48).to(torch.bfloat16), tmp_path / "init")
    res = CliRunner().invoke(app, ["fingerprint", ckpt, "--reference", reference, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "unknown" in res.output and TRAINED_FEATURE in res.output and "untrained" in res.output
    assert "%" not in res.output and "p =" not in res.output and "muon" not in res.output.split("unknown", 1)[1]
    res = CliRunner().invoke(app, ["fingerprint", ckpt, "--reference", reference, "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    (pred,) = json.loads(res.output)["checkpoints"]
    assert set(pred) >= FIELDS
    assert pred["family"] == pred["headline"] == "unknown" and pred["probabilities"] is None
    assert pred["groups"] is None and pred["deciding"] == []
    first = pred["out_of_range"][0]
    assert first["feature"] == TRAINED_FEATURE and first["value"] == 0.0 and first["lo"] > 0


def test_trained_model_names_its_deciding_features(reference, tmp_path):
    ckpt = _save(pretrain_tiny("adamw", seed=9, hidden=48), tmp_path / "adamw")
    res = CliRunner().invoke(app, ["fingerprint", ckpt, "--reference", reference, "--json", "--device", "cpu",
                                   "--calibration"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    (pred,) = doc["checkpoints"]
    # four references: the headline is Adam-like or, short of the confidence, unknown; never Muon-like
    assert pred["headline"] in ("adam-like", "unknown") and pred["headline_without_prior"] != "muon-like"
    assert pred["groups"]["adam-like"] > pred["groups"]["muon-like"]
    assert sum(pred["groups"].values()) == pytest.approx(1) == sum(pred["groups_without_prior"].values())
    assert pred["family"] == "l1->linf" and 0.5 < pred["probabilities"]["l1->linf"] <= 1
    assert 2 <= len(pred["deciding"]) <= 3
    for d in pred["deciding"]:
        assert set(d["ranges"]) == {"adam-like", "muon-like"} and d["against"] == "muon-like"
    assert doc["calibration"]["n_references"] == 4
    assert doc["calibration"]["evaluation"]["weights"]["loo"]["n"] == 4
    res = CliRunner().invoke(app, ["fingerprint", ckpt, "--reference", reference, "--device", "cpu"])
    assert "features that decided it" in res.output or "features that weigh most" in res.output  # unknown: the latter
    assert "with the prior" in res.output and "without it" in res.output


def test_calibration_prints_counts(reference):
    res = CliRunner().invoke(app, ["fingerprint", "--calibration", "--reference", reference])
    assert res.exit_code == 0, res.output
    assert "leave-one-out: headline (Adam-like / Muon-like)" in res.output
    assert "(4 references)" in res.output  # the count it rests on
    assert "size held out, Adam-like (l1->linf) vs Muon (l2->l2) only: not measurable" in res.output
