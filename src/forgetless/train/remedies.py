"""Forgetting remedies beside the optimizer choice: replay, L2-SP and WiSE-FT.

replay  (Bethune et al. 2025, arXiv 2502.06042): a fraction r of the finetuning sequences is
        replaced by windows of the forgetting reference's *training* split. Micro-batch j (0-based,
        over the whole run) of B sequences carries
            n_j = ⌊(j+1)·r·B⌋ − ⌊j·r·B⌋
        replay sequences (its last n_j rows), so after J micro-batches exactly ⌊J·r·B⌋ sequences
        were replayed, even when r·B < 1 (r = 1% of 16 sequences: one replayed row every ~6
        micro-batches). The held-out split, which the forgetting sample is drawn from, is never read.
        A replay row is a window as wide as the batch, every position a target.
L2-SP   (Li et al. 2018): the loss gains (coef/2)·Σ‖θ − θ₀‖² over the trainable parameters, θ₀ the
        pretrained weights; its gradient coef·(θ − θ₀) is added to each parameter's gradient once
        per optimizer step, after the micro-batches' backward and before clipping, exactly as if the
        penalty were part of the (token-mean) loss. θ₀ lives beside θ: trainable-parameter memory
        doubles (nothing for LoRA's adapters to speak of).
WiSE-FT (Wortsman et al. 2022): after finetuning, the weights (1 − α)·θ₀ + α·θ for each α are
        evaluated like any eval point; α = 0 is the base and α = 1 the finetune, bit for bit
        (special-cased, not computed). The cost is evaluations only. For LoRA, θ₀ is the finished
        adapters with B = 0, so α scales the learned update: W + α·B·A.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from forgetless.data import sample_batch

Batch = tuple[torch.Tensor, torch.Tensor]
REPLAY_SEED_OFFSET = 10_007  # replay windows are not the pretraining run's own batches (seed, step)


# ----------------------------------------------------------------------------------------- replay
def replay_count(fraction: float, batch_size: int, index: int) -> int:
    """Replay sequences in micro-batch `index` (see the module docstring); exact rational arithmetic,
    so 1% of 100 sequences is one per batch, not sometimes zero from float rounding."""
    r = Fraction(str(fraction)) * batch_size
    return int((index + 1) * r) - int(index * r)  # int() of a non-negative Fraction is its floor


def replay_total(fraction: float, batch_size: int, micro_batches: int) -> int:
    """Replay sequences in the first `micro_batches` micro-batches: ⌊J·r·B⌋."""
    return int(micro_batches * Fraction(str(fraction)) * batch_size)


class Replay:
    """Mixes windows of `tokens` (a training split) into finetuning batches."""

    def __init__(self, tokens: np.ndarray, fraction: float, batch_size: int, seed: int = 0):
        if not 0 <= fraction < 1:
            raise ValueError(f"replay must be in [0, 1); got {fraction}")
        self.tokens, self.fraction, self.batch_size, self.seed = tokens, fraction, batch_size, seed

    def __call__(self, batch: Batch, index: int) -> tuple[Batch, int]:
        """(the batch with its last n_j rows replaced by replay windows, n_j)."""
        x, y = batch
        n = min(replay_count(self.fraction, self.batch_size, index), x.shape[0])
        if n == 0:
            return batch, 0
        width = x.shape[1]
        rx, ry = sample_batch(self.tokens, n, width, self.seed + REPLAY_SEED_OFFSET, index)
        return (torch.cat([x[: x.shape[0] - n], rx.to(x.dtype)]), torch.cat([y[: y.shape[0] - n], ry.to(y.dtype)])), n


# ----------------------------------------------------------------------------------------- L2-SP
def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def anchor_of(model: torch.nn.Module, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """θ₀: a detached copy of the trainable parameters now (on `device`, default their own)."""
    return {n: p.detach().to(device if device is not None else p.device, copy=True) for n, p in trainable(model)}


class L2SP:
    """The L2-SP pull towards `anchor` (name → θ₀) of the model's trainable parameters."""

    def __init__(self, model: torch.nn.Module, coef: float, anchor: Mapping[str, torch.Tensor]):
        if coef < 0:
            raise ValueError(f"l2sp must be >= 0; got {coef}")
        named = trainable(model)
        missing = [n for n, _ in named if n not in anchor]
        if missing:
            raise ValueError(f"l2sp: no pretrained value for {missing[:3]} (of {len(missing)})")
        self.coef = coef
        self.pairs = [(p, anchor[n].to(p.device)) for n, p in named]

    @torch.no_grad()
    def add_gradient(self) -> None:
        """grad += coef·(θ − θ₀) for every trainable parameter (a missing grad becomes that term)."""
        for p, p0 in self.pairs:
            term = (p.detach() - p0).mul_(self.coef)
            if p.grad is None:
                p.grad = term.to(p.dtype)
            else:
                p.grad.add_(term.to(p.grad.dtype))

    @torch.no_grad()
    def sq_distance(self) -> float:
        """Σ‖θ − θ₀‖² (the penalty is coef/2 times this)."""
        return float(sum(float((p.detach().float() - p0.float()).pow(2).sum()) for p, p0 in self.pairs))

    def penalty(self) -> float:
        return 0.5 * self.coef * self.sq_distance()


# ----------------------------------------------------------------------------------------- WiSE-FT
def interpolate(base_state: Mapping[str, torch.Tensor], finetuned_state: Mapping[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·base + α·finetuned, key by key. α = 0 returns the base tensors and α = 1 the
    finetuned ones themselves (bit for bit: 0·x + 1·y is not always y in floating point). Tensors
    that are not floating point (counters, masks) are taken from the finetune."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"wise: each alpha must be in [0, 1]; got {alpha}")
    if set(base_state) != set(finetuned_state):
        odd = sorted(set(base_state) ^ set(finetuned_state))
        raise ValueError(f"interpolate: the two states differ in keys, e.g. {odd[:3]}")
    if alpha == 0:
        return dict(base_state)
    if alpha == 1:
        return dict(finetuned_state)
    out = {}
    for k, ft in finetuned_state.items():
        b = base_state[k]
        if b.shape != ft.shape:
            raise ValueError(f"interpolate: {k} has shape {tuple(b.shape)} in the base and {tuple(ft.shape)} "
                             "in the finetune")
        out[k] = b * (1 - alpha) + ft.to(b.device) * alpha if ft.is_floating_point() else ft
    return out


def lora_base_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base of a LoRA finetune in adapter terms: the same A, B = 0 (so θ₀ + α·(θ − θ₀) is
    W + α·B·A, the learned update scaled, rather than a blend of two A's)."""
    return {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in state.items()}


@torch.no_grad()
def load_trainable(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    for n, p in trainable(model):
        p.copy_(state[n])


def wise_points(model: torch.nn.Module, base_state: Mapping[str, torch.Tensor], alphas: Iterable[float],
                evaluate: Callable[[], dict[str, Any]], done: Iterable[float] = ()) -> list[tuple[float, dict]]:
    """(α, evaluate() at the interpolated weights) for each α not in `done`, the model's
    trainable weights restored to the finetune afterwards (also when evaluation fails)."""
    finetuned = anchor_of(model)
    skip = set(done)
    out = []
    try:
        for alpha in alphas:
            if alpha in skip:
                continue
            load_trainable(model, interpolate(base_state, finetuned, alpha))
            out.append((alpha, evaluate()))
    finally:
        load_trainable(model, finetuned)
    return out


def wise_step(index: int) -> int:
    """The `step` of the index-th WiSE point: negative, so that no reader keyed on (run, step) or
    looking for step 0 (the base) or the largest step (the end) takes it for a trajectory point.
    The point's `wise` key holds α and `finetune_step` the step it was interpolated from."""
    return -(index + 1)
