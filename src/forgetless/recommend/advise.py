"""`forgetless recommend`: which optimizer and learning rates to finetune a checkpoint with.

The rule is the paper's (its Remark 2): finetune with the family of optimizer that pretrained the
model, full finetuning rather than LoRA, over a learning-rate sweep. The pretraining optimizer comes
from `recommend.resolve.resolve`, the one resolver `create_optimizer(family="auto")` and `forgetless
finetune` share: documented provenance (`provenance.json`) or, when that is unknown or the user
asks, the fingerprint's headline (Adam-like -> AdamW, Muon-like -> Muon), else AdamW with a warning.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from forgetless.optim import OPTIMIZERS, describe, same_family
from forgetless.recommend.provenance import model_facts
from forgetless.recommend.resolve import resolve, unknown_reason  # noqa: F401  (unknown_reason: re-exported)

TASK_KINDS = ("instruction", "reasoning", "code", "other")
# Task names the data box knows, by the kind of skill they teach (paper section 4.1).
_TASK_ALIASES = {
    "arith": "reasoning", "metamathqa": "reasoning", "math": "reasoning", "gsm8k": "reasoning",
    "instruct": "instruction", "alpaca": "instruction",
    "code": "code", "magicoder": "code",
}

# Learning-rate grids by model size: the CPU pilot of docs/pilot.md (tiny models), the paper's GPT-2
# grids (appendix A.1.1, ~124M) and its Llama-2-7B grids; (upper size bound, full grid, LoRA grid).
_GRIDS = (
    (20e6, [3e-5, 1e-4, 3e-4], [1e-3, 3e-3], "the CPU pilot in docs/pilot.md (models of a few M parameters)"),
    (1e9, [3e-5, 5e-5, 1e-4, 3e-4, 5e-4], [5e-4, 1e-3, 3e-3, 5e-3, 1e-2],
     "the paper's GPT-2-small grids (appendix A.1.1)"),
    (float("inf"), [1e-5, 2e-5, 5e-5, 1e-4], [5e-5, 1e-4, 2e-4, 5e-4],
     "the paper's Llama-2-7B grids (appendix A.1.1)"),
)


@dataclass
class Recommendation:
    model: str
    pretrain_optimizer: str | None  # a forgetless optimizer name, None when unknown
    how_known: str  # "provenance", "fingerprint" or "unknown"
    confidence: float | None  # the fingerprint's probability, when it decided
    family: str | None  # e.g. "l1->linf"
    optimizer: str  # what to finetune with
    method: str
    lr_grid: list[float]
    lora_lr_grid: list[float]
    weight_decay: float
    n_parameters: int | None
    reasoning: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    provenance_status: str | None = None  # "documented" or "assumed" when how_known is provenance
    summary: str = ""  # e.g. "adamw (the checkpoint's weights look Adam-like (element-wise), p = 0.97)"
    group: str | None = None  # the fingerprint's headline, when it was asked
    evidence: list[dict] = field(default_factory=list)  # the fingerprint's deciding features

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def count_parameters(config: dict) -> int | None:
    """Parameter count from a config alone: the model is built on the meta device (no memory)."""
    if not config.get("model_type"):
        return None
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # an architecture this transformers does not know: size unknown
        return None


def size_from_name(name: str) -> int | None:
    """Parameter count written in a model name ("Llama-2-7b-hf" -> 7e9, "SmolLM2-360M" -> 3.6e8),
    for hub names that are not in the local cache (their config cannot be read offline)."""
    match = re.search(r"(?<![\w.])(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z])", name.rsplit("/", 1)[-1])
    if not match:
        return None
    return int(float(match.group(1)) * (1e9 if match.group(2) in "bB" else 1e6))


def task_kind(task: str | None) -> str:
    if task is None:
        return "other"
    kind = _TASK_ALIASES.get(task.lower(), task.lower())
    if kind not in TASK_KINDS:
        raise ValueError(
            f"task: {task!r} is not a task kind; use one of {', '.join(TASK_KINDS)} "
            f"or a task name ({', '.join(sorted(_TASK_ALIASES))})"
        )
    return kind


def _family(name: str) -> str:
    info = describe(name)
    return info.family


def recommend(
    model: str | Path,
    task: str | None = None,
    optimizer: str | None = None,
    infer: bool = False,
) -> Recommendation:
    """Advise how to finetune `model` so that it forgets least for what it learns."""
    kind = task_kind(task)
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: {optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
    facts = model_facts(model)
    # The one resolver that create_optimizer(family="auto") and `forgetless finetune` use too; it
    # warns when it falls back to AdamW (not when the user pinned an optimizer).
    found = resolve(model, facts=facts, infer=infer, warn=optimizer is None)
    pretrain_opt, how, confidence = found.pretrain_optimizer, found.how_known, found.confidence
    reasoning, sources, cautions = found.reasoning, found.sources, found.cautions

    n_params = count_parameters(facts.config) or size_from_name(str(model))
    full_grid, lora_grid, grid_source = _grid_for(n_params)
    if n_params is not None:
        reasoning.append(f"The model has {n_params / 1e6:.1f}M parameters: grids from {grid_source}.")
    else:
        reasoning.append(f"The model size is unknown: grids from {grid_source}.")
    sources.append("Paper appendix A.1.1 (learning-rate grids); CPU pilot (docs/pilot.md)")

    if pretrain_opt is None:
        choice = optimizer or found.optimizer
        reasoning.append(
            "Its pretraining optimizer is unknown (no documented provenance, and the fingerprint "
            "could not tell); AdamW pretrained nearly every open model, so it is the default guess."
        )
    else:
        choice = optimizer or pretrain_opt
        reasoning.append(
            "Full finetuning with the pretraining optimizer's family gives the best "
            "learning-forgetting trade-off once the learning rate is swept, better than other "
            "optimizers and than LoRA (paper, section 2 and Remark 2)."
        )
        sources.append("Paper section 2 (Figures 1-3) and Remark 2")
    if optimizer is not None and pretrain_opt is not None and not same_family(optimizer, pretrain_opt):
        full_grid = [lr for lr in full_grid if lr <= full_grid[len(full_grid) // 2]]
        cautions.append(
            f"{optimizer} is not of the pretraining family ({_family(pretrain_opt)}): it will "
            "forget more at a given learning. Sweep the lower half of the learning-rate range, since "
            "a smaller learning rate forgets less (paper appendix B.1), and keep weight decay at 0 "
            "as all the paper's finetunes did."
        )
    family = _family(pretrain_opt) if pretrain_opt else None
    if family is not None and family == _family("muon") and kind == "reasoning":
        cautions.append(
            "Muon-family finetuning learned reasoning (math) less well than AdamW in the paper "
            "(section 4.1, Figure 6; it memorises more, section 4.2): the same-family rule still "
            "minimises forgetting, but compare against AdamW on your task before committing."
        )
    return Recommendation(
        model=str(model), pretrain_optimizer=pretrain_opt, how_known=how, confidence=confidence,
        family=family, optimizer=choice, method="full", lr_grid=full_grid, lora_lr_grid=lora_grid,
        weight_decay=0.0, n_parameters=n_params, reasoning=reasoning, sources=sources,
        cautions=cautions, provenance_status=found.status if how == "provenance" else None,
        summary=found.summary() if optimizer is None else f"{choice} (pinned)", group=found.group,
        evidence=found.evidence,
    )


def _grid_for(n_params: int | None) -> tuple[list[float], list[float], str]:
    size = n_params if n_params is not None else 1e8  # unknown size: the GPT-2-scale grid
    for bound, full, lora, source in _GRIDS:
        if size < bound:
            return list(full), list(lora), source
    raise AssertionError("the last grid has no upper bound")
