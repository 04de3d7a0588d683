"""Which matrix of a causal LM is which: module kinds, layer indices and weight orientation.

The probes speak of module *kinds* (q, k, v, o, gate, up, down, head, embed) so that a Llama, a
Qwen and a GPT-2 checkpoint can be compared side by side. Every weight is handed out in the
`y = W x` orientation, W of shape (d_out, d_in): GPT-2's `Conv1D` stores (d_in, d_out) and is
transposed, and its fused `c_attn` (d_in, 3d) is split into q, k and v.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

try:  # GPT-2 style layers; absent only in very old transformers.
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = ()  # type: ignore[assignment,misc]

HIDDEN_KINDS = ("q", "k", "v", "o", "gate", "up", "down")
KINDS = (*HIDDEN_KINDS, "head", "embed")

# Last name component (or "parent.last" where the last one is ambiguous) -> kind.
_BY_NAME = {
    # Llama, Mistral, Qwen, Gemma, OLMo, ...
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
    "lm_head": "head", "embed_tokens": "embed",
    # OPT / BART style
    "out_proj": "o", "fc1": "up", "fc2": "down",
    # GPT-2
    "attn.c_proj": "o", "mlp.c_fc": "up", "mlp.c_proj": "down", "wte": "embed", "wpe": "embed",
}
# Fused projections split into equal row blocks, in this order (GPT-2's c_attn is [q; k; v]).
_FUSED = {"attn.c_attn": ("q", "k", "v"), "mlp.gate_up_proj": ("gate", "up")}
_WRAPPERS = {"base_layer", "linear", "module"}  # PEFT / wrapper suffixes to look through


@dataclass(frozen=True)
class MatrixRef:
    """One logical matrix: `module` holds it, rows [row0, row1) of its (d_out, d_in) weight."""

    name: str  # e.g. "model.layers.3.self_attn.q_proj" (GPT-2 fused parts get ".q" etc.)
    kind: str  # one of KINDS, or "other"
    layer: int | None  # transformer block index, None for embeddings / head
    module: nn.Module
    row0: int
    row1: int

    @property
    def hidden(self) -> bool:
        return self.kind in HIDDEN_KINDS

    def weight(self) -> torch.Tensor:
        """The (d_out, d_in) weight of this matrix (a view, no copy)."""
        return oriented_weight(self.module)[self.row0 : self.row1]


def _clean_parts(name: str) -> list[str]:
    parts = [p for p in name.split(".") if p]
    while parts and parts[-1] in _WRAPPERS:
        parts.pop()
    return parts


def module_kind(name: str) -> str | tuple[str, ...]:
    """Kind of the module called `name`; a tuple of kinds for a fused projection, else "other"."""
    parts = _clean_parts(name)
    if not parts:
        return "other"
    last, pair = parts[-1], ".".join(parts[-2:])
    if pair in _FUSED:
        return _FUSED[pair]
    return _BY_NAME.get(pair, _BY_NAME.get(last, "other"))


def layer_index(name: str) -> int | None:
    """Index of the transformer block a module lives in: the first integer name component."""
    match = re.search(r"\.(\d+)(\.|$)", "." + name)
    return int(match.group(1)) if match else None


def is_linear(module: nn.Module) -> bool:
    """Linear maps the probes hook: `nn.Linear` and GPT-2's `Conv1D`."""
    return isinstance(module, nn.Linear) or (bool(Conv1D) and isinstance(module, Conv1D))


def oriented_weight(module: nn.Module) -> torch.Tensor:
    """Weight as (d_out, d_in): `Conv1D` stores its transpose (y = x W + b)."""
    if bool(Conv1D) and isinstance(module, Conv1D):
        return module.weight.t()
    return module.weight


def iter_matrices(model: nn.Module, include_embed: bool = True) -> Iterator[MatrixRef]:
    """Every linear (and embedding) matrix of `model`, fused ones split, tied weights once.

    PEFT adapters (`lora_A`, `lora_B`, ...) are skipped: merge a LoRA model before probing it.
    """
    seen: set[int] = set()
    for name, module in model.named_modules():
        if "lora_" in name or "modules_to_save" in name:
            continue
        is_embed = isinstance(module, nn.Embedding)
        if not (is_linear(module) or (include_embed and is_embed)):
            continue
        if id(module.weight) in seen:  # tied input/output embeddings counted once
            continue
        seen.add(id(module.weight))
        kind = module_kind(name)
        if is_embed and kind == "other":
            kind = "embed"
        layer = None if kind in ("head", "embed") else layer_index(name)
        d_out = oriented_weight(module).shape[0]
        if isinstance(kind, tuple):
            step = d_out // len(kind)
            for i, part in enumerate(kind):
                yield MatrixRef(f"{name}.{part}", part, layer, module, i * step, (i + 1) * step)
        else:
            yield MatrixRef(name, kind, layer, module, 0, d_out)
