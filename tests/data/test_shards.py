"""Shard files: header, dtype choice, memmap reads, and no half-written file ever looks done."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgetless.data.shards import open_shard, read_header, shard_dtype, write_shard


def test_dtype_follows_vocabulary_size():
    assert shard_dtype(8192) == np.uint16
    assert shard_dtype(65536) == np.uint16  # ids 0..65535
    assert shard_dtype(65537) == np.uint32
    assert shard_dtype(100, "uint32") == np.uint32
    with pytest.raises(ValueError, match="100000 tokens does not fit shard dtype uint16.*uint32"):
        shard_dtype(100_000, "uint16")
    with pytest.raises(ValueError, match="'uint16' or 'uint32'"):
        shard_dtype(100, "int8")


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_roundtrip_through_memmap(tmp_path, dtype):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, np.iinfo(dtype).max, n).astype(dtype) for n in (5, 0, 1000, 37)]
    path = write_shard(tmp_path / "s.bin", iter(parts), {"tokens": 1042, "tokenizer_hash": "abc"},
                       np.dtype(dtype))
    tokens, meta = open_shard(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == dtype
    assert np.array_equal(tokens, np.concatenate(parts))
    assert meta["tokenizer_hash"] == "abc" and meta["tokens"] == 1042
    raw = path.read_bytes()  # the header is plain text: magic line, then JSON
    first, body = raw.split(b"\n", 2)[:2]
    assert first.startswith(b"FORGETLESS-SHARD 1 ") and json.loads(body)["dtype"] == np.dtype(dtype).name
    offset = int(first.split()[-1])
    assert offset % 4096 == 0 and read_header(path)[1] == offset
    assert np.array_equal(np.frombuffer(raw[offset:], dtype=np.dtype(dtype).newbyteorder("<")),
                          np.concatenate(parts))


def test_failed_write_leaves_no_file(tmp_path):
    too_big = [np.array([1, 2, 70_000], dtype=np.int64)]
    with pytest.raises(ValueError, match="70000 does not fit shard dtype uint16"):
        write_shard(tmp_path / "s.bin", too_big, {"tokens": 3}, np.dtype(np.uint16))
    with pytest.raises(RuntimeError, match="header says 5 tokens, wrote 3"):
        write_shard(tmp_path / "s.bin", [np.arange(3)], {"tokens": 5}, np.dtype(np.uint16))
    assert list(tmp_path.iterdir()) == []


def test_truncated_or_foreign_files_are_refused(tmp_path):
    path = write_shard(tmp_path / "s.bin", [np.arange(100)], {"tokens": 100}, np.dtype(np.uint16))
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 10)
    with pytest.raises(ValueError, match="truncated or damaged"):
        open_shard(path)
    (tmp_path / "other.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a forgetless token shard"):
        open_shard(tmp_path / "other.bin")
