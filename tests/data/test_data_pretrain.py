"""prepare_pretraining_data and sample_batch, against the source texts and brute force."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from forgetless.data import cache_dir, load_pretraining_data, prepare_pretraining_data, sample_batch
from forgetless.data import encode as encode_mod


def reference_split(key: str, val_fraction: float) -> str:
    # Written out again here, not imported: the split rule is part of the contract.
    frac = int(hashlib.sha1(key.encode()).hexdigest()[:16], 16) / 2.0**64
    return "val" if frac < val_fraction else "train"


def split_docs(data, split):
    tokens = np.asarray(getattr(data, split))
    starts, _, _ = data.documents(split)
    ends = list(starts[1:]) + [len(tokens)]
    return [tokens[a:b] for a, b in zip(starts, ends, strict=True)]


def test_cache_dir_follows_env(private_cache):
    assert cache_dir() == private_cache and private_cache.is_dir()


def test_shards_hold_exactly_the_documents_of_each_split(text_folder):
    data = prepare_pretraining_data(str(text_folder), vocab_size=400, val_fraction=0.2,
                                    workers=2, chunk_bytes=2000, progress=False)
    tok = data.tokenizer
    assert {tok.eos_token, tok.bos_token, tok.pad_token} == {"<|endoftext|>", "<|bos|>", "<|pad|>"}
    assert len({tok.eos_token_id, tok.bos_token_id, tok.pad_token_id}) == 3
    assert isinstance(data.train, np.memmap) and data.train.dtype == np.uint16
    files = sorted(p for p in text_folder.rglob("*.txt"))
    for split in ("train", "val"):
        expected = [p.read_text() for p in files
                    if reference_split(p.relative_to(text_folder).as_posix(), 0.2) == split]
        docs = split_docs(data, split)
        assert len(docs) == len(expected) > 0
        for ids, text in zip(docs, expected, strict=True):
            assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1]
            assert tok.decode(ids[:-1].tolist(), clean_up_tokenization_spaces=False) == text
    assert data.meta["train"]["tokens"] == len(data.train)
    assert data.meta["train"]["sources"] == {"text": len(data.train)}


def test_tokenizer_loads_with_autotokenizer_and_is_cached(text_folder):
    from transformers import AutoTokenizer

    data = prepare_pretraining_data(str(text_folder), vocab_size=400, val_fraction=0.2,
                                    workers=1, progress=False)
    path = data.meta["tokenizer_path"]
    again = AutoTokenizer.from_pretrained(path)
    text = "the model learns order."
    assert again(text)["input_ids"] == data.tokenizer(text)["input_ids"]
    assert again.eos_token == "<|endoftext|>" and again.pad_token == "<|pad|>"
    stamp = (data.path / "train.bin").stat().st_mtime_ns
    second = prepare_pretraining_data(str(text_folder), vocab_size=400, val_fraction=0.2,
                                      workers=1, progress=False)
    assert second.path == data.path and (second.path / "train.bin").stat().st_mtime_ns == stamp
    assert np.array_equal(second.train, data.train)
    # A changed setting is a new cache entry, not a reuse.
    other = prepare_pretraining_data(str(text_folder), vocab_size=350, val_fraction=0.2,
                                     workers=1, progress=False)
    assert other.path != data.path and other.meta["tokenizer_path"] != path


def test_max_tokens_caps_train_and_keeps_val(text_folder):
    full = prepare_pretraining_data(str(text_folder), vocab_size=400, val_fraction=0.2,
                                    workers=1, chunk_bytes=1500, progress=False)
    capped = prepare_pretraining_data(str(text_folder), vocab_size=400, val_fraction=0.2,
                                      workers=2, chunk_bytes=1500, max_tokens=1000, progress=False)
    assert len(capped.train) == 1000
    assert np.array_equal(capped.train, full.train[:1000])
    assert 0 < len(capped.val) <= len(full.val)
    assert np.array_equal(capped.val, full.val[: len(capped.val)])


def test_interrupted_run_resumes_and_leaves_nothing_complete(text_folder, monkeypatch):
    kwargs = dict(vocab_size=400, val_fraction=0.2, workers=1, chunk_bytes=1500, progress=False)
    real, calls = encode_mod._encode_job, []

    def flaky(job):
        calls.append(job[0])
        if len(calls) == 4:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        return real(job)

    monkeypatch.setattr(encode_mod, "_encode_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_pretraining_data(str(text_folder), **kwargs)
    shards = cache_dir() / "shards"
    assert not any((d / "meta.json").exists() for d in shards.iterdir())
    partial = next(shards.glob("*.partial"))
    done = {p.name: p.stat().st_mtime_ns for p in (partial / "chunks-1500").glob("*.npz")}
    assert len(done) == 3
    monkeypatch.setattr(encode_mod, "_encode_job", real)
    data = prepare_pretraining_data(str(text_folder), **kwargs)
    assert not partial.exists()
    clean = prepare_pretraining_data(str(text_folder), **{**kwargs, "chunk_bytes": 999_999})
    assert np.array_equal(data.train, clean.train) and np.array_equal(data.val, clean.val)


def test_sample_batch_windows_are_shifted_slices():
    tokens = np.arange(5000, dtype=np.uint16)  # each window is identified by its first token
    x, y = sample_batch(tokens, batch_size=8, seq_len=32, seed=3, step=11)
    assert x.dtype == torch.long and x.shape == (8, 32) and y.shape == (8, 32)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        start = row_x[0]
        assert row_x == list(range(start, start + 32))
        assert row_y == list(range(start + 1, start + 33))
        assert start + 33 <= len(tokens)


def test_sample_batch_is_a_function_of_seed_and_step():
    tokens = np.random.default_rng(0).integers(0, 400, 3000).astype(np.uint16)
    a = sample_batch(tokens, 4, 16, seed=1, step=7)
    b = sample_batch(tokens, 4, 16, seed=1, step=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], sample_batch(tokens, 4, 16, seed=1, step=8)[0])
    assert not torch.equal(a[0], sample_batch(tokens, 4, 16, seed=2, step=7)[0])


def test_sample_batch_rejects_seq_len_beyond_stream():
    with pytest.raises(ValueError, match="seq_len=100"):
        sample_batch(np.zeros(50, np.uint16), 2, 100, seed=0, step=0)


def big_vocab_tokenizer(tmp_path, words):
    """A word-level fast tokenizer with 70,000 entries: more ids than uint16 holds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "[UNK]": 1}
    vocab.update({w: 2 + i for i, w in enumerate(sorted(set(words)))})
    vocab.update({f"filler{i}": i for i in range(len(vocab), 70_000)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                  unk_token="[UNK]")
    tok.save_pretrained(tmp_path / "bigtok")
    return tmp_path / "bigtok", vocab


def test_hf_tokenizer_by_path_and_uint32_shards(tmp_path, text_folder, words):

    path, vocab = big_vocab_tokenizer(tmp_path, [w.lower().strip(".") for w in words])
    data = prepare_pretraining_data(str(text_folder), tokenizer=str(path), val_fraction=0.2,
                                    workers=1, progress=False)
    assert data.train.dtype == np.uint32 and data.meta["vocab_size"] == 70_000
    first = sorted(text_folder.rglob("*.txt"))
    text = next(p.read_text() for p in first if reference_split(
        p.relative_to(text_folder).as_posix(), 0.2) == "train")
    expected = [vocab.get(w, 1) for w in text.split()] + [0]  # word ids by hand, then EOS
    assert data.train[: len(expected)].tolist() == expected
    with pytest.raises(ValueError, match="70000 tokens does not fit shard dtype uint16"):
        prepare_pretraining_data(str(text_folder), tokenizer=str(path), dtype="uint16",
                                 val_fraction=0.2, workers=1, progress=False)
    with pytest.raises(ValueError, match="tokenizer '/no/such/tok' could not be loaded"):
        prepare_pretraining_data(str(text_folder), tokenizer="/no/such/tok", progress=False)
    shutil.rmtree(path)  # the shard directory keeps its own copy of the tokenizer
    reopened = load_pretraining_data(data.path)
    assert reopened.tokenizer("the model")["input_ids"] == data.tokenizer("the model")["input_ids"]
