"""The forgetless optimizer for Hugging Face `Trainer` and TRL `SFTTrainer`, in every PEFT order.

Three ways in, by when the trainable parameters are known:

    # 1. The model is final (full finetuning, or get_peft_model already called):
    opt = create_optimizer(model, family="auto", lr=1e-4)
    Trainer(model=model, args=args, train_dataset=ds, optimizers=(opt, None))

    # 2. The trainer wraps the model itself (TRL's peft_config): it builds the optimizer later.
    SFTTrainer(model=model, args=args, train_dataset=ds, peft_config=LoraConfig(...),
               optimizer_cls_and_kwargs=optimizer_factory(lr=1e-4))

    # 3. A Trainer class that builds it at train time from args.learning_rate / weight_decay:
    class MyTrainer(ForgetlessTrainerMixin, SFTTrainer): ...   (see forgetless.integrations.trainer)

With `optimizers=(opt, None)` the Trainer builds its own learning-rate scheduler around `opt`, so
warm-up and decay in `TrainingArguments` still apply. An optimizer built before PEFT froze the base
weights holds no trainable parameter any more; it raises at its first step instead of training
nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from forgetless.optim import OPTIMIZERS, build, family_members
from forgetless.recommend.provenance import ModelFacts
from forgetless.recommend.resolve import resolve

log = logging.getLogger(__name__)

_HOW = ("call peft.get_peft_model(model, config) before create_optimizer, or let the trainer build "
        "it after wrapping: optimizer_cls_and_kwargs=forgetless.integrations.optimizer_factory(lr=...) "
        "or a ForgetlessTrainerMixin trainer")


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (its config and weights name the base)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _facts(model: nn.Module) -> tuple[str, ModelFacts | None]:
    """(name or folder, facts): a model loaded from a local folder is read from that folder, exactly
    as `forgetless recommend FOLDER` reads it (its forgetless run config included); otherwise the
    facts come from the config held in memory."""
    base = _unwrap(model)
    config = getattr(base, "config", None)
    cfg = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    name = str(cfg.get("_name_or_path") or getattr(base, "name_or_path", "") or "")
    if name and Path(name).is_dir():
        return name, None
    facts = ModelFacts(ref=name, names=[("config _name_or_path", name)] if name else [],
                       model_type=cfg.get("model_type"),
                       architectures=list(cfg.get("architectures") or []), config=cfg)
    return name, facts


def resolve_family(model: nn.Module, family: str = "auto") -> tuple[str, str]:
    """(forgetless optimizer name, why) for `family`: "auto", an optimizer name or a family name.

    "auto" is the resolver `forgetless recommend` and `forgetless finetune` use
    (`recommend.resolve.resolve`): a forgetless run config, then the provenance registry, then the
    weight fingerprint's headline (Adam-like -> adamw, Muon-like -> muon), else AdamW with a warning."""
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
    name, facts = _facts(model)
    # Below the fingerprint's confidence this is AdamW, with a warnings.warn a plain script shows.
    found = resolve(name or "model", facts=facts, module=_unwrap(model))
    return found.optimizer, found.summary() + ": " + " ".join(found.reasoning)


def _refuse_if_frozen(optimizer, args, kwargs) -> None:
    """Step pre-hook: an optimizer none of whose parameters requires grad would train nothing."""
    n = sum(len(g["params"]) for g in optimizer.param_groups)
    if not any(p.requires_grad for g in optimizer.param_groups for p in g["params"]):
        raise RuntimeError(
            f"forgetless optimizer: none of its {n} parameters requires grad any more, so this step "
            "would train nothing. It was built before PEFT froze the base model (TRL's SFTTrainer "
            f"with peft_config does that after you build it). To fix: {_HOW}.")


def create_optimizer(model: nn.Module, family: str = "auto", lr: float = 1e-4,
                     weight_decay: float = 0.0, **kwargs):
    """The matching optimizer for `model`'s trainable parameters (see `forgetless.optim.build` for
    `kwargs`). Refuses a model none of whose parameters requires grad."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"model: none of its parameters requires grad, so the optimizer would train "
                         f"nothing; unfreeze them, or for LoRA {_HOW}")
    name, why = resolve_family(model, family)
    log.info("forgetless: finetuning with %s (%s)", name, why)
    opt = build(model, name, lr=lr, weight_decay=weight_decay, **kwargs)
    # Checked at the first step (then dropped): PEFT may freeze these weights after this call.
    handle = None

    def check_once(optimizer, args, kw):
        _refuse_if_frozen(optimizer, args, kw)
        handle.remove()

    handle = opt.register_step_pre_hook(check_once)
    return opt


class OptimizerFactory:
    """For `optimizer_cls_and_kwargs`: the Trainer calls `OptimizerFactory()(model, **kwargs)` when it
    builds its optimizer, after any PEFT wrapping (transformers >= 5)."""

    def __init__(self, *params, **kwargs):
        if params or kwargs:  # an older Trainer passes parameter groups to the "class"
            raise TypeError("forgetless OptimizerFactory: this transformers version calls optimizer "
                            "classes with parameter groups, not with the model; use a "
                            "ForgetlessTrainerMixin trainer instead (forgetless.integrations)")

    def __call__(self, model: nn.Module, **kwargs) -> torch.optim.Optimizer:
        return create_optimizer(model, **kwargs)


def optimizer_factory(family: str = "auto", *, lr: float, weight_decay: float = 0.0,
                      **kwargs) -> tuple[type, dict]:
    """`(OptimizerFactory, kwargs)` to pass as `optimizer_cls_and_kwargs=` to `Trainer`/`SFTTrainer`.
    `lr` is required: the factory does not see `TrainingArguments.learning_rate`."""
    return OptimizerFactory, dict(family=family, lr=lr, weight_decay=weight_decay, **kwargs)
