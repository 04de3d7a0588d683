"""LoRA through PEFT: W x + (α / r) · B A x, with A (r × d_in) random and B (d_out × r) zero at start.

The paper (and Biderman et al. 2024) use α = 2r, so the update is scaled by 2 whatever the rank.
LoRA's A and B are ordinary 2-D parameters, so any optimizer of `forgetless.optim` trains them
(Muon orthogonalises each of A and B).
"""

from __future__ import annotations

import copy
import warnings

import peft
import torch
import transformers


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """Names (last component) of every linear layer but the output head, in model order."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head and not name.endswith("lm_head"):
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in names:
                names.append(leaf)
    return names


def apply_lora(
    model: transformers.PreTrainedModel,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
) -> peft.PeftModel:
    """Wrap `model` with LoRA adapters; only the adapters are trainable afterwards.

    alpha defaults to 2·rank; target_modules defaults to every linear layer but the output head.
    The base weights are frozen and left untouched (merging happens on a copy, `merge_lora`).
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    allowed = default_lora_targets(model)
    targets = list(target_modules) if target_modules else allowed
    unknown = [t for t in targets if t not in allowed]
    if unknown:
        raise ValueError(
            f"LoRA target_modules {unknown} are not linear layers of this model; allowed: {', '.join(allowed)}"
        )
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=float(2 * rank if alpha is None else alpha),
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type=peft.TaskType.CAUSAL_LM,
    )
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, config)


def merge_lora(model: peft.PeftModel) -> transformers.PreTrainedModel:
    """A plain model with W + (α/r)·B A folded into each target weight; `model` is not modified.

    Merging works on a deep copy because merging then un-merging in place would not restore the
    base weights bit for bit (floating-point rounding), and training may continue after a save.
    """
    return copy.deepcopy(model).merge_and_unload()
