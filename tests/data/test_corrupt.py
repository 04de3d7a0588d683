"""corrupt_blocks and memorisation sampling, checked block by block."""

from __future__ import annotations

import numpy as np
import pytest

from forgetless.data import corrupt_blocks, memorization_samples


def stream(n=10_007, vocab=500, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.uint16)


def test_unigram_counts_unchanged_and_only_marked_blocks_move():
    tokens = stream()
    L = 64
    out, mask = corrupt_blocks(tokens, L, p=0.5, seed=1)
    assert out.dtype == tokens.dtype and out.shape == tokens.shape
    assert np.array_equal(np.bincount(out, minlength=500), np.bincount(tokens, minlength=500))
    assert mask.dtype == bool and mask.shape == (len(tokens) // L,)
    for b, corrupted in enumerate(mask):
        before, after = tokens[b * L:(b + 1) * L], out[b * L:(b + 1) * L]
        assert np.array_equal(np.sort(before), np.sort(after))  # same multiset per block
        assert np.array_equal(before, after) != corrupted  # 64 random ids: never the identity
    tail = len(mask) * L
    assert np.array_equal(out[tail:], tokens[tail:])


def test_permutations_are_uniform_and_p_is_respected():
    # 3 distinct tokens per block: each of the 3! orders should appear about equally often.
    tokens = np.tile(np.array([0, 1, 2], np.int64), 30_000)
    out, mask = corrupt_blocks(tokens, 3, p=0.3, seed=7)
    assert abs(mask.mean() - 0.3) < 0.01  # 30,000 Bernoulli(0.3): sd 0.0026
    orders = out.reshape(-1, 3)[mask]
    codes = orders[:, 0] * 9 + orders[:, 1] * 3 + orders[:, 2]
    freq = np.unique(codes, return_counts=True)[1] / len(codes)
    assert len(freq) == 6 and np.all(np.abs(freq - 1 / 6) < 0.02)


def test_seeded_and_bounds():
    tokens = stream(1000)
    a = corrupt_blocks(tokens, 10, 0.5, seed=3)
    b = corrupt_blocks(tokens, 10, 0.5, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], corrupt_blocks(tokens, 10, 0.5, seed=4)[1])
    assert not corrupt_blocks(tokens, 10, 0.0, seed=0)[1].any()
    assert corrupt_blocks(tokens, 10, 1.0, seed=0)[1].all()
    with pytest.raises(ValueError, match="block_len=2000 is longer than the token stream"):
        corrupt_blocks(tokens, 2000, 0.5, seed=0)
    with pytest.raises(ValueError, match="p must be a probability"):
        corrupt_blocks(tokens, 10, 1.5, seed=0)


def test_memorization_samples_come_from_blocks_of_their_kind():
    L = 32
    out, mask = corrupt_blocks(stream(), L, p=0.5, seed=2)
    samples = memorization_samples(out, mask, L, pairs=[(8, 4), (16, 16)], n=50, seed=0)
    assert set(samples) == {(k, p, g) for k in ("clean", "corrupted") for p, g in [(8, 4), (16, 16)]}
    for (kind, P, G), s in samples.items():
        assert s.prompts.shape == (50, P) and s.targets.shape == (50, G)
        for i in range(50):
            b, off = int(s.blocks[i]), int(s.offsets[i])
            assert mask[b] == (kind == "corrupted") and 0 <= off <= L - P - G
            window = out[b * L + off: b * L + off + P + G]
            assert np.array_equal(np.concatenate([s.prompts[i], s.targets[i]]), window)
    with pytest.raises(ValueError, match="fit in one block of block_len=32"):
        memorization_samples(out, mask, L, pairs=[(30, 8)], n=5, seed=0)
