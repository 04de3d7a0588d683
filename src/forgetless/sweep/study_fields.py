"""The parts of a study file (sweep/study.py), each field declared by the training configs.

A study restates no training setting: where it names one (model, optimizer, tokens, decay, lr, seed,
task, method, lora_rank, lora_alpha, steps, eval_every, corpus, tokenizer, vocab_size), the field
is `setting(Config, name)`, the config's own field with its checks, description and default, and
its validators call the config's functions (train/config_fields.py). Where a study differs it says
so in the call: a field the study requires (`required=True`), or a default of None that means
"the training config decides" (lora_rank: the study requires one for lora; vocab_size: the
config's default for the model, resolved when the study expands). Rules between fields
(eval_every <= steps, no LoRA field on a full method) are the configs' rules, called here.

The study's own fields (names of bases and methods, lists of lrs and seeds, budgets' decay
branches, the sweep's eval-loss divergence check, what `forgetless reproduce` adds) are declared
here or in sweep/study.py and nowhere else.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgetless.analysis.memorization_config import MemorizationConfig
from forgetless.sweep import branches
from forgetless.train.config import FinetuneConfig, PretrainConfig, TrainConfig
from forgetless.train.config_fields import (
    check_eval_every,
    check_lora_fields,
    check_model,
    check_optimizer,
    parse_steps,
    parse_tokens,
    setting,
    setting_type,
)

Lr = setting_type(TrainConfig, "lr")  # positive, finite
Seed = setting_type(TrainConfig, "seed")  # >= 0
Method = setting_type(FinetuneConfig, "method")  # full | lora


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Presets keep every finetune at or below this share of its base's pretraining tokens (the
# paper's are 1.3-10%); forgetless.report.regime checks the same from the measured tokens.
MAX_FINETUNE_RATIO = 0.20


class DataSpec(_Strict):
    corpus: str = setting(PretrainConfig, "corpus")
    tokenizer: str | None = setting(PretrainConfig, "tokenizer")  # None: a BPE trained on the corpus
    # None: the pretraining config's default for each base's model (resolved, below)
    vocab_size: int | None = setting(PretrainConfig, "vocab_size")

    def resolved(self, model: str | None) -> dict:
        """The data of a cell whose base is `model` (None: an outside checkpoint), as hashed into
        its id: vocab_size filled as PretrainConfig.resolved() would fill it."""
        vocab = self.vocab_size or PretrainConfig.DEFAULTS["vocab_size"].pick(model)
        return {"corpus": self.corpus, "tokenizer": self.tokenizer, "vocab_size": vocab}


class PretrainSpec(_Strict):
    name: str | None = None  # label of the base; default: the optimizer's name
    model: str = setting(PretrainConfig, "model", required=True)
    optimizer: str = setting(PretrainConfig, "optimizer", required=True)
    # a list: one WSD trunk with a decay branch per budget (sweep.branches)
    tokens: int | list[int] = setting(PretrainConfig, "tokens", required=True)
    decay: float = setting(PretrainConfig, "decay")  # with a list of budgets: each branch's share of its budget
    compile_steps: int | None = Field(None, gt=0)  # with a list: torch.compile trunk pieces and branches this long
    lr: float = setting(PretrainConfig, "lr", default=PretrainConfig.DEFAULTS["lr"])
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)

    _model = field_validator("model")(check_model)
    _opt = field_validator("optimizer")(check_optimizer)

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("tokens: give a budget or a non-empty list of budgets")
            return [parse_tokens(v) for v in value]
        return parse_tokens(value)

    @model_validator(mode="after")
    def _branches(self) -> PretrainSpec:
        if isinstance(self.tokens, list):
            branches.check_plan(self.tokens, self.settings, self.decay)
        return self

    @property
    def budgets(self) -> list[int]:
        return self.tokens if isinstance(self.tokens, list) else [self.tokens]


class BaseSpec(_Strict):
    name: str
    checkpoint: str  # a local path or a Hugging Face hub name
    optimizer: str = setting(TrainConfig, "optimizer", required=True)  # the one that pretrained it, as documented

    _opt = field_validator("optimizer")(check_optimizer)


USER_DATA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")  # data.user_data.EXTENSIONS


class TaskSpec(_Strict):
    name: str = setting(FinetuneConfig, "task")  # a dataset may carry its file: "alpaca:/data/a.json"
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        from forgetless.data import TASKS

        # the user's own data, as finetune takes it (data.user_data.is_user_data, which imports torch)
        own = name.startswith("hf:") or Path(name).suffix.lower() in USER_DATA_EXTENSIONS
        if name.split(":", 1)[0] not in TASKS and not own:
            raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}, a data file "
                             f"({' '.join(USER_DATA_EXTENSIONS)}) or hf:NAME")
        return name


class DeprecatedName(UserWarning):
    """A study file uses a field's old name; it is read under the new one."""


# Fields that studies once named differently; old files still load (with a warning), and cells
# hash renamed fields under their old names (study.cell_id), so stored cells keep their ids.
# `diverge_factor` named the sweep's check on the eval loss (and was also handed to the training
# loop's check on the training loss, whose field it is): the sweep's check is now eval_diverge_factor.
RENAMED = {"rank": "lora_rank", "alpha": "lora_alpha", "divergence_factor": "eval_diverge_factor",
           "diverge_factor": "eval_diverge_factor"}


def renamed(data: Any, where: str, names: tuple[str, ...]) -> Any:
    """`data` with the old names among `names` replaced by the new ones, one warning per name."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for old in names:
        new = RENAMED[old]
        if old in data:
            if new in data:
                raise ValueError(f"{old}: give {new} only ({old} is its old name)")
            why = (" (the sweep's check on the evaluated loss; the training loss's check is the setting "
                   "diverge_factor, default 10)" if new == "eval_diverge_factor" else "")
            warnings.warn(f"{where}: '{old}' is now '{new}'{why}; rename it in the study file", DeprecatedName,
                          stacklevel=2)
            data[new] = data.pop(old)
    return data


class MethodSpec(_Strict):
    name: str | None = None  # default "full-adamw", "lora8-adamw"
    kind: Method = setting(FinetuneConfig, "method", required=True)
    optimizer: str = setting(FinetuneConfig, "optimizer", required=True)
    lora_rank: int | None = setting(FinetuneConfig, "lora_rank", default=None)  # required for lora (below)
    lora_alpha: float | None = setting(FinetuneConfig, "lora_alpha")  # None: the config's 2 x rank
    lrs: list[Lr] = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)

    _opt = field_validator("optimizer")(check_optimizer)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return renamed(data, "methods[]", ("rank", "alpha"))

    @field_validator("lrs")
    @classmethod
    def _lrs(cls, lrs: list[float]) -> list[float]:
        if len(set(lrs)) != len(lrs):
            raise ValueError(f"learning rates repeat: {lrs}")
        return lrs

    @model_validator(mode="after")
    def _rank(self) -> MethodSpec:
        if self.kind == "lora" and self.lora_rank is None:
            raise ValueError("lora_rank: a lora method needs a rank (e.g. lora_rank: 16)")
        check_lora_fields(self.kind, {k: v for k, v in (("lora_rank", self.lora_rank), ("lora_alpha", self.lora_alpha))
                                      if v is not None})
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return f"full-{self.optimizer}" if self.kind == "full" else f"lora{self.lora_rank}-{self.optimizer}"


class GridSpec(_Strict):
    tasks: list[TaskSpec] = Field(min_length=1)
    bases: list[str] | None = None  # names from pretrain/bases; None: all of them
    methods: list[MethodSpec] = Field(min_length=1)
    steps: int = setting(FinetuneConfig, "steps", required=True)
    eval_every: int = setting(FinetuneConfig, "eval_every", required=True)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)

    _steps = field_validator("steps", mode="before")(parse_steps)

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names(cls, tasks: Any) -> Any:
        if isinstance(tasks, list):
            return [{"name": t} if isinstance(t, str) else t for t in tasks]
        return tasks

    @model_validator(mode="after")
    def _interval(self) -> GridSpec:
        check_eval_every(self.steps, self.eval_every)
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods: two methods share a name: {labels}")
        return self


class MemorizationSpec(MemorizationConfig):
    """The memorisation test of a study (analysis/memorization_config.py), run once per seed of
    `seeds` (claim 7 is decided over seeds; without them, once with `seed`)."""

    model_config = ConfigDict(extra="forbid")
    seeds: list[Seed] | None = Field(None, min_length=1)

    def configs(self) -> list[MemorizationConfig]:
        fields = self.model_dump(exclude={"seeds"})
        return [MemorizationConfig(**{**fields, "seed": s}) for s in self.seeds or [self.seed]]


class ReproduceSpec(_Strict):
    """What `forgetless reproduce` runs beside the sweep (report/reproduce.py): the probes of every
    pretrained base, and the memorisation test (claim 7)."""

    probe_tokens: int = Field(16384, gt=0, description="held-out tokens per activation probe of a pretrained base")
    memorization: MemorizationSpec | None = Field(None, description="the memorisation test (None: not run)")
