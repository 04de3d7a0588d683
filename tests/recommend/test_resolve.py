"""One resolver for `recommend`, `create_optimizer(family="auto")` and `forgetless finetune`
(issue 23 §3). The reported case: the same weights saved under another architecture name (a
Granite config) got column top-1 from create_optimizer and recommend, AdamW from finetune. Now the
three give one answer, the fine family never decides, and below the stated confidence the answer
is AdamW with a warning a plain script shows."""

import json
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import GraniteConfig, GraniteForCausalLM, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

import forgetless.analysis.fingerprint as fp
from forgetless.analysis.fingerprint import FEATURE_SETS, calibrate, load_references
from forgetless.analysis.fingerprint_model import CONFIDENCE, Prediction
from forgetless.cli import app
from forgetless.integrations import create_optimizer, resolve_family
from forgetless.recommend import recommend
from forgetless.recommend.resolve import PretrainingUnknown, resolve
from forgetless.train.commands import _with_optimizer
from forgetless.train.config import FinetuneConfig

DIMS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=128)


@pytest.fixture(scope="module")
def shipped():
    refs, _ = load_references()
    return refs, calibrate(refs, FEATURE_SETS["weights"])[0]


def _granite(tmp_path, name="ckpt", model_type=None) -> str:
    """Tiny Llama weights saved under a Granite config (the report's case), in a folder whose name
    matches no provenance entry; `model_type` renames the architecture once more."""
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**DIMS))
    granite = GraniteForCausalLM(GraniteConfig(**DIMS))
    granite.load_state_dict(llama.state_dict())  # the same weights, another architecture name
    folder = tmp_path / name
    granite.save_pretrained(folder)
    if model_type:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(dict(cfg, model_type=model_type)))
    return str(folder)


def _stub(monkeypatch, pred: Prediction) -> None:
    """The fingerprint of any weights is `pred` (the classifier itself is tested in tests/analysis)."""
    monkeypatch.setattr(fp, "fingerprint", lambda *a, **k: pred)
    monkeypatch.setattr(fp, "fingerprint_checkpoint", lambda *a, **k: pred)


def test_granite_case_one_answer_and_never_column_top1(shipped, tmp_path, monkeypatch):
    refs, clf = shipped
    # A column-top-1 reference whose nearest fine family (no prior) is column top-1 while its
    # headline is Adam-like: the fine family must not reach any of the three.
    ref = next(r for r in refs if r.name == "small-coltop1-s1-lr0.001-240")
    pred = clf.predict(ref.features)
    assert pred.family == "l1->l1" and pred.headline == "adam-like"
    _stub(monkeypatch, pred)
    folder = _granite(tmp_path)
    rec = recommend(folder)
    assert (rec.optimizer, rec.how_known, rec.group) == ("adamw", "fingerprint", "adam-like")
    assert rec.summary.startswith("adamw (the checkpoint's weights look Adam-like (element-wise), p = ")
    model = GraniteForCausalLM.from_pretrained(folder)
    assert resolve_family(model)[0] == "adamw"
    assert {g["rule"] for g in create_optimizer(model, family="auto", lr=1e-3).param_groups} == {"adamw"}
    cfg = _with_optimizer(FinetuneConfig(base=folder, task="arith", out_dir=str(tmp_path / "ft")))
    assert cfg.optimizer == "adamw"
    res = CliRunner().invoke(app, ["recommend", folder, "--infer"])
    assert res.exit_code == 0, res.output
    assert "look Adam-like" in res.output and "evidence" in res.output and "coltop1" not in res.output
    renamed = _granite(tmp_path, "renamed", model_type="acme_lm")  # an architecture no registry knows
    assert recommend(renamed, infer=True).optimizer == "adamw"


def test_unfingerprintable_weights_agree_on_the_fallback(tmp_path):
    """The real fingerprint on random-init weights: 'unknown' (untrained), so all three fall back
    to AdamW, each with the warning."""
    folder = _granite(tmp_path)
    with pytest.warns(PretrainingUnknown, match="finetuning with adamw"):
        assert recommend(folder).optimizer == "adamw"
    with pytest.warns(PretrainingUnknown):
        assert resolve_family(GraniteForCausalLM.from_pretrained(folder))[0] == "adamw"
    with pytest.warns(PretrainingUnknown):
        cfg = _with_optimizer(FinetuneConfig(base=folder, task="arith", out_dir=str(tmp_path / "ft")))
    assert cfg.optimizer == "adamw"


def test_below_the_confidence_it_falls_back_with_a_warning(shipped, tmp_path, monkeypatch):
    refs, clf = shipped
    muon = clf.predict(next(r for r in refs if r.name == "small-muon-s1-lr0.001-240").features)
    assert muon.headline == "muon-like" and CONFIDENCE <= muon.probability < 1
    _stub(monkeypatch, muon)
    folder = _granite(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # above the confidence: no warning at all
        found = resolve(folder, min_confidence=muon.probability - 1e-9)
    assert (found.optimizer, found.how_known) == ("muon", "fingerprint")
    with pytest.warns(PretrainingUnknown, match="finetuning with adamw"):
        found = resolve(folder, min_confidence=muon.probability + 1e-9)
    assert (found.optimizer, found.how_known) == ("adamw", "unknown")
    # The stated default, CONFIDENCE = 0.8: a Muon-like 0.75 is not enough.
    weak = Prediction(headline="unknown", probability=None, groups={"muon-like": 0.75, "adam-like": 0.25},
                      groups_without_prior={"muon-like": 0.87, "adam-like": 0.13}, headline_without_prior="muon-like",
                      fine_family=None, family="l2->l2", probabilities={"l2->l2": 0.87}, distance=1.0,
                      unknown_distance=3.0, feature_set="weights")
    _stub(monkeypatch, weak)
    with pytest.warns(PretrainingUnknown, match="no group reaches p = 0.8"):
        assert resolve(folder).optimizer == "adamw"


def test_the_warning_shows_in_a_plain_script(tmp_path):
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "acme_lm"}))  # no weights to fingerprint
    code = f"from forgetless.recommend.resolve import resolve; print(resolve({str(folder)!r}).optimizer)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "adamw"
    assert "PretrainingUnknown" in out.stderr and "finetuning with adamw" in out.stderr


@pytest.mark.parametrize("key", ["preset", "steps"])
def test_recommend_infer_follows_the_headline_on_held_out_references(shipped, tmp_path, monkeypatch, key):
    """Calibrated without one size (or length), the references of that size: `recommend --infer`
    gives AdamW for Adam-like references and Muon for Muon ones (or, when unsure, the AdamW
    fallback), never a column / row top-1 optimizer and never the other group's."""
    refs, _ = shipped
    folder = _granite(tmp_path)
    pair = [r for r in refs if r.family in ("l1->linf", "l2->l2")]
    right = n = 0
    for value in sorted({getattr(r, key) for r in pair}):
        clf, _ = calibrate([r for r in refs if getattr(r, key) != value], FEATURE_SETS["weights"])
        for r in (r for r in pair if getattr(r, key) == value):
            _stub(monkeypatch, clf.predict(r.features))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PretrainingUnknown)
                rec = recommend(folder, infer=True)
            want = "adamw" if r.family == "l1->linf" else "muon"
            assert rec.optimizer in (want, "adamw"), r.name  # a Muon reference may fall back, never flip
            assert rec.optimizer == want or rec.how_known == "unknown", r.name
            right += rec.optimizer == want and rec.how_known == "fingerprint"
            n += 1
    assert n == len(pair) and right >= 0.8 * n


def test_infer_outranks_a_provenance_assumed_from_the_architecture(shipped, tmp_path, monkeypatch):
    """A Llama-architecture checkpoint is 'assumed' AdamW (any optimizer can train a Llama); with
    --infer, confident Muon-like weights are followed, with a caution; without it, no fingerprint."""
    refs, clf = shipped
    muon = clf.predict(next(r for r in refs if r.name == "small-muon-s1-lr0.001-240").features)
    _stub(monkeypatch, muon)
    torch.manual_seed(0)
    folder = tmp_path / "base"
    LlamaForCausalLM(LlamaConfig(**DIMS)).save_pretrained(folder)
    plain = recommend(folder)
    assert (plain.optimizer, plain.how_known, plain.provenance_status) == ("adamw", "provenance", "assumed")
    inferred = recommend(folder, infer=True)
    assert (inferred.optimizer, inferred.how_known) == ("muon", "fingerprint")
    assert any("only assumed" in c for c in inferred.cautions)
