"""The four commands end to end on a tiny saved checkpoint and a tiny local corpus."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from forgetless.cli import app

WORDS = "the a model optimizer learns forgets sparse dense matrix weight token layer norm rank".split()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from analysis_models import tiny_llama

    from forgetless.data import prepare_pretraining_data

    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    for i in range(80):  # enough documents for the hash split to give a validation part
        (corpus / f"doc{i}.txt").write_text(" ".join(rng.choice(WORDS, 120)) + "\n")
    data = prepare_pretraining_data(str(corpus), vocab_size=300, progress=False)
    model = tiny_llama(vocab=len(data.tokenizer))
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    data.tokenizer.save_pretrained(ckpt)
    return ckpt, corpus


def test_spectrum_and_activations_commands(checkpoint, tmp_path):
    ckpt, corpus = checkpoint
    runner = CliRunner()
    res = runner.invoke(app, ["spectrum", str(ckpt), str(ckpt), "--label", "a", "--label", "b",
                              "--device", "cpu", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "stable rank" in res.output and "gate" in res.output
    doc = json.loads((tmp_path / "spectrum-a.json").read_text())
    assert len(doc["matrices"]) == 14 and doc["by_kind"]["hidden"]["n"] == 14

    res = runner.invoke(app, ["activations", str(ckpt), "--corpus", str(corpus), "--tokens", "256",
                              "--seq-len", "32", "--device", "cpu", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    acts = json.loads((tmp_path / "activations.json").read_text())
    (label,) = acts
    assert acts[label]["n_tokens"] == 256
    assert set(acts[label]["by_kind"]) >= {"q", "o", "gate", "up", "down", "head", "hidden"}
    assert (tmp_path / "activations-sparsity.png").stat().st_size > 0


def test_bad_arguments_are_named(checkpoint):
    ckpt, _ = checkpoint
    runner = CliRunner()
    res = runner.invoke(app, ["activations", str(ckpt), "--metric", "kurtosis"])
    assert res.exit_code != 0 and "sparsity" in res.output
    res = runner.invoke(app, ["spectrum", str(ckpt), "--label", "a", "--label", "b"])
    assert res.exit_code != 0 and "--label" in res.output
    res = runner.invoke(app, ["fingerprint", "--calibrate"])
    assert res.exit_code != 0 and "--out" in res.output
    # Every analysis command picks its device as training does: a bad one is a user error.
    for command in (["spectrum", str(ckpt)], ["fingerprint", str(ckpt)], ["memorization"]):
        res = runner.invoke(app, [*command, "--device", "gpu7"])
        assert res.exit_code == 2 and "'gpu7' is not a device" in res.output, (command, res.output)


def test_fingerprint_command_on_shipped_reference(checkpoint):
    ckpt, corpus = checkpoint
    res = CliRunner().invoke(app, ["fingerprint", str(ckpt), "--corpus", str(corpus), "--tokens", "256",
                                   "--device", "cpu", "--calibration", "--activations"])
    assert res.exit_code == 0, res.output
    assert "leave-one-out: headline (Adam-like / Muon-like)" in res.output  # the answer a practitioner acts on
    assert "full" in res.output  # activation features were measured and used
