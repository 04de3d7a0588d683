"""The corrupted corpus of the memorisation test (paper section 4.2, appendix A.2).

A token stream of N tokens is cut into B = N // L blocks of L tokens; each block, independently
with probability p, has its tokens randomly permuted. A permuted block keeps its multiset of tokens
(so unigram frequencies are unchanged) but loses all sequential structure: a model can predict it
only by memorising it. Clean blocks stay learnable by generalisation. Exact match of greedy
continuations on corrupted vs clean blocks then separates memorisation from pattern learning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def corrupt_blocks(tokens: np.ndarray, block_len: int, p: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_out, corrupted): a copy of `tokens` with each full block of `block_len` tokens
    permuted with probability `p`, and the boolean mask (one entry per block) of permuted blocks.

    The tail of N mod L tokens is not a block and is never permuted. Seeded by `seed` alone.
    A corrupted block is marked even in the rare case its permutation leaves it unchanged.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if block_len < 2:
        raise ValueError(f"block_len must be >= 2 (a 1-token block cannot be permuted), got "
                         f"{block_len}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    n_blocks = len(tokens) // block_len
    if n_blocks == 0:
        raise ValueError(f"block_len={block_len} is longer than the token stream ({len(tokens)} "
                         "tokens); use a shorter block_len or more tokens")
    rng = np.random.default_rng(seed)
    corrupted = rng.random(n_blocks) < p
    out = np.array(tokens, copy=True)
    blocks = out[: n_blocks * block_len].reshape(n_blocks, block_len)  # a view into `out`
    rows = np.flatnonzero(corrupted)
    # argsort of iid uniforms is a uniformly random permutation, one per row, vectorised.
    perms = np.argsort(rng.random((len(rows), block_len)), axis=1)
    blocks[rows] = np.take_along_axis(blocks[rows], perms, axis=1)
    return out, corrupted


@dataclass(frozen=True)
class MemorizationSample:
    """Prompts and the true continuations, all taken from clean or all from corrupted blocks."""

    kind: str  # "clean" | "corrupted"
    prompt_len: int
    gen_len: int
    prompts: np.ndarray  # (n, prompt_len) int64
    targets: np.ndarray  # (n, gen_len) int64
    blocks: np.ndarray  # (n,) index of the source block
    offsets: np.ndarray  # (n,) start of the prompt inside its block


def memorization_samples(tokens: np.ndarray, corrupted: np.ndarray, block_len: int,
                         pairs: list[tuple[int, int]], n: int, seed: int
                         ) -> dict[tuple[str, int, int], MemorizationSample]:
    """For each (prompt length P, generation length G) in `pairs` and each kind (clean,
    corrupted): `n` windows of P + G tokens lying inside one block of that kind, split into the
    prompt and its target continuation. Keyed by (kind, P, G). Blocks are drawn with replacement,
    the window's offset inside the block uniformly on [0, L - P - G]."""
    tokens = np.asarray(tokens)
    corrupted = np.asarray(corrupted, dtype=bool)
    if len(corrupted) * block_len > len(tokens):
        raise ValueError(f"{len(corrupted)} blocks of {block_len} tokens need more than the "
                         f"{len(tokens)} tokens given; pass the tokens returned by corrupt_blocks")
    rng = np.random.default_rng(seed)
    out = {}
    for prompt_len, gen_len in pairs:
        if prompt_len < 1 or gen_len < 1 or prompt_len + gen_len > block_len:
            raise ValueError(f"pair (prompt_len={prompt_len}, gen_len={gen_len}) must have both "
                             f">= 1 and fit in one block of block_len={block_len}")
        for kind, pool in (("clean", np.flatnonzero(~corrupted)),
                           ("corrupted", np.flatnonzero(corrupted))):
            if len(pool) == 0:
                raise ValueError(f"no {kind} blocks to sample from (p was 0 or 1?)")
            blocks = rng.choice(pool, size=n)
            offsets = rng.integers(0, block_len - prompt_len - gen_len + 1, size=n)
            starts = blocks * block_len + offsets
            window = tokens[starts[:, None] + np.arange(prompt_len + gen_len)].astype(np.int64)
            out[(kind, prompt_len, gen_len)] = MemorizationSample(
                kind, prompt_len, gen_len, window[:, :prompt_len], window[:, prompt_len:],
                blocks, offsets)
    return out


# The names' older spelling (before issue 25 settled on "memorization" in public names): still
# importable, with a DeprecationWarning on every use (PEP 562).
_OLD_NAMES = {"MemorisationSample": "MemorizationSample", "memorisation_samples": "memorization_samples"}


def __getattr__(name: str):
    if name in _OLD_NAMES:
        new = _OLD_NAMES[name]
        warnings.warn(f"forgetless.data.corrupt.{name} is deprecated: use {new}", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
