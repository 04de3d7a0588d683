"""Parallel, resumable tokenisation of a corpus into per-split token shards.

The corpus stream is cut into chunks of about `chunk_bytes` of text per split, in document order
(the pending validation documents are flushed with every training chunk). Worker processes encode
chunks and save each one atomically (`chunks-<chunk_bytes>/<split>-<index>.npz`), so an
interrupted run resumes by skipping the chunks already on disk. The main process keeps at most
`2 * workers` chunks in flight (a streamed 40 GB corpus is never read ahead into memory) and
consumes results in order, so the stopping point under `max_tokens` is the same on every run.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .corpus import SPLITS, Document, split_of
from .shards import write_shard

DEFAULT_CHUNK_BYTES = 1 << 20

_BACKEND = None  # the worker's tokenizer, built once per process by _init_worker


def _init_worker(tokenizer_json: str) -> None:
    global _BACKEND
    from tokenizers import Tokenizer

    _BACKEND = Tokenizer.from_str(tokenizer_json)


def _encode_job(job: tuple) -> int:
    """Encode one chunk, append EOS after each document, save atomically; return its length."""
    path, texts, sources, eos_id, dtype = job
    path = Path(path)
    if path.exists():  # finished by an earlier, interrupted run
        return _chunk_len(path)
    encodings = _BACKEND.encode_batch(texts, add_special_tokens=False)
    tail = [] if eos_id is None else [eos_id]
    ids = [np.asarray(e.ids + tail, dtype=dtype) for e in encodings]
    tokens = np.concatenate(ids) if ids else np.zeros(0, dtype)
    lens = np.asarray([len(a) for a in ids], dtype=np.int64)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, tokens=tokens, doc_lens=lens, doc_src=np.asarray(sources, np.int16))
    os.replace(tmp, path)
    return int(tokens.size)


def _chunk_len(path: Path) -> int:
    with np.load(path) as z:
        return int(z["doc_lens"].sum())


@dataclass
class _Plan:
    """Chunks (in order) per split, and the source names seen."""

    chunks: dict[str, list[tuple[Path, int]]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    sources: list[str] = field(default_factory=lambda: ["code", "prose", "text"])


def _jobs(docs: Iterable[Document], plan: _Plan, chunk_dir: Path, val_fraction: float,
          chunk_bytes: int, eos_id: int | None, dtype: np.dtype) -> Iterator[tuple[str, tuple]]:
    buffers: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    counts = dict.fromkeys(SPLITS, 0)

    def flush(split: str) -> tuple[str, tuple]:
        texts, srcs = buffers[split]
        path = chunk_dir / f"{split}-{counts[split]:06d}.npz"
        counts[split] += 1
        buffers[split], sizes[split] = ([], []), 0
        # A finished chunk is not re-sent: its texts would only be pickled for nothing.
        return split, (str(path), [] if path.exists() else texts, srcs, eos_id, dtype)

    for doc in docs:
        split = split_of(doc.key, val_fraction)
        if doc.source not in plan.sources:
            plan.sources.append(doc.source)
        buffers[split][0].append(doc.text)
        buffers[split][1].append(plan.sources.index(doc.source))
        sizes[split] += len(doc.text)
        if sizes["train"] >= chunk_bytes:
            # Validation documents met so far go out first, so that wherever `max_tokens` stops
            # the training stream, validation holds exactly the documents read before it.
            if buffers["val"][0]:
                yield flush("val")
            yield flush("train")
        elif sizes["val"] >= chunk_bytes:
            yield flush("val")
    for split in SPLITS:
        if buffers[split][0]:
            yield flush(split)


def encode_corpus(docs: Iterable[Document], tokenizer, out_dir: Path, *, val_fraction: float,
                  max_tokens: int | None = None, workers: int | None = None,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES, dtype: np.dtype = np.dtype(np.uint16),
                  progress: bool = True, meta: dict | None = None) -> dict[str, dict]:
    """Tokenise `docs` into `out_dir/{train,val}.bin` (+ `.docs.npy`); returns per-split stats.

    `max_tokens` caps the training split (the stream stops being read once it is reached); the
    validation split keeps the documents met up to that point. EOS separates documents.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    # Chunk files are only valid for the chunk size that cut them: a resume with another size
    # must not pick them up.
    chunk_dir = out_dir / f"chunks-{chunk_bytes}"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    workers = _default_workers() if workers is None else workers
    plan = _Plan()
    eos_id = tokenizer.eos_token_id
    jobs = _jobs(docs, plan, chunk_dir, val_fraction, chunk_bytes, eos_id, np.dtype(dtype))
    totals = dict.fromkeys(SPLITS, 0)
    bar = tqdm(desc="tokenising", unit="tok", unit_scale=True, disable=None if progress else True)  # None: off without a terminal
    with _runner(workers, tokenizer.backend_tokenizer.to_str()) as submit:
        inflight: deque = deque()

        def consume() -> bool:
            split, path, result = inflight.popleft()
            n = result.get() if hasattr(result, "get") else result
            plan.chunks[split].append((Path(path), n))
            totals[split] += n
            bar.update(n)
            return max_tokens is not None and totals["train"] >= max_tokens

        stop = False
        for split, job in jobs:
            inflight.append((split, job[0], submit(job)))
            if len(inflight) >= max(1, 2 * workers) and consume():
                stop = True
                break
        while inflight and not stop:
            stop = consume()
    bar.close()
    stats = {}
    for split in SPLITS:
        stats[split] = _assemble(out_dir / f"{split}.bin", plan.chunks[split], plan.sources,
                                 max_tokens if split == "train" else None, np.dtype(dtype),
                                 {**(meta or {}), "split": split})
    return stats


@contextlib.contextmanager
def _runner(workers: int, tokenizer_json: str):
    """A `submit(job)` callable: a process pool for workers > 1, else in-process encoding."""
    if workers <= 1:
        _init_worker(tokenizer_json)
        yield _encode_job
        return
    import multiprocessing as mp

    # fork: workers start instantly and need no re-import. The env var stops the Rust tokenizer
    # from warning that its thread pool was used before the fork; each worker is one process.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        ctx = mp.get_context("fork")
        with _default_sigterm():  # the workers are forked here, and must die when terminated
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer_json,))
        with pool:
            yield lambda job: pool.apply_async(_encode_job, (job,))
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


@contextlib.contextmanager
def _default_sigterm():
    """SIGTERM at its default (die) while pool workers are forked. A training run's loop catches
    SIGTERM to stop gracefully (train/runtime.py); a worker forked from a multi-threaded process can
    deadlock in C before Python runs any handler, and then only the default action ends it, so the
    pool's terminate() would otherwise wait for it forever (seen as a hung test run)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # set outside Python: leave it
        yield
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _assemble(path: Path, chunks: list[tuple[Path, int]], sources: list[str],
              cap: int | None, dtype: np.dtype, meta: dict) -> dict:
    """Concatenate chunk files into one shard (+ document index), truncated to `cap` tokens."""
    total = sum(n for _, n in chunks)
    total = total if cap is None else min(total, cap)
    starts, src_ids, per_source = [], [], dict.fromkeys(sources, 0)
    offset = 0
    for chunk, _ in chunks:
        with np.load(chunk) as z:
            for length, src in zip(z["doc_lens"].tolist(), z["doc_src"].tolist(), strict=True):
                if offset >= total:
                    break
                starts.append(offset)
                src_ids.append(src)
                per_source[sources[src]] += min(length, total - offset)
                offset += length

    def parts() -> Iterator[np.ndarray]:
        left = total
        for chunk, _ in chunks:
            if left <= 0:
                return
            with np.load(chunk) as z:
                tokens = z["tokens"][:left]
            left -= tokens.size
            yield tokens

    stats = {"tokens": total, "documents": len(starts),
             "sources": {k: v for k, v in per_source.items() if v}}
    index = np.stack([np.asarray(starts, np.int64), np.asarray(src_ids, np.int64)], axis=1) \
        if starts else np.zeros((0, 2), np.int64)
    np.save(path.with_suffix(".docs.npy"), index)
    write_shard(path, parts(), {**meta, **stats, "source_names": sources}, dtype)
    return stats
