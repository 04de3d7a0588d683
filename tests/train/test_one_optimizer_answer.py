"""One answer from all four ways in (issue 23 §3): `recommend`, `create_optimizer(family="auto")`,
`forgetless finetune` and the library's `finetune(cfg)`, without an optimizer, on the same
checkpoint. The reported case: Llama weights saved under a Granite config, in a folder no
provenance entry matches, so the weight fingerprint decides. Reported: create_optimizer and
recommend said column top-1, the command line's finetune AdamW; the Python `finetune(cfg)` never
asked the resolver at all (it trained with AdamW whatever the weights looked like).

The fingerprint is stubbed to a headline just above and just below the stated confidence
(fingerprint_model.CONFIDENCE): above, all four finetune with Muon; below, all four with AdamW,
each with the PretrainingUnknown warning. What each finetune trained with is read back from the
run's config.yaml and from the optimizer's parameter groups, not from the resolver."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import yaml
from transformers import GraniteConfig, GraniteForCausalLM, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

import forgetless.analysis.fingerprint as fp
from forgetless.analysis.fingerprint_model import CONFIDENCE, Prediction
from forgetless.cli import app
from forgetless.data import prepare_pretraining_data
from forgetless.integrations import create_optimizer
from forgetless.recommend import recommend
from forgetless.recommend.resolve import PretrainingUnknown
from forgetless.train import FinetuneConfig, finetune

# One evaluation step on tiny everything; forgetting on the test corpus (fast to tokenise).
RUN = dict(task="arith", steps=1, eval_every=1, batch_size=4, seq_len=64, forget_seq_len=64, eval_n=4,
           train_n=8, eval_tokens=256, progress=False, console=False, threads=1)


@pytest.fixture(scope="module")
def granite(corpus_dir, tmp_path_factory) -> str:
    """Tiny Llama weights under a Granite config, with a tokenizer, in a folder named 'ckpt' with
    no run config above it: nothing but the weights can say how it was pretrained."""
    tok = prepare_pretraining_data(str(corpus_dir), vocab_size=512, progress=False).tokenizer
    dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=len(tok))
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**dims))
    model = GraniteForCausalLM(GraniteConfig(**dims))
    model.load_state_dict(llama.state_dict())  # the same weights, another architecture name
    folder = tmp_path_factory.mktemp("one-answer") / "ckpt"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _headline(p: float) -> Prediction:
    """A Muon-like headline at probability p (the classifier itself is tested in tests/analysis)."""
    return Prediction(headline="muon-like", probability=p, groups={"muon-like": p, "adam-like": 1 - p},
                      groups_without_prior={"muon-like": p, "adam-like": 1 - p}, headline_without_prior="muon-like",
                      fine_family=None, family="l2->l2", probabilities={"l2->l2": p}, distance=1.0,
                      unknown_distance=3.0, feature_set="weights")


def _trained_with(out) -> str:
    return yaml.safe_load((out / "config.yaml").read_text())["optimizer"]


@pytest.mark.parametrize("p, want", [(CONFIDENCE + 0.01, "muon"), (CONFIDENCE - 0.01, "adamw")])
def test_four_ways_in_give_one_answer(granite, corpus_dir, tmp_path, monkeypatch, p, want):
    pred = _headline(p)
    monkeypatch.setattr(fp, "fingerprint", lambda *a, **k: pred)
    monkeypatch.setattr(fp, "fingerprint_checkpoint", lambda *a, **k: pred)
    below = want == "adamw"

    def check(label: str, ask):
        """ask() under the expected warning: exactly one PretrainingUnknown below the confidence, none above."""
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            answer = ask()
        ours = [w for w in seen if issubclass(w.category, PretrainingUnknown)]
        assert len(ours) == (1 if below else 0), (label, [str(w.message) for w in ours])
        if below:
            assert "finetuning with adamw" in str(ours[0].message), label
        return answer

    answers = {"recommend": check("recommend", lambda: recommend(granite).optimizer)}
    model = GraniteForCausalLM.from_pretrained(granite)
    opt = check("create_optimizer", lambda: create_optimizer(model, family="auto", lr=1e-3))
    # The rule each parameter group steps with: Muon's matrices and its AdamW side, or AdamW alone.
    rules = {g["rule"] for g in opt.param_groups}
    answers["create_optimizer"] = "muon" if "muon" in rules else "adamw" if rules == {"adamw"} else str(rules)

    out = tmp_path / "python"
    check("finetune(cfg)", lambda: finetune(FinetuneConfig(base=granite, forget_corpus=str(corpus_dir),
                                                           out_dir=str(out), **RUN)))
    answers["finetune(cfg)"] = _trained_with(out)

    cli_out = tmp_path / "cli"
    argv = ["finetune", granite, "--task", "arith", "--steps", "1", "--eval-every", "1", "--batch-size", "4",
            "--seq-len", "64", "--forget-seq-len", "64", "--eval-n", "4", "--train-n", "8", "--eval-tokens", "256",
            "--forget-corpus", str(corpus_dir), "--no-progress", "--no-console", "--threads", "1",
            "--out", str(cli_out)]
    res = check("forgetless finetune", lambda: CliRunner().invoke(app, argv))
    assert res.exit_code == 0, res.output
    answers["forgetless finetune"] = _trained_with(cli_out)
    assert answers == dict.fromkeys(answers, want)


def test_python_finetune_warning_shows_in_a_plain_script(granite, corpus_dir, tmp_path):
    """No stub: random-init weights fingerprint as 'unknown' (untrained), so `finetune(cfg)` trains
    with AdamW, and a plain script's stderr carries the warning (not only a log record)."""
    out = tmp_path / "plain"
    code = ("from forgetless.train import FinetuneConfig, finetune\n"
            f"finetune(FinetuneConfig(base={granite!r}, forget_corpus={str(corpus_dir)!r}, out_dir={str(out)!r}, "
            f"**{RUN!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "PretrainingUnknown" in done.stderr and "finetuning with adamw" in done.stderr
    assert _trained_with(out) == "adamw"
