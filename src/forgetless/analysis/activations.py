"""Activation probe: how sparse are the inputs and outputs of every linear layer (paper §3.1).

For one token's activation vector x ∈ R^d (the input or the output of a linear layer):

- sparsity     share of entries with |x_j| < τ · max_k |x_k|   (τ = `threshold`, default 0.01)
- l1_l2        ‖x‖₁ / (√d ‖x‖₂)                 in [1/√d, 1]; 1 = flat, 1/√d = one-hot
- hoyer        (√d − ‖x‖₁/‖x‖₂) / (√d − 1)       in [0, 1];    0 = flat, 1 = one-hot (Hoyer 2004)

Each figure is averaged over tokens with its standard deviation, per module and per module kind.
Statistics stream: each hook folds a batch into running sums (count, Σf, Σf²) kept on the model's
device, so memory does not grow with the token budget and no host sync happens per batch.
A token whose vector is exactly zero has no direction and is skipped.

Optimizers of the ℓ1→ℓ∞ family (SignSGD, Adam) should give sparser inputs than ℓ2→ℓ2 (Muon).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .modules import HIDDEN_KINDS, iter_matrices

METRICS = ("sparsity", "l1_l2", "hoyer")
SIDES = ("input", "output")


def token_stats(x: torch.Tensor, threshold: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token figures of activations `x` (..., d): returns ((N, 3) [sparsity, l1_l2, hoyer],
    (N,) bool mask of tokens with a nonzero vector)."""
    a = x.detach().reshape(-1, x.shape[-1]).float().abs()
    d = a.shape[-1]
    peak = a.amax(-1, keepdim=True)
    sparsity = (a < threshold * peak).sum(-1) / d  # bool sum: no float copy of the mask
    l1 = a.sum(-1)
    l2 = torch.linalg.vector_norm(a, dim=-1)
    valid = l2 > 0
    ratio = l1 / l2.clamp_min(torch.finfo(a.dtype).tiny)
    l1_l2 = ratio / math.sqrt(d)
    hoyer = (math.sqrt(d) - ratio) / (math.sqrt(d) - 1) if d > 1 else torch.zeros_like(ratio)
    return torch.stack([sparsity, l1_l2, hoyer], -1), valid


@dataclass
class Running:
    """Streaming count, sum and sum of squares of the three figures (float64)."""

    n: torch.Tensor | float = 0.0
    s: torch.Tensor | float = 0.0
    s2: torch.Tensor | float = 0.0

    def add(self, values: torch.Tensor, valid: torch.Tensor) -> None:
        v = values.double() * valid.unsqueeze(-1)  # masked, not indexed: no host sync
        self.n = self.n + valid.sum().double()
        self.s = self.s + v.sum(0)
        self.s2 = self.s2 + (v * v).sum(0)

    def merge(self, other: Running) -> Running:
        return Running(_cpu(self.n) + _cpu(other.n), _cpu(self.s) + _cpu(other.s), _cpu(self.s2) + _cpu(other.s2))

    def summary(self) -> dict[str, float]:
        n = float(_cpu(self.n))
        out: dict[str, float] = {"n": n}
        s = _cpu(self.s) if n else torch.full((3,), math.nan, dtype=torch.float64)
        s2 = _cpu(self.s2) if n else s
        for i, metric in enumerate(METRICS):
            mean = float(s[i]) / n if n else math.nan
            var = max(float(s2[i]) / n - mean * mean, 0.0) if n else math.nan
            out[metric], out[metric + "_std"] = mean, math.sqrt(var)
        return out


def _cpu(x: torch.Tensor | float) -> torch.Tensor:
    return x.detach().double().cpu() if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float64)


@dataclass
class ModuleActivations:
    name: str
    kind: str
    layer: int | None
    stats: dict[str, Running] = field(default_factory=lambda: {s: Running() for s in SIDES})


@dataclass
class ActivationReport:
    """Per-module running statistics of one model over one token sample."""

    modules: list[ModuleActivations]
    threshold: float
    n_tokens: int

    def per_module(self) -> list[dict]:
        """One row per module: name, kind, layer and {side}_{metric} (mean) / _std."""
        rows = []
        for m in self.modules:
            row: dict = {"name": m.name, "kind": m.kind, "layer": m.layer}
            for side in SIDES:
                for key, value in m.stats[side].summary().items():
                    row[f"{side}_{key}"] = value
            rows.append(row)
        return rows

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Pooled over all modules of a kind (and "hidden" = q..down): {kind: {side_metric: v}}."""
        pooled: dict[str, dict[str, Running]] = defaultdict(lambda: {s: Running() for s in SIDES})
        for m in self.modules:
            groups = [m.kind] + (["hidden"] if m.kind in HIDDEN_KINDS else [])
            for group in groups:
                for side in SIDES:
                    pooled[group][side] = pooled[group][side].merge(m.stats[side])
        out: dict[str, dict[str, float]] = {}
        for kind, sides in pooled.items():
            row: dict[str, float] = {}
            for side in SIDES:
                for key, value in sides[side].summary().items():
                    row[f"{side}_{key}"] = value
            out[kind] = row
        return out

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "n_tokens": self.n_tokens,
                "by_kind": self.by_kind(), "modules": self.per_module()}


class ActivationProbe:
    """Context manager: forward hooks on every linear layer, removed on exit.

    >>> with ActivationProbe(model) as probe:
    ...     model(input_ids)
    >>> probe.report().by_kind()["o"]["input_sparsity"]

    Hooks only read: the model's outputs are unchanged. Fused projections (GPT-2 `c_attn`) are
    recorded as their parts (q, k, v): same input, output split into equal blocks.
    """

    def __init__(self, model: nn.Module, threshold: float = 0.01, kinds: Iterable[str] | None = None):
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.model, self.threshold = model, threshold
        self.kinds = set(kinds) if kinds is not None else None
        self.modules: list[ModuleActivations] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.n_tokens = 0
        self._last: tuple | None = None  # (input tensor, its figures) of the latest hook call

    def __enter__(self) -> ActivationProbe:
        by_module: dict[int, tuple[nn.Module, list[ModuleActivations], list[tuple[int, int]]]] = {}
        for ref in iter_matrices(self.model, include_embed=False):
            if self.kinds is not None and ref.kind not in self.kinds:
                continue
            rec = ModuleActivations(ref.name, ref.kind, ref.layer)
            self.modules.append(rec)
            entry = by_module.setdefault(id(ref.module), (ref.module, [], []))
            entry[1].append(rec)
            entry[2].append((ref.row0, ref.row1))
        for module, recs, rows in by_module.values():
            self._handles.append(module.register_forward_hook(self._hook(recs, rows)))
        return self

    def _hook(self, recs: list[ModuleActivations], rows: list[tuple[int, int]]):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0]
            # q, k, v (and gate, up) read the very same tensor: compute its figures once.
            if self._last is not None and self._last[0] is x:
                values, valid = self._last[1]
            else:
                values, valid = token_stats(x, self.threshold)
                self._last = (x, (values, valid))
            for rec in recs:  # the parts of a fused projection share their input
                rec.stats["input"].add(values, valid)
            for rec, (r0, r1) in zip(recs, rows, strict=True):
                part = output if len(recs) == 1 else output[..., r0:r1]
                out_values, out_valid = token_stats(part, self.threshold)
                rec.stats["output"].add(out_values, out_valid)

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._last = None

    def report(self) -> ActivationReport:
        return ActivationReport(self.modules, self.threshold, self.n_tokens)


def token_windows(tokens: np.ndarray | torch.Tensor, n_tokens: int, seq_len: int) -> torch.Tensor:
    """A fixed sample: ⌈n_tokens / seq_len⌉ windows of `seq_len` tokens at evenly spaced offsets
    of a 1-D token array (deterministic, spread over the whole split). Returns (n, seq_len)."""
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    if tokens.ndim != 1 or len(tokens) < seq_len:
        raise ValueError(f"tokens must be 1-D with at least seq_len={seq_len} entries, got {tuple(tokens.shape)}")
    n = max(1, math.ceil(n_tokens / seq_len))
    starts = np.linspace(0, len(tokens) - seq_len, n).astype(np.int64)
    return torch.stack([tokens[s : s + seq_len] for s in starts])


@torch.no_grad()
def probe_activations(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 8,
    threshold: float = 0.01,
    kinds: Iterable[str] | None = None,
) -> ActivationReport:
    """Run `model` over token `windows` (n, T) in batches and return the activation statistics."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout off: we measure the model, not its noise
    try:
        with ActivationProbe(model, threshold, kinds) as probe:
            for i in range(0, len(windows), batch_size):
                batch = windows[i : i + batch_size].to(device)
                model(input_ids=batch, use_cache=False)
                probe.n_tokens += batch.numel()
    finally:
        model.train(was_training)
    return probe.report()
