"""Pretraining data in one call: corpus -> tokenizer -> cached train/val token shards -> batches."""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forgetless.errors import BadValue
from forgetless.untrusted import MAX_VOCAB

from . import cache as _cache
from .corpus import DEFAULT_VAL_FRACTION, open_corpus
from .encode import DEFAULT_CHUNK_BYTES, encode_corpus
from .shards import open_shard, shard_dtype
from .tokenizer import DEFAULT_TRAIN_BYTES, corpus_tokenizer, load_tokenizer, tokenizer_hash

SHARD_VERSION = 1  # bump when the shard contents change for the same settings


@dataclass
class PretrainData:
    """Tokenised pretraining corpus. `train`/`val` are read-only 1-D memmaps of token ids with
    documents separated by `tokenizer.eos_token_id`; `meta` says how they were made."""

    tokenizer: object  # transformers.PreTrainedTokenizerFast
    train: np.ndarray
    val: np.ndarray
    meta: dict
    path: Path

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def documents(self, split: str = "val") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(starts, source ids, source names) of the documents of a split; document i spans
        tokens[starts[i] : starts[i+1]] (its EOS included). Lets forgetting be split by source."""
        index = np.load(self.path / f"{split}.docs.npy")
        return index[:, 0], index[:, 1], list(self.meta["source_names"])


def prepare_pretraining_data(corpus: str = "stdlib", tokenizer: str | None = None,
                             vocab_size: int = 8192, cache_dir: Path | None = None, *,
                             val_fraction: float = DEFAULT_VAL_FRACTION,
                             max_tokens: int | None = None, workers: int | None = None,
                             dtype: str | None = None, progress: bool = True,
                             tokenizer_train_bytes: int = DEFAULT_TRAIN_BYTES,
                             chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> PretrainData:
    """Tokenise `corpus` (a spec string, see `forgetless.data.corpus`) once and cache the shards.

    tokenizer: None trains (or reuses) a byte-level BPE of `vocab_size` on the training split;
        a path or hub name loads that Hugging Face tokenizer (`vocab_size` is then ignored).
    max_tokens: cap on training tokens (the corpus stream stops being read there).
    Everything is cached under `cache_dir` (default `cache_dir()`), keyed by a hash of the corpus
    identity and these settings, so a second call with the same arguments only opens the memmaps.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive or None, got {max_tokens}")
    if tokenizer is None and not 259 <= vocab_size <= MAX_VOCAB:  # before any corpus is read
        raise BadValue(f"vocab_size (--vocab-size) must be between 259 and {MAX_VOCAB:,}, got {vocab_size:,}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else _cache.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    source = open_corpus(corpus)
    corpus_hash = _cache.stable_hash(source.identity())
    if tokenizer is None:
        tok, tok_path = corpus_tokenizer(source, corpus_hash, vocab_size, root, val_fraction,
                                         tokenizer_train_bytes)
        tok_name = f"bpe-{vocab_size}"
    else:
        tok, tok_path, tok_name = load_tokenizer(tokenizer), tokenizer, str(tokenizer)
    tok_hash = tokenizer_hash(tok)
    np_dtype = shard_dtype(len(tok), dtype)
    settings = {"corpus": corpus_hash, "tokenizer": tok_hash, "val_fraction": val_fraction,
                "max_tokens": max_tokens, "dtype": np_dtype.name, "version": SHARD_VERSION}
    final = root / "shards" / _cache.stable_hash(settings)
    if not (final / "meta.json").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.parent / f"{final.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per dataset; others wait, then reuse
            if not (final / "meta.json").exists():
                meta = {"corpus": corpus, "corpus_identity": source.identity(),
                        "corpus_hash": corpus_hash, "tokenizer": tok_name,
                        "tokenizer_hash": tok_hash, "tokenizer_path": str(tok_path),
                        "vocab_size": len(tok), "eos_token_id": tok.eos_token_id,
                        "val_fraction": val_fraction, "max_tokens": max_tokens}
                _build(final, source, tok, meta, np_dtype, workers, chunk_bytes, progress)
    return load_pretraining_data(final)


def _build(final: Path, source, tok, meta: dict, dtype: np.dtype, workers: int | None,
           chunk_bytes: int, progress: bool) -> None:
    # Built in "<hash>.partial" (kept on a crash: its finished chunks make the rerun resume),
    # then renamed, so a directory named "<hash>" is always complete.
    partial = final.with_name(final.name + ".partial")
    start = time.time()
    stats = encode_corpus(source.documents(), tok, partial, val_fraction=meta["val_fraction"],
                          max_tokens=meta["max_tokens"], workers=workers, chunk_bytes=chunk_bytes,
                          dtype=dtype, progress=progress,
                          meta={k: meta[k] for k in ("corpus", "corpus_hash", "tokenizer_hash")})
    if stats["train"]["tokens"] == 0:
        raise BadValue(f"corpus {meta['corpus']!r} gave no training tokens; check that it "
                       "holds text and that val_fraction is not close to 1")
    if stats["val"]["tokens"] == 0:
        raise BadValue(f"corpus {meta['corpus']!r} has no validation documents (it has "
                       f"{stats['train']['documents']} documents and val_fraction="
                       f"{meta['val_fraction']}); give it more documents or raise val_fraction")
    # A copy of the tokenizer makes the directory self-contained (no hub lookup when reopened).
    tok.save_pretrained(partial / "tokenizer")
    for chunks in partial.glob("chunks-*"):
        shutil.rmtree(chunks, ignore_errors=True)
    full = {**meta, "dtype": dtype.name, "train": stats["train"], "val": stats["val"],
            "source_names": open_shard(partial / "train.bin")[1]["source_names"],
            "seconds": round(time.time() - start, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (partial / "meta.json").write_text(json.dumps(full, indent=2, default=str))
    _cache.publish_dir(partial, final)


def load_pretraining_data(path: Path) -> PretrainData:
    """Open a prepared shard directory (as written by `prepare_pretraining_data`)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"{path} is not a prepared data directory (no meta.json); run "
                                "prepare_pretraining_data or `forgetless data prepare`")
    meta = json.loads((path / "meta.json").read_text())
    train, train_meta = open_shard(path / "train.bin")
    val, _ = open_shard(path / "val.bin")
    if train_meta.get("tokenizer_hash") != meta["tokenizer_hash"]:
        raise ValueError(f"{path}/train.bin was made with another tokenizer than meta.json says")
    copy = path / "tokenizer"  # absent in directories written before the copy was kept
    tok = AutoTokenizer.from_pretrained(str(copy) if copy.exists() else meta["tokenizer_path"], trust_remote_code=False)
    return PretrainData(tokenizer=tok, train=train, val=val, meta=meta, path=path)


def sample_batch(tokens: np.ndarray, batch_size: int, seq_len: int, seed: int,
                 step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows of a token stream: x = tokens[i : i+T], y = tokens[i+1 : i+T+1].

    The starts i are uniform on [0, N - T - 1] and drawn from `numpy.random.default_rng((seed,
    step))`, so the batch of a step depends on (seed, step) only: a resumed run sees exactly the
    batches it would have seen. Returns int64 tensors of shape (batch_size, seq_len).
    """
    n = len(tokens)
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    if seq_len + 1 > n:
        raise ValueError(f"seq_len={seq_len} needs {seq_len + 1} tokens per window but the token "
                         f"stream has {n}; use a shorter seq_len or a larger corpus")
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got {seed}, {step}")
    rng = np.random.default_rng((seed, step))
    starts = rng.integers(0, n - seq_len, size=batch_size)
    windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    block = torch.from_numpy(windows)
    return block[:, :-1], block[:, 1:]
