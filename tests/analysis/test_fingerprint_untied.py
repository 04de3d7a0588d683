"""References with untied embeddings (issue 23 §1): the builder trains them, a reference records how
its checkpoint is tied (read from the checkpoint, not from the request), old reference files read
as tied, and leave-one-out holds the tying out as an axis of its own."""

from __future__ import annotations

import json
import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from forgetless.analysis.calibration import RunSpec, grid, reference_from_checkpoint
from forgetless.analysis.fingerprint import load_references
from forgetless.analysis.fingerprint_eval import by_axis
from forgetless.analysis.fingerprint_model import Reference

DIMS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=300)


def test_grid_names_untied_runs_apart():
    specs = grid(["nano"], ["adamw", "muon"], [240], [0], [3e-3], ties=(True, False))
    assert [s.name for s in specs] == ["nano-adamw-s0-lr0.003-240", "nano-muon-s0-lr0.003-240",
                                       "nano-adamw-s0-lr0.003-240-untied", "nano-muon-s0-lr0.003-240-untied"]
    assert RunSpec("nano", "adamw", 0, 3e-3, 240).tied  # the presets' default, and old names unchanged


def test_reference_reads_the_tying_from_the_checkpoint(tmp_path):
    from forgetless.data import train_bpe

    tok = train_bpe(["the cat sat on the mat and the dog ran"] * 20, vocab_size=300)
    for tie in (True, False):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**DIMS, tie_word_embeddings=tie))
        model.save_pretrained(tmp_path / str(tie))
        tok.save_pretrained(tmp_path / str(tie))
        # the output head is its own tensor exactly when untied
        assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) == tie
        ref = reference_from_checkpoint(tmp_path / str(tie), "adamw")
        assert ref.tied is tie


def test_old_reference_files_read_as_tied(tmp_path):
    """A file written before the field existed (every earlier reference was a tied preset)."""
    old = {"version": 2, "settings": {}, "references": [
        {"name": "a", "optimizer": "adamw", "family": "l1->linf", "features": {"x": 1.0}, "preset": "nano",
         "seed": 0, "lr": 0.003, "tokens": 0, "val_loss": math.nan, "steps": 80, "weight_decay": 0.1,
         "conversion": ""}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    refs, _ = load_references(tmp_path / "old.json")
    assert refs[0].tied is True


def test_tying_is_held_out_as_its_own_axis():
    """Synthetic references: two families apart on one feature, a few untied. Holding 'untied' out
    (calibrated on the tied ones) classifies them; 'tied' held out (calibrated on 4 to test 16) is
    skipped as too small a calibration side."""
    refs = []
    for i in range(20):
        fam, opt, x = ("l1->linf", "adamw", 1.0) if i % 2 else ("l2->l2", "muon", 10.0)
        refs.append(Reference(f"r{i}", opt, fam, {"f": x * (1 + 0.05 * (i % 5))}, preset="nano", seed=i % 3,
                              steps=80 + 10 * (i % 4), tied=i >= 4))
    axes = {a["axis"]: a for a in by_axis(refs, ["f"])}
    tying = axes["embeddings tied"]
    assert [f["held_out"] for f in tying["folds"]] == [False]
    assert tying["n"] == 4 and tying["right"] == 4
    assert tying["skipped"] == [{"held_out": True, "n": 16, "n_calibration": 4}]
