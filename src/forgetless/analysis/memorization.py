"""The memorisation test of the paper's §4.2: can the model continue its training text verbatim?

A block b of the training corpus (clean, or corrupted: its tokens randomly permuted) is cut into a
prompt b[:P] and a target b[P:P+G]. Two measures per (P, G) pair:

- exact match: the greedy continuation of the prompt, G tokens, equals the target (all tokens);
- token accuracy: teacher-forced, the share of target positions t where argmax p(· | b[:t]) = b[t].

Token accuracy is graded where exact match is all-or-nothing (the CPU pilot, docs/pilot.md, found exact match
near zero at small budgets). Note that exact match = "teacher-forced argmax right at all G
positions": while the greedy continuation matches, its prefix *is* the true prefix. The test suite
checks this identity; the evaluation still generates, as the paper defines it.

Generation is batched (all prompts of a pair share length P, so no padding) with a KV cache: each
new token costs one position of attention over the cache instead of a forward over the whole
sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

Pair = tuple[int, int]


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: torch.Tensor, n_new: int, use_cache: bool = True) -> torch.Tensor:
    """Greedy continuation (B, n_new) of equal-length `prompts` (B, P)."""
    if n_new < 1:
        raise ValueError(f"n_new must be >= 1, got {n_new}")
    out = model(input_ids=prompts, use_cache=use_cache)
    nxt = out.logits[:, -1].argmax(-1)
    generated = [nxt]
    seq, past = prompts, out.past_key_values if use_cache else None
    for _ in range(n_new - 1):
        if use_cache:
            out = model(input_ids=nxt[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
        else:  # recompute every position: the baseline the KV cache is measured against
            seq = torch.cat([seq, nxt[:, None]], 1)
            out = model(input_ids=seq, use_cache=False)
        nxt = out.logits[:, -1].argmax(-1)
        generated.append(nxt)
    return torch.stack(generated, 1)


def exact_match(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) bool: row i of `generated` equals row i of `target` at every position."""
    if generated.shape != target.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} differ in shape")
    return (generated == target).all(-1)


@torch.no_grad()
def teacher_forced_correct(model: nn.Module, blocks: torch.Tensor) -> torch.Tensor:
    """(B, T-1) bool: position t+1 of each block is the argmax prediction given tokens [0, t]."""
    logits = model(input_ids=blocks, use_cache=False).logits
    return logits[:, :-1].argmax(-1) == blocks[:, 1:]


@torch.no_grad()
def block_losses(model: nn.Module, blocks: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(B,) mean next-token cross-entropy of each block."""
    out = []
    for i in range(0, len(blocks), batch_size):
        x = blocks[i : i + batch_size]
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        out.append(nll.mean(1))
    return torch.cat(out)


@torch.no_grad()
def evaluate_blocks(
    model: nn.Module, blocks: torch.Tensor, pairs: Sequence[Pair], batch_size: int = 32, use_cache: bool = True
) -> dict[str, float]:
    """Exact match and token accuracy of every (P, G) pair over `blocks` (B, T), P + G <= T.

    Returns {"exact_P_G": share, "token_P_G": share} for each pair.
    """
    for p, g in pairs:
        if p < 1 or g < 1 or p + g > blocks.shape[1]:
            raise ValueError(f"pair (prompt={p}, gen={g}) needs 1 <= prompt, 1 <= gen and prompt + gen "
                             f"<= block length {blocks.shape[1]}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = {f"{kind}_{p}_{g}": 0.0 for p, g in pairs for kind in ("exact", "token")}
    longest = max(p + g for p, g in pairs)
    try:
        for i in range(0, len(blocks), batch_size):
            x = blocks[i : i + batch_size, :longest].to(device)
            correct = teacher_forced_correct(model, x)  # correct[:, t-1]: token t predicted
            for p, g in pairs:
                hits[f"token_{p}_{g}"] += correct[:, p - 1 : p + g - 1].float().mean(1).sum().item()
                gen = greedy_generate(model, x[:, :p], g, use_cache=use_cache)
                hits[f"exact_{p}_{g}"] += exact_match(gen, x[:, p : p + g]).sum().item()
    finally:
        model.train(was_training)
    return {k: v / len(blocks) for k, v in hits.items()}


def block_view(tokens: np.ndarray, mask: np.ndarray, block_len: int) -> tuple[torch.Tensor, np.ndarray]:
    """Whole blocks (n, block_len) of a token stream and a per-block "corrupted" flag.

    `mask` may be per token (as long as `tokens`) or per block; a block is corrupted when its
    first token is flagged (`corrupt_blocks` permutes whole blocks).
    """
    n = len(tokens) // block_len
    blocks = torch.as_tensor(np.asarray(tokens[: n * block_len], dtype=np.int64)).view(n, block_len)
    mask = np.asarray(mask, dtype=bool)
    if len(mask) == len(tokens):
        flags = mask[: n * block_len : block_len]
    elif len(mask) >= n:
        flags = mask[:n]
    else:
        raise ValueError(f"mask has {len(mask)} entries; expected one per token ({len(tokens)}) or per block ({n})")
    return blocks, flags
