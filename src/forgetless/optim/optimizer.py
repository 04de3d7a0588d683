"""One `torch.optim.Optimizer` for the whole family: each param group carries a `rule`.

- rule 'adamw': torch's own AdamW arithmetic (`torch.optim.adam.adam`, decoupled weight decay),
  so it matches `torch.optim.AdamW` step for step.
- every other rule (see `registry.OPTIMIZERS`):
      M <- beta M + (1 - beta) G                      (momentum as an EMA, as torch.optim.Muon)
      U  = (1 - beta) G + beta M  if nesterov else M
      W <- (1 - lr wd) W - lr s lmo(U)                (decoupled weight decay, unscaled lr)
  with s = update_rms / RMS(lmo(U)) so every step has RMS `update_rms` (0.2), except Muon, which
  uses Moonlight's fixed s = update_rms * sqrt(max(d_out, d_in)) exactly as
  `torch.optim.Muon(adjust_lr_fn="match_rms_adamw")` (its RMS is 0.2 only up to the
  Newton-Schulz approximation). Lion replaces U by sign-able c = beta1 M + (1 - beta1) G and
  then updates M <- beta2 M + (1 - beta2) G (Chen et al. 2023); its sign step is RMS-aligned too.

Same-shape matrices of a group are stacked, so one batched call (one `bmm` chain for Newton-Schulz)
serves them all. A group with `transposed=True` holds weights stored as (d_in, d_out) (GPT-2's
Conv1D): they are transposed before the LMO so the column/row rules see columns = inputs.

`distributed=True` runs the same arithmetic under torch.distributed, on FSDP2 shards (DTensor
parameters) or DDP replicas (plain parameters); see `sharded` for the scheme and its collectives.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as _torch_adam

from . import lmo, sharded
from .registry import OPTIMIZERS

_LMO: dict[str, Callable[[Tensor], Tensor]] = {
    "signsgd": lmo.sign,
    "lion": lmo.sign,
    "coltop1": lmo.coltop1,
    "rowtop1": lmo.rowtop1,
    "colnorm": lmo.colnorm,
    "rownorm": lmo.rownorm,
    "sgd": lmo.frobenius,
}
# Largest stacked batch (elements) one LMO call sees: 2^26 floats = 256 MB in fp32.
_MAX_BATCH_NUMEL = 2**26
_NS_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16}


def _rule_defaults(rule: str) -> dict[str, Any]:
    """Defaults that differ between rules; a group's explicit value always wins."""
    return {
        "nesterov": rule == "muon",
        "betas": {"adamw": (0.9, 0.999), "lion": (0.9, 0.99)}.get(rule, (0.9, 0.999)),
    }


class SteepestDescent(torch.optim.Optimizer):
    """Norm-constrained steepest descent with one rule per param group (see module docstring).

    Args (group defaults; every one may be set per group):
        rule: a name of `registry.OPTIMIZERS`.
        lr: learning rate (> 0); schedulers change `group["lr"]`.
        weight_decay: decoupled, W <- (1 - lr * weight_decay) W (>= 0).
        momentum: beta of the momentum EMA, in [0, 1) (LMO rules other than lion).
        nesterov: Nesterov momentum (default True for muon, False otherwise).
        betas: AdamW's (beta1, beta2) (default torch's (0.9, 0.999)); Lion's (default (0.9, 0.99)).
        eps: AdamW's epsilon.
        update_rms: target RMS of an LMO step (0.2); None applies lmo(M) unscaled.
        ns_steps, ns_coefficients: Newton-Schulz iteration of muon.
        ns_dtype: "auto" (bf16 on CUDA, fp32 elsewhere), "float32", "bfloat16" or "float16".
        transposed: the group's matrices are stored (d_in, d_out).
        foreach: passed to torch's AdamW arithmetic (None lets torch choose).
    Optimizer-wide:
        distributed: the model runs under torch.distributed (needs an initialised process
            group). DTensor parameters (FSDP2, `fully_shard`) are updated shard by shard, plain
            parameters are taken as DDP replicas; either way the result equals the
            single-process step. Matrix rules orthogonalise/normalise each matrix on one rank
            only (matrix j of a group on rank j % world size). See `forgetless.optim.sharded`.
        process_group: the group of the DDP replicas (None: the default group). DTensor
            parameters use the process group of their own device mesh.
    """

    def __init__(
        self,
        params: Any,
        rule: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool | None = None,
        betas: tuple[float, float] | None = None,
        eps: float = 1e-8,
        update_rms: float | None = 0.2,
        ns_steps: int = lmo.NS_STEPS,
        ns_coefficients: tuple[float, float, float] = lmo.NS_COEFFICIENTS,
        ns_dtype: str = "auto",
        transposed: bool = False,
        foreach: bool | None = None,
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        # set before super().__init__, which calls add_param_group, which checks DTensors
        self.distributed = sharded.check_distributed(distributed, process_group)
        self.process_group = process_group
        defaults = dict(rule=rule, lr=lr, weight_decay=weight_decay, momentum=momentum,
                        nesterov=nesterov, betas=betas, eps=eps, update_rms=update_rms,
                        ns_steps=ns_steps, ns_coefficients=tuple(ns_coefficients),
                        ns_dtype=ns_dtype, transposed=transposed, foreach=foreach)
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer pickles (and deep-copies) only defaults, state and param_groups
        return {**super().__getstate__(), "distributed": self.distributed,
                "process_group": self.process_group}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # load_state_dict calls it too, without our attributes
        self.__dict__.setdefault("distributed", False)
        self.__dict__.setdefault("process_group", None)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["rule"] in OPTIMIZERS:
            for key, value in _rule_defaults(group["rule"]).items():
                if group[key] is None:
                    group[key] = value
        _validate(group)
        sharded.check_group(group, self.distributed)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["rule"] == "adamw":
                self._adamw(group, params)
            else:
                self._lmo_step(group, params)
        return loss

    def _adamw(self, group: dict[str, Any], params: list[Tensor]) -> None:
        grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("sparse gradients are not supported")
            state = self.state[p]
            if not state:  # same layout as torch.optim.AdamW, so its state dicts read alike
                scalar = torch.float64 if torch.get_default_dtype() == torch.float64 \
                    else torch.float32
                state["step"] = torch.tensor(0.0, dtype=scalar)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        _torch_adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=group["foreach"],
                    has_complex=any(torch.is_complex(p) for p in params),
                    decoupled_weight_decay=True, amsgrad=False, beta1=beta1, beta2=beta2,
                    lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                    maximize=False)

    def _lmo_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if self.distributed:
            sharded.lmo_step(self, group, params)
            return
        grads = [p.grad for p in params]
        bufs = self._momentum_buffers(params)
        self._begin(group, params, grads, bufs)
        self._apply_lmo(group, params, grads, bufs)
        self._end(group, grads, bufs)

    def _momentum_buffers(self, params: list[Tensor]) -> list[Tensor]:
        bufs = []
        for p in params:
            state = self.state[p]
            if not state:  # zeros_like of a DTensor is a DTensor: FSDP2 state stays sharded
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])
        return bufs

    @staticmethod
    def _begin(group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
               bufs: list[Tensor]) -> None:
        """Momentum EMA and decoupled weight decay, element-wise (so shards work alike)."""
        if group["rule"] != "lion":  # Lion reads its momentum before updating it, in _end
            torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
        if group["weight_decay"] != 0:
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])

    @staticmethod
    def _end(group: dict[str, Any], grads: list[Tensor], bufs: list[Tensor]) -> None:
        if group["rule"] == "lion":
            torch._foreach_lerp_(bufs, grads, 1 - group["betas"][1])

    @staticmethod
    def _batches(group: dict[str, Any], shapes: list[torch.Size]
                 ) -> list[tuple[tuple[int, ...], list[int], list[bool]]]:
        """(stacked shape, indices, Muon flips) of each batched LMO call over `shapes`."""
        # Muon's step does not depend on orientation, so (m, n) and (n, m) matrices share one
        # batch, all laid out with rows <= columns (the cheaper Gram matrix for Newton-Schulz).
        muon = group["rule"] == "muon"
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, s in enumerate(shapes):
            shape = tuple(s) if len(s) == 2 else (1, math.prod(s))
            by_shape[tuple(sorted(shape)) if muon else shape].append(i)
        batches = []
        for shape, all_idx in by_shape.items():
            # bounded batches keep the extra memory small even for 7B-sized matrices
            per_batch = max(1, _MAX_BATCH_NUMEL // math.prod(shape))
            for start in range(0, len(all_idx), per_batch):
                idx = all_idx[start:start + per_batch]
                batches.append((shape, idx, [muon and shapes[i][0] > shapes[i][1] for i in idx]))
        return batches

    def _apply_lmo(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                   bufs: list[Tensor]) -> None:
        """W <- W - lr s lmo(U) for whole (unsharded) tensors, one batched call per shape."""
        for shape, idx, flip in self._batches(group, [p.shape for p in params]):
            stacked = params[idx[0]].new_empty((len(idx), *shape))
            for k, (i, f) in enumerate(zip(idx, flip, strict=True)):
                self._fill(group, stacked[k].mT if f else stacked[k].view(params[i].shape),
                           grads[i], bufs[i])
            direction, alpha = self._oriented_direction(group, stacked)
            targets = [params[i] for i in idx]
            deltas = [d.mT if f else d.view_as(t)
                      for d, t, f in zip(direction.unbind(0), targets, flip, strict=True)]
            torch._foreach_add_(targets, deltas, alpha=-group["lr"] * alpha)

    def _oriented_direction(self, group: dict[str, Any], stacked: Tensor) -> tuple[Tensor, float]:
        """`_direction`, with a transposed group flipped so the column/row rules see columns =
        inputs (Muon, sign and Frobenius rules do not depend on orientation)."""
        flip = group["transposed"] and group["rule"] != "muon"
        direction, alpha = self._direction(group, stacked.mT if flip else stacked)
        return (direction.mT if flip else direction), alpha

    @staticmethod
    def _fill(group: dict[str, Any], out: Tensor, grad: Tensor, buf: Tensor) -> None:
        """Write the matrix the LMO sees into `out` (a view into the stacked batch)."""
        if group["rule"] == "lion":  # c = beta1 m + (1 - beta1) g
            torch.lerp(buf, grad, 1 - group["betas"][0], out=out)
        elif group["nesterov"]:  # (1 - beta) g + beta m
            torch.lerp(grad, buf, group["momentum"], out=out)
        else:
            out.copy_(buf)

    @staticmethod
    def _direction(group: dict[str, Any], m: Tensor) -> tuple[Tensor, float]:
        """lmo(M) times its scale, and a shared scalar factor (Muon's fixed Moonlight scale)."""
        target = group["update_rms"]
        if group["rule"] == "muon":
            dtype = _NS_DTYPES[group["ns_dtype"]]
            if dtype is None:
                dtype = torch.bfloat16 if m.is_cuda else torch.float32
            d = lmo.newton_schulz(m, group["ns_steps"], group["ns_coefficients"], dtype=dtype)
            scale = 1.0 if target is None else target * math.sqrt(max(m.shape[-2:]))
            return d, scale
        d = _LMO[group["rule"]](m)
        if target is None:
            return d, 1.0
        rms = d.square().mean(dim=(-2, -1), keepdim=True).sqrt()
        # An all-zero momentum gives lmo = 0; the clamp keeps that step at 0 instead of NaN.
        return d * (target / rms.clamp_min(torch.finfo(d.dtype).tiny)), 1.0


def _validate(group: dict[str, Any]) -> None:
    """Reject a bad group with a message naming the field and the allowed values."""
    rule = group["rule"]
    if rule not in OPTIMIZERS:
        raise ValueError(f"rule {rule!r} is unknown; allowed values: {', '.join(OPTIMIZERS)}")
    lr = group["lr"]
    if isinstance(lr, Tensor) or not lr > 0:
        raise ValueError(f"lr must be a float > 0, got {lr!r}")
    if not group["weight_decay"] >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']!r}")
    if not 0 <= group["momentum"] < 1:
        raise ValueError(f"momentum must be in [0, 1), got {group['momentum']!r}")
    betas = group["betas"]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two values in [0, 1), got {betas!r}")
    if group["ns_dtype"] not in _NS_DTYPES:
        raise ValueError(f"ns_dtype {group['ns_dtype']!r} is unknown; allowed values: "
                         f"{', '.join(_NS_DTYPES)}")
    if group["update_rms"] is not None and not group["update_rms"] > 0:
        raise ValueError(f"update_rms must be > 0 or None, got {group['update_rms']!r}")
    if not int(group["ns_steps"]) >= 1:
        raise ValueError(f"ns_steps must be an integer >= 1, got {group['ns_steps']!r}")
    if not OPTIMIZERS[rule].element_wise:
        for p in group["params"]:
            if p.ndim != 2:
                raise ValueError(
                    f"rule {rule!r} needs 2-D matrices but got a parameter of shape "
                    f"{tuple(p.shape)}; allowed: 2-D parameters only (route the others to "
                    "'adamw', or use an element-wise rule: "
                    f"{', '.join(n for n, i in OPTIMIZERS.items() if i.element_wise)})"
                )
