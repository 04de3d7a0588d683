"""Shared fixtures: a private cache per test, a small text corpus, a small trained tokenizer."""

from __future__ import annotations

import random

import pytest

WORDS = ("the a model data token learns forgets loss step batch value function returns list "
         "string number python code sentence word letter order count sort reverse upper lower "
         "train validation memory block window seed shard cache file folder").split()


def make_text(rng: random.Random, sentences: int) -> str:
    lines = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
        lines.append(" ".join(words).capitalize() + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture
def words() -> list[str]:
    return list(WORDS)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FORGETLESS_CACHE", str(cache))
    return cache


@pytest.fixture
def text_folder(tmp_path):
    """60 small .txt documents of random sentences (deterministic)."""
    rng = random.Random(0)
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i in range(60):
        where = folder / "sub" if i % 3 == 0 else folder
        (where / f"doc{i:02d}.txt").write_text(make_text(rng, rng.randint(3, 15)))
    return folder


@pytest.fixture(scope="session")
def small_tokenizer():
    """A 400-token byte-level BPE trained on random sentences."""
    from forgetless.data import train_bpe

    rng = random.Random(1)
    return train_bpe([make_text(rng, 20) for _ in range(50)], vocab_size=400)


@pytest.fixture(scope="session")
def stdlib_tokenizer():
    """A 4096-token BPE on the first 100 standard-library documents (~1.5 MB): realistic lengths."""
    from itertools import islice

    from forgetless.data import open_corpus, train_bpe

    docs = [d.text for d in islice(open_corpus("stdlib").documents(), 100)]
    return train_bpe(docs, vocab_size=4096)
