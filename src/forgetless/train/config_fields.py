"""The pieces of the training configs (train/config.py) that other boxes and the study file share:
how a model-dependent default is written (ByModel, Same, Rule, by the model's size class), and
the checks of single fields and of rules between fields. A study's fields are the configs' fields
(sweep/study_fields.py), and it applies these same functions, so the command line, YAML files and
study files refuse the same things with the same message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from forgetless.counts import parse_count
from forgetless.models.names import PRESET_NAMES as PRESETS  # names only: no torch
from forgetless.models.names import SIZE_CLASSES
from forgetless.optim.names import OPTIMIZER_NAMES as OPTIMIZERS  # names only: no torch
from forgetless.untrusted import MAX_STEPS, MAX_TOKENS, at_most


@dataclass(frozen=True)
class ByModel:
    """A default that depends on the model preset (of the run, or of a finetune's base)."""

    values: dict[str, Any]
    otherwise: Any

    def pick(self, model: str | None) -> Any:
        return self.values.get(model, self.otherwise)

    def __str__(self) -> str:
        groups: dict[Any, list[str]] = {}
        for model, value in self.values.items():
            groups.setdefault(value, []).append(model)
        return "; ".join(f"{show(v)} for {'/'.join(ms)}" for v, ms in groups.items()) + f"; {show(self.otherwise)} otherwise"


def show(value: Any) -> str:
    """A default as a person writes it: 5M, 200k, 8B; anything else as str()."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        for suffix, unit in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
            if value >= unit and (value * 10) % unit == 0:
                return f"{value / unit:g}{suffix}"
    return str(value)


def by_size(cpu: Any, gpu: Any, paper: Any) -> ByModel:
    """A default per size class of the model (models/names.py SIZE_CLASSES): the paper's value for
    the paper class and for any model forgetless did not pretrain."""
    per_class = {"cpu": cpu, "gpu": gpu}
    return ByModel({m: per_class[c] for m, c in SIZE_CLASSES.items() if c in per_class}, paper)


@dataclass(frozen=True)
class Same:
    """A default copied from another field once that one is resolved."""

    field: str

    def __str__(self) -> str:
        return f"same as {self.field}"


@dataclass(frozen=True)
class Rule:
    """A default computed in `resolved()`; the text says how (for --help)."""

    text: str

    def __str__(self) -> str:
        return self.text


def parse_forgetting_budget(v: Any) -> float | str | None:
    """A forgetting budget as typed: 0.1 (nats) stays a number and '5%' a percentage; anything
    else is refused, naming the field (FinetuneConfig, ForgettingBudgetCallback)."""
    if v is None:
        return None
    text = str(v).strip()
    relative = text.endswith("%")
    try:
        number = float(text[:-1] if relative else text)
    except ValueError:
        number = None
    if isinstance(v, bool) or number is None or not math.isfinite(number):
        raise ValueError(f"forgetting_budget {v!r} is neither nats (a number such as 0.1) nor a share "
                         "of the base's forgetting loss (such as 5%)")
    if number <= 0:
        raise ValueError(f"forgetting_budget must be above 0 (nats, or a percentage); got {v!r}; "
                         "leave it unset for no budget")
    return f"{number:g}%" if relative else number


# Checks of one field that a study also applies (sweep/study_fields.py) to a field it declares
# from these configs: one function each, called by both.
def check_optimizer(v: str | None) -> str | None:
    if v is not None and v not in OPTIMIZERS:
        raise ValueError(f"optimizer {v!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
    return v


def check_model(v: str) -> str:
    if v not in PRESETS:
        raise ValueError(f"model {v!r} is not a preset; allowed: {', '.join(PRESETS)}")
    return v


def parse_steps(v: Any) -> Any:
    """Steps as typed: 400, 2k (whole numbers only), at most MAX_STEPS."""
    return None if v is None else at_most(parse_count(v, "steps", whole=True), "steps", MAX_STEPS)


def parse_tokens(v: Any) -> Any:
    """A token count as typed: 5M, 200k, 8B, at most MAX_TOKENS."""
    return None if v is None else at_most(parse_count(v, "tokens"), "tokens", MAX_TOKENS)


# Rules between fields, one declaration each: the configs' validators and the study file
# (sweep/study_fields.py) call the same function, so the command line refuses what a study refuses.
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")


def check_eval_every(steps: int | None, eval_every: int | None) -> None:
    """ValueError when a finetune would evaluate less often than once (both given)."""
    if steps is not None and eval_every is not None and eval_every > steps:
        raise ValueError(f"eval_every: {eval_every} is larger than steps ({steps}); allowed: 1 to {steps} "
                         "(evaluations every eval_every steps, and at the last step)")


def check_lora_fields(method: str, given: dict[str, Any]) -> None:
    """ValueError when a full finetune is given LoRA settings (`given`: LoRA field -> value)."""
    if method == "full" and given:
        (first, value), names = next(iter(given.items())), "/".join(given)
        shown = f"{value!r} is set" if len(given) == 1 else f"{', '.join(given)} are set"
        raise ValueError(f"{first}: {shown} but method is 'full'; allowed: method 'lora', or method 'full' "
                         f"without {names}")


# A field of another settings class that IS a training config's field (a study's, the memorisation
# test's): declared by the config, not restated.
def setting(cls: type[BaseModel], name: str, required: bool = False, **changes: Any) -> Any:
    """The field `name` of the training config `cls` as a study field: its checks (ge, gt, ...),
    description and default, with `changes` (e.g. default=None) or no default (`required`)."""
    field = FieldInfo.merge_field_infos(cls.model_fields[name], **changes)  # a copy: the config's is unchanged
    if required:  # merge_field_infos keeps the default it is given PydanticUndefined for
        field.default = PydanticUndefined
        field._attributes_set = {k: v for k, v in field._attributes_set.items() if k != "default"}
    return field


def setting_type(cls: type[BaseModel], name: str) -> Any:
    """The type of a config field with its checks, None left out: for the items of a study's
    lists (lrs, seeds), each of which is one run's value of that field."""
    field = cls.model_fields[name]
    args = [a for a in getattr(field.annotation, "__args__", ()) if a is not type(None)]
    inner = args[0] if len(args) == 1 and type(None) in getattr(field.annotation, "__args__", ()) else field.annotation
    return Annotated[(inner, *field.metadata)] if field.metadata else inner
