"""One `torch.optim.Optimizer` for the whole family: each param group carries a `rule`.

The arithmetic lives in `functional` (its docstring has the update of every rule), the facts of
each rule in its `registry` record; this class holds the state and the param groups:
- a rule without an LMO (adamw) runs torch's own AdamW arithmetic (`torch.optim.adam.adam`,
  decoupled weight decay), so it matches `torch.optim.AdamW` step for step, state dict included;
- every other rule keeps one `momentum_buffer` per parameter and runs `functional.lmo_step`.

`distributed=True` runs the same arithmetic under torch.distributed, on FSDP2 shards (DTensor
parameters) or DDP replicas (plain parameters); see `sharded` for the scheme and its collectives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import functional, lmo, sharded
from .registry import OPTIMIZERS


class SteepestDescent(torch.optim.Optimizer):
    """Norm-constrained steepest descent with one rule per param group (see module docstring).

    Args (group defaults; every one may be set per group):
        rule: a name of `registry.OPTIMIZERS`.
        lr: learning rate (> 0); schedulers change `group["lr"]`.
        weight_decay: decoupled, W <- (1 - lr * weight_decay) W (>= 0).
        momentum: beta of the momentum EMA, in [0, 1) (rules of momentum_kind "ema").
        nesterov: Nesterov momentum (default False; a record's `defaults` may differ: muon True).
        betas: AdamW's (beta1, beta2) (default torch's (0.9, 0.999)); Lion's (default (0.9, 0.99)).
        eps: AdamW's epsilon.
        update_rms: target RMS of an LMO step (0.2); None applies lmo(M) unscaled.
        ns_steps, ns_coefficients: Newton-Schulz iteration of muon.
        ns_dtype: "auto" (bf16 on CUDA, fp32 elsewhere), "float32", "bfloat16" or "float16".
        transposed: the group's matrices are stored (d_in, d_out).
        foreach: passed to torch's AdamW arithmetic (None lets torch choose).
        A registered rule's own `lmo_options` are group keys too, defaulted from its record.
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
            for key, value in functional.group_defaults(group["rule"]).items():
                if group.get(key) is None:  # a registered rule may bring its own options
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
            if OPTIMIZERS[group["rule"]].lmo_fn is None:  # AdamW: torch's arithmetic
                functional.adamw(group, params, self.state)
                continue
            grads = [p.grad for p in params]
            bufs = functional.momentum_buffers(self.state, params)
            if self.distributed:
                sharded.lmo_step(group, params, grads, bufs, self.process_group)
            else:
                functional.lmo_step(group, params, grads, bufs)
        return loss


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
    if group["ns_dtype"] not in lmo.NS_DTYPES:
        raise ValueError(f"ns_dtype {group['ns_dtype']!r} is unknown; allowed values: "
                         f"{', '.join(lmo.NS_DTYPES)}")
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
