"""`create_optimizer`: a forgetless optimizer for Hugging Face `Trainer` and TRL `SFTTrainer`.

    opt = create_optimizer(model, family="auto", lr=1e-4)
    trainer = Trainer(model=model, args=args, train_dataset=ds, optimizers=(opt, None))

With `optimizers=(opt, None)` the Trainer builds its own learning-rate scheduler around `opt`, so
warm-up and decay in `TrainingArguments` still apply.
"""

from __future__ import annotations

import logging

from torch import nn

from forgetless.optim import OPTIMIZERS, build, family_members
from forgetless.recommend.provenance import ModelFacts, lookup

log = logging.getLogger(__name__)


def resolve_family(model: nn.Module, family: str = "auto") -> tuple[str, str]:
    """(forgetless optimizer name, why) for `family`: "auto", an optimizer name or a family name."""
    if family in OPTIMIZERS:
        return family, f"asked for {family}"
    if family != "auto":
        try:
            return family_members(family)[0], f"first member of family {family}"
        except ValueError:
            raise ValueError(
                f"family: {family!r} is neither 'auto', an optimizer ({', '.join(OPTIMIZERS)}) "
                f"nor a family ({', '.join(sorted({i.family for i in OPTIMIZERS.values()}))})"
            ) from None
    config = getattr(model, "config", None)
    cfg = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    name = str(cfg.get("_name_or_path") or getattr(model, "name_or_path", "") or "")
    facts = ModelFacts(ref=name, names=[("config _name_or_path", name)] if name else [],
                       model_type=cfg.get("model_type"),
                       architectures=list(cfg.get("architectures") or []), config=cfg)
    prov = lookup(facts)
    if prov is not None and prov.optimizer in OPTIMIZERS:
        return prov.optimizer, f"{prov.family} was pretrained with {prov.variant} ({prov.source})"
    log.warning("forgetless: the pretraining optimizer of %r is unknown; using adamw. "
                "Run `forgetless recommend --infer` on the checkpoint to infer it.", name or "model")
    return "adamw", "unknown provenance; AdamW is the usual pretraining optimizer"


def create_optimizer(model: nn.Module, family: str = "auto", lr: float = 1e-4,
                     weight_decay: float = 0.0, **kwargs):
    """The matching optimizer for `model` (see `forgetless.optim.build` for `kwargs`)."""
    name, why = resolve_family(model, family)
    log.info("forgetless: finetuning with %s (%s)", name, why)
    return build(model, name, lr=lr, weight_decay=weight_decay, **kwargs)
