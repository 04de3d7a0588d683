"""The update of every rule, written once, as functions of tensor lists (torch's functional split).

`SteepestDescent.step()` (one process) and `sharded` (FSDP2 shards, DDP replicas) both call these;
a rule enters only through its registry record (`registry.OptimizerInfo`), never by name here.

For a param group with rule r (record `info`), gradient G and momentum buffer M of a matrix W
stored (d_out, d_in), one step is

    M <- beta M + (1 - beta) G                       momentum_kind "ema" (an EMA, as torch's Muon)
    U  = (1 - beta) G + beta M   if nesterov, else M
    W <- (1 - lr wd) W - lr s lmo(U)                 decoupled weight decay, unscaled lr

    momentum_kind "lion" (Chen et al. 2023): U = beta1 M + (1 - beta1) G, and only after the step
    M <- beta2 M + (1 - beta2) G.

with lmo = info.lmo_fn, the maximiser of <U, D> over ||D||_{p->q} <= 1 (see `lmo`), and s the
scale: scaling "rms" takes s = update_rms / RMS(lmo(U)) per matrix, so every step has RMS
update_rms (0.2, Moonlight's alignment; an all-zero U keeps a zero step); scaling "moonlight"
(Muon) takes the fixed s = update_rms sqrt(max(d_out, d_in)), as
`torch.optim.Muon(adjust_lr_fn="match_rms_adamw")`. update_rms=None applies lmo(U) unscaled.
A record without lmo_fn is AdamW, run by torch's own arithmetic (`adamw`).

Batching: same-shape matrices of a group are stacked into (B, d_out, d_in) so one LMO call (one
`bmm` chain for Newton-Schulz) serves them all; other shapes are flattened to (1, numel). An
orientation-free rule (lmo(U^T) = lmo(U)^T, Muon) also stacks (n, m) with (m, n), tall ones
transposed so rows <= columns (the cheaper Gram matrix). A group with `transposed=True` holds
weights stored (d_in, d_out) (GPT-2's Conv1D); they are transposed before the LMO so the
column/row rules see columns = inputs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as _torch_adam

from .registry import OPTIMIZERS

# Largest stacked batch (elements) one LMO call sees: 2^26 floats = 256 MB in fp32.
MAX_BATCH_NUMEL = 2**26
Batch = tuple[tuple[int, ...], list[int], list[bool]]


def group_defaults(rule: str) -> dict[str, Any]:
    """Param-group defaults of `rule`: the optimizer's, then the record's own (group values win)."""
    return {"nesterov": False, "betas": (0.9, 0.999), **OPTIMIZERS[rule].defaults}


def momentum_buffers(state: MutableMapping[Tensor, dict], params: list[Tensor]) -> list[Tensor]:
    """Each parameter's momentum buffer in `state` (the optimizer's), made zero on first use."""
    bufs = []
    for p in params:
        s = state[p]
        if not s:  # zeros_like of a DTensor is a DTensor: FSDP2 state stays sharded
            s["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        bufs.append(s["momentum_buffer"])
    return bufs


def begin(group: Mapping[str, Any], params: list[Tensor], grads: list[Tensor],
          bufs: list[Tensor]) -> None:
    """Momentum EMA and decoupled weight decay, element-wise (so shards work alike)."""
    if OPTIMIZERS[group["rule"]].momentum_kind == "ema":  # Lion updates M after the step (end)
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
    if group["weight_decay"] != 0:
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])


def end(group: Mapping[str, Any], grads: list[Tensor], bufs: list[Tensor]) -> None:
    """Lion's second EMA, M <- beta2 M + (1 - beta2) G (nothing for the other rules)."""
    if OPTIMIZERS[group["rule"]].momentum_kind == "lion":
        torch._foreach_lerp_(bufs, grads, 1 - group["betas"][1])


def lmo_input(group: Mapping[str, Any], grad: Tensor, buf: Tensor, out: Tensor | None = None
              ) -> Tensor:
    """U, the matrix the LMO sees, written into `out` (e.g. a view into a stacked batch)."""
    out = torch.empty_like(buf) if out is None else out
    if OPTIMIZERS[group["rule"]].momentum_kind == "lion":  # c = beta1 m + (1 - beta1) g
        torch.lerp(buf, grad, 1 - group["betas"][0], out=out)
    elif group["nesterov"]:  # (1 - beta) g + beta m
        torch.lerp(grad, buf, group["momentum"], out=out)
    else:
        out.copy_(buf)
    return out


def batches(rule: str, shapes: list[torch.Size]) -> list[Batch]:
    """(stacked shape, indices, flips) of each batched LMO call over tensors of `shapes`."""
    free = OPTIMIZERS[rule].orientation_free
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, s in enumerate(shapes):
        shape = tuple(s) if len(s) == 2 else (1, math.prod(s))
        by_shape[tuple(sorted(shape)) if free else shape].append(i)
    out = []
    for shape, all_idx in by_shape.items():
        # bounded batches keep the extra memory small even for 7B-sized matrices
        per_batch = max(1, MAX_BATCH_NUMEL // math.prod(shape))
        for start in range(0, len(all_idx), per_batch):
            idx = all_idx[start:start + per_batch]
            out.append((shape, idx, [free and shapes[i][0] > shapes[i][1] for i in idx]))
    return out


def direction(rule: str, stacked: Tensor, *, update_rms: float | None = 0.2,
              transposed: bool = False, **lmo_options: Any) -> tuple[Tensor, float]:
    """s lmo(U) for a stack U (B, d_out, d_in), as (tensor, scalar factor): the factor is Muon's
    fixed Moonlight scale (1.0 for the RMS-scaled rules, whose scale is in the tensor).
    `transposed`: the matrices are stored (d_in, d_out); lmo_options: the record's lmo_options."""
    info = OPTIMIZERS[rule]
    flip = transposed and not info.orientation_free
    m = stacked.mT if flip else stacked
    d = info.lmo_fn(m, **lmo_options)
    alpha = 1.0
    if info.scaling == "moonlight":
        alpha = 1.0 if update_rms is None else update_rms * math.sqrt(max(m.shape[-2:]))
    elif update_rms is not None:
        rms = d.square().mean(dim=(-2, -1), keepdim=True).sqrt()
        # An all-zero momentum gives lmo = 0; the clamp keeps that step at 0 instead of NaN.
        d = d * (update_rms / rms.clamp_min(torch.finfo(d.dtype).tiny))
    return (d.mT if flip else d), alpha


def group_direction(group: Mapping[str, Any], stacked: Tensor) -> tuple[Tensor, float]:
    """`direction` with the options of param group `group`."""
    info = OPTIMIZERS[group["rule"]]
    return direction(group["rule"], stacked, update_rms=group["update_rms"],
                     transposed=group["transposed"], **{k: group[k] for k in info.lmo_options})


def apply(group: Mapping[str, Any], params: list[Tensor], grads: list[Tensor],
          bufs: list[Tensor]) -> None:
    """W <- W - lr s lmo(U) for whole (unsharded) tensors, one batched call per shape."""
    for shape, idx, flip in batches(group["rule"], [p.shape for p in params]):
        stacked = params[idx[0]].new_empty((len(idx), *shape))
        for k, (i, f) in enumerate(zip(idx, flip, strict=True)):
            lmo_input(group, grads[i], bufs[i],
                      out=stacked[k].mT if f else stacked[k].view(params[i].shape))
        d, alpha = group_direction(group, stacked)
        targets = [params[i] for i in idx]
        deltas = [x.mT if f else x.view_as(t)
                  for x, t, f in zip(d.unbind(0), targets, flip, strict=True)]
        torch._foreach_add_(targets, deltas, alpha=-group["lr"] * alpha)


def full_directions(group: Mapping[str, Any], mats: list[Tensor]) -> list[Tensor]:
    """s lmo(U) for whole matrices U, batched as `apply` does (the factor folded in)."""
    out: dict[int, Tensor] = {}
    for shape, idx, flip in batches(group["rule"], [m.shape for m in mats]):
        stacked = mats[idx[0]].new_empty((len(idx), *shape))
        for k, (i, f) in enumerate(zip(idx, flip, strict=True)):
            (stacked[k].mT if f else stacked[k]).copy_(mats[i])
        d, alpha = group_direction(group, stacked)
        if alpha != 1.0:  # Muon's fixed Moonlight scale
            d = d * alpha
        for k, (i, f) in enumerate(zip(idx, flip, strict=True)):
            out[i] = d[k].mT if f else d[k]
    return [out[i] for i in range(len(mats))]


def lmo_step(group: Mapping[str, Any], params: list[Tensor], grads: list[Tensor],
             bufs: list[Tensor]) -> None:
    """One single-process step of an LMO rule's group."""
    begin(group, params, grads, bufs)
    apply(group, params, grads, bufs)
    end(group, grads, bufs)


def adamw(group: Mapping[str, Any], params: list[Tensor],
          state: MutableMapping[Tensor, dict]) -> None:
    """One step of torch's own AdamW arithmetic (decoupled weight decay) on `params`."""
    grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
    for p in params:
        if p.grad.is_sparse:
            raise RuntimeError("sparse gradients are not supported")
        s = state[p]
        if not s:  # same layout as torch.optim.AdamW, so its state dicts read alike
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 \
                else torch.float32
            s["step"] = torch.tensor(0.0, dtype=scalar)
            s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        grads.append(p.grad)
        exp_avgs.append(s["exp_avg"])
        exp_avg_sqs.append(s["exp_avg_sq"])
        steps.append(s["step"])
    beta1, beta2 = group["betas"]
    _torch_adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=group["foreach"],
                has_complex=any(torch.is_complex(p) for p in params),
                decoupled_weight_decay=True, amsgrad=False, beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                maximize=False)
