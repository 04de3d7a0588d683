"""Evaluation: token-weighted mean losses on fixed batches, and exact-match accuracy of greedy answers.

forgetting = (1/N) Σ_t −log p(x_{t+1} | x_≤t) over the N tokens of a fixed held-out sample of the
             pretraining data (the same windows at every evaluation and in every run, because they
             are drawn with the fixed seed EVAL_SEED, not the run's seed);
learning   = the same mean over the response tokens only of the held-out task set (label −100
             on prompt and padding).
Both are sums over all tokens divided by the token count, not means of per-batch means, so a
short last batch does not weigh more than its share.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from forgetless.data import sample_batch

EVAL_SEED = 1234  # fixed: eval windows must not depend on the run's seed
IGNORE = -100

Batch = tuple[torch.Tensor, torch.Tensor]  # (input_ids, targets) with targets already shifted


def lm_loss_sum(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ token losses, number of tokens) of next-token prediction; targets[b, t] is the token
    that should follow input_ids[b, ≤t], or −100 to skip that position."""
    logits = model(input_ids=input_ids, use_cache=False).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return loss, (targets != IGNORE).sum()


def forgetting_batches(val_tokens: np.ndarray, seq_len: int, n_tokens: int, batch_size: int) -> list[Batch]:
    """ceil(n_tokens / seq_len) random windows of the held-out tokens, drawn at once with seed
    EVAL_SEED, then cut into batches: the sample depends on (tokens, seq_len, n_tokens) only, not
    on the batch size or the run, so every run measures the same tokens."""
    n_windows = max(1, -(-n_tokens // seq_len))
    x, y = sample_batch(val_tokens, n_windows, seq_len, EVAL_SEED, 0)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n_windows, batch_size)]


def source_batches(data, seq_len: int, n_tokens: int, batch_size: int) -> dict[str, list[Batch]]:
    """Forgetting samples per source of the held-out data (e.g. code, prose): each source's
    validation documents are joined and sampled like `forgetting_batches`. Empty when the data
    records no sources, or a source has too few tokens for one window."""
    try:
        starts, ids, names = data.documents("val")
    except (AttributeError, FileNotFoundError, KeyError):
        return {}
    if len(names) < 2:
        return {}
    ends = np.append(starts[1:], len(data.val))
    out = {}
    for k, name in enumerate(names):
        parts = [np.asarray(data.val[a:b]) for a, b, i in zip(starts, ends, ids, strict=True) if i == k]
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if len(tokens) > seq_len + 1:
            out[name] = forgetting_batches(tokens, seq_len, n_tokens, batch_size)
    return out


def shift_sft_batch(batch: dict[str, torch.Tensor]) -> Batch:
    """Collator output (labels aligned with input_ids, HF convention) → (inputs, next-token targets).

    Trailing columns that are padding in every row are cut first: with right padding they change
    no real token's prediction (attention is causal), only cost time.
    """
    ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("attention_mask")
    if mask is not None:
        used = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
        ids, labels = ids[:, :used], labels[:, :used]
    return ids[:, :-1].contiguous(), labels[:, 1:].contiguous()


def autocast_for(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA (unless precision='fp32'), plain fp32 elsewhere."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16" and device.type == "cpu":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: Sequence[Batch], device: torch.device,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
              dist=None) -> float:
    """Σ token losses / Σ tokens over all batches, in eval mode (dropout off).

    `dist` (a `distributed.Dist`): under torchrun each rank takes its rows of every batch and the
    sums are added over ranks, so every rank returns the single-process value."""
    from forgetless.train import distributed

    d = dist or distributed.Dist()
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # Σ losses, Σ tokens
    try:
        for x, y in batches:
            x, y = distributed.local_rows(x, y, d)
            with autocast():
                loss, n = lm_loss_sum(model, x.to(device), y.to(device))
            sums[0] += loss.double()
            sums[1] += n
    finally:
        model.train(was_training)
    total, count = distributed.all_sum(sums, d).tolist()
    return total / count if count > 0 else float("nan")


def prompt_ids(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The prompt tokens of each row of a collated SFT batch: those before the first label.

    Taking them from the collator (rather than re-tokenising the prompt) keeps the generation
    prompt exactly what training saw, template and special tokens included.
    """
    out = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        first = next((i for i, t in enumerate(labels) if t != IGNORE), len(labels))
        out.append(ids[:first])
    return out


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
                   device: torch.device, batch_size: int = 32, synced: bool = False) -> list[str]:
    """Greedy continuations of token prompts (left-padded batches, KV cache), decoded.

    `synced`: the model is sharded over ranks that all call this with the same prompts; they keep
    stepping together until every one has finished (transformers' synced_gpus)."""
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, use_cache=True, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id, synced_gpus=synced)
            texts += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return texts
