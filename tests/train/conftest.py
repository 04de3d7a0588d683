"""Shared tiny fixtures: a small text corpus, and one short nano pretraining run to finetune from."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from forgetless.data import load_task

# Small everything: nano with 2 layers, 64-token windows, 8 sequences, a 512-token BPE.
TINY = dict(model="nano", vocab_size=512, seq_len=64, batch_size=8, eval_tokens=1024, progress=False, threads=1)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """~150 KB of text: arithmetic word problems (the finetuning task's language) and word salad."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = "the cat dog sat on a mat and ran to big small red blue house tree over under".split()
    records = load_task("arith", "train", n=600, seed=7)
    for i in range(60):
        lines = [r.prompt + r.response for r in records[i * 10:(i + 1) * 10]]
        lines += [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) + "." for _ in range(10)]
        (root / f"doc{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def base_run(corpus_dir, tmp_path_factory):
    """A nano model pretrained for 40 steps with AdamW (the base every finetune test starts from)."""
    from forgetless.train import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("runs") / "base"
    cfg = PretrainConfig(**TINY, corpus=str(corpus_dir), optimizer="adamw", steps=40, eval_every=20, out_dir=out)
    return pretrain(cfg)


@pytest.fixture
def tiny() -> dict:
    """The tiny run settings (a fresh copy per test)."""
    return dict(TINY)
