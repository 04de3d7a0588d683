"""Token shards: flat binary files of token ids behind a small JSON header, read by `np.memmap`.

Layout of one shard file:

    FORGETLESS-SHARD 1 0000004096\\n      magic, format version, byte offset of the data
    {"dtype": "uint16", "tokens": N, ...}  JSON metadata (tokenizer hash, source counts, ...)
    <spaces up to the data offset, a multiple of 4096>
    N token ids, little-endian uint16 (vocabulary <= 65536) or uint32

Documents are separated by the tokenizer's EOS id. Beside each shard, `<name>.docs.npy` holds one
row per document, (start offset, source id), the source names being `meta["sources"]`.

Shards are written to a temporary name and renamed into place only when complete, so a crash never
leaves a file that looks finished; `open_shard` also checks the size against the header.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

MAGIC = "FORGETLESS-SHARD"
VERSION = 1
_ALIGN = 4096


def shard_dtype(vocab_size: int, dtype: str | None = None) -> np.dtype:
    """uint16 when every id fits (vocabulary <= 65536), else uint32; an explicit `dtype` is
    checked against the vocabulary."""
    if dtype is None:
        return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    if dtype not in ("uint16", "uint32"):
        raise ValueError(f"shard dtype must be 'uint16' or 'uint32', got {dtype!r}")
    if vocab_size > np.iinfo(dtype).max + 1:
        raise ValueError(f"a tokenizer with {vocab_size} tokens does not fit shard dtype {dtype} "
                         f"(at most {np.iinfo(dtype).max + 1}); use dtype='uint32' or None")
    return np.dtype(dtype)


def _header(meta: dict) -> bytes:
    body = json.dumps(meta, sort_keys=True).encode()
    first_len = len(f"{MAGIC} {VERSION} {0:010d}\n")
    offset = -(-(first_len + len(body) + 1) // _ALIGN) * _ALIGN  # round up to the alignment
    head = f"{MAGIC} {VERSION} {offset:010d}\n".encode() + body + b"\n"
    return head + b" " * (offset - len(head))


def write_shard(path: Path, parts, meta: dict, dtype: np.dtype) -> Path:
    """Write the concatenation of the arrays in `parts` (an iterable, consumed once) as one shard.

    `meta` must already hold "tokens" (the total length): the header is written first so the data
    can stream straight from the chunk files without holding the corpus in memory.
    """
    path = Path(path)
    dtype = np.dtype(dtype).newbyteorder("<")
    meta = {**meta, "dtype": dtype.name, "format": VERSION}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    written = 0
    try:
        with open(tmp, "wb") as handle:
            handle.write(_header(meta))
            for part in parts:
                arr = np.asarray(part)
                if arr.size and int(arr.max()) > np.iinfo(dtype).max:
                    raise ValueError(f"token id {int(arr.max())} does not fit shard dtype "
                                     f"{dtype.name}; use dtype='uint32'")
                handle.write(arr.astype(dtype, copy=False).tobytes())
                written += arr.size
            handle.flush()
            os.fsync(handle.fileno())
        if written != meta["tokens"]:
            raise RuntimeError(f"shard {path}: header says {meta['tokens']} tokens, wrote {written}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_header(path: Path) -> tuple[dict, int]:
    """(metadata, data offset) of a shard file, with a clear error for anything else."""
    path = Path(path)
    with open(path, "rb") as handle:
        first = handle.readline(64).decode("ascii", "replace").split()
        if len(first) != 3 or first[0] != MAGIC:
            raise ValueError(f"{path} is not a forgetless token shard (bad magic line)")
        if int(first[1]) != VERSION:
            raise ValueError(f"{path} is shard format {first[1]}; this forgetless reads {VERSION}")
        meta = json.loads(handle.readline())
    return meta, int(first[2])


def open_shard(path: Path) -> tuple[np.memmap, dict]:
    """The token ids of a shard as a read-only 1-D memmap, and its metadata."""
    path = Path(path)
    meta, offset = read_header(path)
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    expected = offset + meta["tokens"] * dtype.itemsize
    if path.stat().st_size != expected:
        raise ValueError(f"shard {path} is truncated or damaged ({path.stat().st_size} bytes, "
                         f"header implies {expected}); delete it and prepare the data again")
    if meta["tokens"] == 0:  # np.memmap refuses an empty map
        return np.zeros(0, dtype=dtype), meta  # type: ignore[return-value]
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(meta["tokens"],)), meta
