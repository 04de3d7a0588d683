"""Evaluation: token-weighted mean losses on fixed batches, and exact-match accuracy of greedy answers.

forgetting = (1/N) Σ_t −log p(x_{t+1} | x_≤t) over the N tokens of a fixed held-out sample of the
             pretraining data (the same windows at every evaluation and in every run, because they
             are drawn with the fixed seed EVAL_SEED, not the run's seed);
learning   = the same mean over the response tokens only of the held-out task set (label −100
             on prompt and padding).
kl_to_base = (1/N) Σ_t KL(p_base(· | x_≤t) ‖ p_model(· | x_≤t)) over the same N reference tokens,
             in the same forward as forgetting (`BaseReference`: the base's distributions are kept
             from the run's step-0 evaluation).
All are sums over all tokens divided by the token count, not means of per-batch means, so a
short last batch does not weigh more than its share.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from forgetless.data import sample_batch
from forgetless.data.sft import IGNORE_INDEX as IGNORE
from forgetless.train import distributed
from forgetless.train.kl import KL_TOP_K, BaseReference, _base_terms  # noqa: F401  (re-exported for older imports)

EVAL_SEED = 1234  # fixed: eval windows must not depend on the run's seed

Batch = tuple[torch.Tensor, torch.Tensor]  # (input_ids, targets) with targets already shifted


def lm_loss_sum(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ token losses, number of tokens) of next-token prediction; targets[b, t] is the token
    that should follow input_ids[b, ≤t], or −100 to skip that position."""
    logits = model(input_ids=input_ids, use_cache=False).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return loss, (targets != IGNORE).sum()


# Model types whose logits are exactly lm_head(base(x).last_hidden_state): no logit scaling or
# soft-capping after the head (Gemma 2, Cohere, Granite have some, so they take the plain path).
PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "olmo", "olmo2", "phi3", "smollm3"}
HEAD_CHUNK_BYTES = 64 * 2**20  # fp32 logits of one chunk of positions in evaluation


def head_split(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(base, head) of a causal LM (PEFT and DDP wrappers looked through) when its logits are
    head(base(x).last_hidden_state), else None."""
    m = getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model
    if hasattr(m, "get_base_model"):  # a PeftModel: LoRA layers live inside the base model
        m = m.get_base_model()
    config = getattr(m, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD or not hasattr(m, "get_output_embeddings"):
        return None
    base, head = getattr(m, getattr(m, "base_model_prefix", ""), None), m.get_output_embeddings()
    if base is None or head is None or base is m:
        return None
    return base, head


def chunked_loss_sum(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
                     chunk_bytes: int = HEAD_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """`lm_loss_sum` without the full (rows × positions × vocabulary) logits: the model's base
    gives hidden states, then the head and the cross-entropy run on chunks of the scored positions
    (positions with target −100 are dropped before the head), each chunk's fp32 logits at most
    `chunk_bytes`. For evaluation (no_grad): a 64 × 1024 batch over a 49k vocabulary would
    otherwise hold 13 GB of fp32 logits. Falls back to `lm_loss_sum` when the model's logits are
    not a plain head of its hidden states (see PLAIN_HEAD)."""
    return _head_chunks(model, input_ids, targets, chunk_bytes, recompute=False)


def _head_loss(head: torch.nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(h).float(), y, reduction="sum")


def chunked_train_loss_sum(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
                           chunk_bytes: int = HEAD_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """`lm_loss_sum` for training without the full logits: head + cross-entropy per chunk of
    positions under activation checkpointing, so the backward recomputes one chunk's logits at a
    time instead of keeping (and differentiating) all of them — the logits of 2 × 1024 tokens over
    a 49k vocabulary are 0.4 GB per fp32 copy, and the plain loss holds about four. The same sum
    and gradient as `lm_loss_sum` up to float rounding. One process only: under DDP the forward
    must go through the wrapper (its hooks sync the gradients), so `run_job` uses the plain loss."""
    return _head_chunks(model, input_ids, targets, chunk_bytes, recompute=True)


def _head_chunks(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
                 chunk_bytes: int, recompute: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Both chunked losses: base once, then head + cross-entropy per chunk of scored positions,
    under activation checkpointing when `recompute` (training) so the backward holds one chunk."""
    split = head_split(model)
    if split is None:
        return lm_loss_sum(model, input_ids, targets)
    base, head = split
    hidden = base(input_ids=input_ids, use_cache=False).last_hidden_state
    keep = targets != IGNORE
    h, y = hidden[keep], targets[keep]
    rows = max(1, chunk_bytes // (4 * head.weight.shape[0]))
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, len(y), rows):
        if recompute:
            total = total + torch.utils.checkpoint.checkpoint(_head_loss, head, h[i:i + rows], y[i:i + rows],
                                                              use_reentrant=False)
        else:
            total = total + _head_loss(head, h[i:i + rows], y[i:i + rows])
    return total, keep.sum()


def split_rows(batches: Sequence[Batch], max_tokens: int | None, world: int = 1) -> list[Batch]:
    """Each batch cut into consecutive row groups of at most max_tokens tokens per rank
    (world × rows rows in all, so every rank of a torchrun job runs the same number of forwards).
    Token-weighted sums over the pieces equal those over the batches: only memory changes."""
    if max_tokens is None:
        return list(batches)
    out = []
    for x, y in batches:
        rows = max(1, max_tokens // max(1, x.shape[1])) * world
        out += [(x[i:i + rows], y[i:i + rows]) for i in range(0, x.shape[0], rows)]
    return out


def forgetting_batches(val_tokens: np.ndarray, seq_len: int, n_tokens: int, batch_size: int) -> list[Batch]:
    """ceil(n_tokens / seq_len) random windows of the held-out tokens, drawn at once with seed
    EVAL_SEED, then cut into batches: the sample depends on (tokens, seq_len, n_tokens) only, not
    on the batch size or the run, so every run measures the same tokens."""
    n_windows = max(1, -(-n_tokens // seq_len))
    x, y = sample_batch(val_tokens, n_windows, seq_len, EVAL_SEED, 0)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n_windows, batch_size)]


def source_tokens(data, splits: Sequence[str] = ("val",)) -> dict[str, np.ndarray]:
    """The tokens of each source of the data (e.g. code, prose), its documents of `splits` joined.
    Empty when the data records fewer than two sources."""
    out: dict[str, list[np.ndarray]] = {}
    for split in splits:
        try:
            starts, ids, names = data.documents(split)
        except (AttributeError, FileNotFoundError, KeyError):
            return {}
        if len(names) < 2:
            return {}
        tokens = data.val if split == "val" else data.train
        ends = np.append(starts[1:], len(tokens))
        for k, name in enumerate(names):
            out.setdefault(name, []).extend(np.asarray(tokens[a:b]) for a, b, i in zip(starts, ends, ids, strict=True) if i == k)
    return {name: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for name, parts in out.items()}


def source_batches(data, seq_len: int, n_tokens: int, batch_size: int,
                   splits: Sequence[str] = ("val",)) -> dict[str, list[Batch]]:
    """Forgetting samples per source of the held-out data (e.g. code, prose): each source's
    documents are joined and sampled like `forgetting_batches`. Empty when the data records no
    sources; a source with too few tokens for one window is left out."""
    return {name: forgetting_batches(tokens, seq_len, n_tokens, batch_size)
            for name, tokens in source_tokens(data, splits).items() if len(tokens) > seq_len + 1}


def balanced_batches(data, seq_len: int, n_tokens: int, batch_size: int,
                     splits: Sequence[str] = ("val",)) -> list[Batch] | None:
    """A forgetting sample with an equal share of tokens from every source (say half prose, half
    code), so its mean loss is the plain average of the sources' losses whatever their sizes in
    the corpus. None when the data has fewer than two usable sources."""
    usable = {n: t for n, t in source_tokens(data, splits).items() if len(t) > seq_len + 1}
    if len(usable) < 2:
        return None
    share = max(seq_len, n_tokens // len(usable))
    return [b for name in sorted(usable) for b in forgetting_batches(usable[name], seq_len, share, batch_size)]


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


EVAL_FORWARD_TOKENS = 16384  # default tokens per evaluation forward when no memory plan is given


def row_loss_sums(model: torch.nn.Module, input_ids: torch.Tensor, targets: torch.Tensor, plain: bool = False,
                  chunk_bytes: int = HEAD_CHUNK_BYTES, record: list | None = None,
                  ref: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(Σ token losses, number of tokens, Σ KL or None) of each row, in float64: what the standard
    error over sequences needs. The head and cross-entropy run on chunks of the scored positions as
    in `chunked_loss_sum` (each chunk's losses added to their rows); `plain` (FSDP2, whose root
    hooks gather the head) or a model whose logits are not a plain head: the full logits. From the
    same logits: each row's Σ KL(base ‖ model) when `ref` (the base's kept distributions of these
    positions, `BaseReference`) is given; `record` (a list) gets the base's distributions."""
    keep = targets != IGNORE
    split = None if plain else head_split(model)
    kl = torch.zeros(targets.shape[0], dtype=torch.float64, device=targets.device) if ref is not None else None
    rows = keep.nonzero()[:, 0]
    if split is None:
        logits = model(input_ids=input_ids, use_cache=False).logits
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                 reduction="none").view(targets.shape)
        if record is not None or ref is not None:  # the scored positions, in the head path's order
            flat = logits[keep]
            step = max(1, chunk_bytes // (4 * flat.shape[-1]))
            for i in range(0, len(flat), step):
                _base_terms(flat[i:i + step].float().log_softmax(-1), i, rows[i:i + step], record, ref, kl)
        return losses.double().sum(1), keep.sum(1), kl
    base, head = split
    hidden = base(input_ids=input_ids, use_cache=False).last_hidden_state
    h, y = hidden[keep], targets[keep]
    chunk = max(1, chunk_bytes // (4 * head.weight.shape[0]))
    sums = torch.zeros(targets.shape[0], dtype=torch.float64, device=targets.device)
    for i in range(0, len(y), chunk):
        logits = head(h[i:i + chunk]).float()
        if record is None and ref is None:
            losses = F.cross_entropy(logits, y[i:i + chunk], reduction="none")
        else:  # one log-softmax for the loss and the KL (cross_entropy is nll_loss of it, bit for bit)
            logp = logits.log_softmax(-1)
            losses = F.nll_loss(logp, y[i:i + chunk], reduction="none")
            _base_terms(logp, i, rows[i:i + chunk], record, ref, kl)
        sums.index_add_(0, rows[i:i + chunk], losses.double())
    return sums, keep.sum(1), kl


def ratio_se(sums: np.ndarray, counts: np.ndarray) -> float:
    """Standard error over sequences of Σ sums / Σ counts (see `LossStats`); rows with no token
    are no sequence. NaN below two sequences."""
    used = counts > 0
    sums, counts = sums[used], counts[used]
    n, total = len(counts), counts.sum()
    if n < 2:
        return float("nan")
    mu = sums.sum() / total
    return float(math.sqrt(n / (n - 1) * ((sums - mu * counts) ** 2).sum()) / total)


@dataclass
class LossStats:
    """A token-weighted mean loss and its standard error over sequences.

    Tokens of one sequence are not independent (a hard passage makes all its tokens hard), so
    the error is taken over sequences: with L_i, n_i the loss sum and token count of sequence i
    (n of them, N tokens in all), mean μ = Σ L_i / N and
        se² = n/(n−1) · Σ (L_i − μ n_i)² / N²,
    the ratio estimator's variance; with equal n_i it is sd(L_i/n_i)² / n (sd with ddof 1).
    The change between two models on the same rows takes L_i → L_i − L_i' (a paired error, far
    below either level's when the rows' difficulty is shared): `ratio_se` of the differences."""

    loss: float
    se: float
    tokens: int
    sequences: int
    row_sums: np.ndarray    # L_i of every row, in batch order (rows of no token: 0)
    row_tokens: np.ndarray  # n_i
    kl: float = float("nan")  # mean KL(base ‖ model) per token when a BaseReference was given


# Who watches evaluations (the training loop's progress, forgetless.train.progress): each is told
# expect(forwards) before a loss pass and done(tokens) after each forward, and forgetting(stats)
# when the forgetting sample was measured.
WATCHERS: list[Any] = []


@torch.no_grad()
def loss_stats(model: torch.nn.Module, batches: Sequence[Batch], device: torch.device,
               autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               dist=None, max_tokens: int | None = EVAL_FORWARD_TOKENS,
               base: BaseReference | None = None) -> LossStats:
    """Σ token losses / Σ tokens over all batches and its standard error over rows, in eval
    mode (dropout off).

    Memory stays bounded whatever the batch size: each batch is run in row groups of at most
    `max_tokens` tokens (None: whole batches) and the loss is taken in chunks of positions
    (`row_loss_sums`; under FSDP2 the plain forward, whose root hooks gather the head).
    `dist` (a `distributed.Dist`): under torchrun each rank takes its rows of every batch (as
    `distributed.local_rows`) and puts their sums in its places of the whole rows' vector, which
    is added over ranks, so every rank returns the single-process value. `base`: the mean
    KL(base ‖ model) per token too, from the same logits (`BaseReference`)."""
    d = dist or distributed.Dist()
    was_training = model.training
    model.eval()
    parts = split_rows(batches, max_tokens, d.world)
    mode = base.ready(d, device) if base is not None else None
    if mode == "compare" and len(base.pieces) != len(parts):
        mode = None  # the sample was cut otherwise than the base's: its positions do not line up
    for watcher in WATCHERS:
        watcher.expect(len(parts))
    rows, kept = [], []  # (3, rows of the piece): L_i, n_i, KL_i; the base's distributions
    try:
        for k, (x, y) in enumerate(parts):
            width, n_rows = x.numel(), x.shape[0]
            mine = torch.arange(n_rows).tensor_split(d.world)[d.rank]
            x, y = distributed.local_rows(x, y, d)
            ref = base.pieces[k] if mode == "compare" else None
            if ref is not None and len(ref[0]) != int((y != IGNORE).sum()):
                mode, ref = None, None
            record = [] if mode == "record" else None
            with autocast():
                loss, n, kl = row_loss_sums(model, x.to(device), y.to(device), d.strategy == "fsdp",
                                            record=record, ref=ref)
            kept.append(record)
            piece = torch.zeros(3, n_rows, dtype=torch.float64, device=device)
            if len(mine):  # a rank left without rows ran row 0 with nothing scored
                piece[0, mine.to(device)], piece[1, mine.to(device)] = loss, n.double()
                if kl is not None:
                    piece[2, mine.to(device)] = kl
            rows.append(piece)
            for watcher in WATCHERS:
                watcher.done(width)
    finally:
        model.train(was_training)
    # one more column: how many ranks compared with the base (all must, or the KL is not measured)
    agreed = torch.zeros(3, 1, dtype=torch.float64, device=device)
    agreed[2, 0] = float(mode == "compare")
    both = distributed.all_sum(torch.cat([*rows, agreed], 1), d).cpu().numpy()
    sums, counts, comparing = both[0, :-1], both[1, :-1], both[2, -1]
    total = counts.sum()
    loss = float(sums.sum() / total) if total > 0 else float("nan")
    kl = float("nan")
    if mode == "record":  # the base against itself
        base.keep(kept, d)
        kl = 0.0
    elif mode == "compare" and total > 0 and comparing == d.world:
        kl = float(both[2, :-1].sum() / total)
    return LossStats(loss, ratio_se(sums, counts), int(total), int((counts > 0).sum()), sums, counts, kl)


def mean_loss(model: torch.nn.Module, batches: Sequence[Batch], device: torch.device,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
              dist=None, max_tokens: int | None = EVAL_FORWARD_TOKENS) -> float:
    """Σ token losses / Σ tokens over all batches (see `loss_stats`)."""
    return loss_stats(model, batches, device, autocast, dist, max_tokens).loss


def forgetting_stats(model: torch.nn.Module, batches: Sequence[Batch], device: torch.device,
                     autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                     dist=None, max_tokens: int | None = EVAL_FORWARD_TOKENS,
                     base: BaseReference | None = None) -> dict[str, float]:
    """{"forgetting": mean loss, "forgetting_se": its standard error over the sample's windows},
    and "kl_to_base" (forgetless.metrics) when `base` can give it."""
    stats = loss_stats(model, batches, device, autocast, dist, max_tokens, base)
    for watcher in WATCHERS:  # the loop keeps the base's rows for the paired error of Δ
        watcher.forgetting(stats)
    point = {"forgetting": stats.loss, "forgetting_se": stats.se}
    if base is not None and not math.isnan(stats.kl):
        point["kl_to_base"] = stats.kl
    return point


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
    for watcher in WATCHERS:  # a generate call counts as one forward on the evaluation's bar
        watcher.expect(-(-len(prompts) // batch_size))
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
            for watcher in WATCHERS:  # no tokens: the cost line's tokens are the loss passes'
                watcher.done(0)
    finally:
        model.train(was_training)
    return texts
