"""The typed study file: what to pretrain, what to finetune, over which grid.

A study expands into cells. A cell is one training run with a fully resolved config; its id is
the first 16 hex digits of sha256 over that config as canonical JSON, so the same study run twice
(or two studies sharing a run) does no work twice. Names (of methods, bases) are labels only and
are left out of the id, so renaming a method does not re-run it.

    name: quick
    data: {corpus: stdlib, vocab_size: 4096}
    pretrain:                       # from-scratch bases: model preset x optimizer x budget x seeds
      - {name: adamw, model: micro, optimizer: adamw, tokens: 300k, lr: 3e-3, seeds: [0]}
    bases:                          # existing checkpoints (no pretraining cell)
      - {name: llama2-7b, checkpoint: meta-llama/Llama-2-7b-hf, optimizer: adamw}
    finetune:                       # one grid, or a list of grids (e.g. one per task)
      - tasks: [arith]
        bases: [adamw]              # default: every base
        steps: 60
        eval_every: 10
        seeds: [0]
        methods:
          - {kind: full, optimizer: adamw, lrs: [1e-4, 3e-4]}
          - {kind: lora, lora_rank: 8, optimizer: adamw, lrs: [1e-3, 3e-3]}

`settings` mappings (on a pretraining run, a grid, a method or a task) pass extra fields through
to the training box's `PretrainConfig` / `FinetuneConfig` (seq_len, batch_size, warmup, ...);
a method's settings override its grid's.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forgetless.counts import parse_count
from forgetless.errors import UserError, format_validation_error
from forgetless.sweep import branches
from forgetless.sweep.records import Cell
from forgetless.untrusted import MAX_TOKENS, at_most, load_yaml

PRESET_DIR = "presets"


class StudyError(UserError, ValueError):
    """A study file that cannot be run; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _parse_count(value: Any) -> int:
    return at_most(parse_count(value, "tokens"), "tokens", MAX_TOKENS)


def _check_optimizer(name: str) -> str:
    from forgetless.optim import OPTIMIZERS

    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return name


def _check_lr(lr: float) -> float:
    if not (lr > 0 and lr < float("inf")):
        raise ValueError(f"learning rates must be positive and finite; got {lr!r}")
    return lr


# Presets keep every finetune at or below this share of its base's pretraining tokens (the
# paper's are 1.3-10%); forgetless.report.regime checks the same from the measured tokens.
MAX_FINETUNE_RATIO = 0.20


class DataSpec(_Strict):
    corpus: str = "stdlib"
    tokenizer: str | None = None  # None: a BPE trained on the corpus
    vocab_size: int = Field(8192, gt=0)


class PretrainSpec(_Strict):
    name: str | None = None  # label of the base; default: the optimizer's name
    model: str  # a preset of forgetless.models (checked with the training config: importing
    #             the models box costs seconds, and `status`/`frontier` do not need it)
    optimizer: str
    tokens: int | list[int]  # a list: one WSD trunk with a decay branch per budget (sweep.branches)
    decay: float = Field(0.2, gt=0, lt=1)  # with a list of budgets: each branch's share of its budget
    compile_steps: int | None = Field(None, gt=0)  # with a list: torch.compile trunk pieces and branches this long
    lr: float = 3e-3
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)

    _opt = field_validator("optimizer")(_check_optimizer)
    _lr = field_validator("lr")(_check_lr)

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("tokens: give a budget or a non-empty list of budgets")
            return [_parse_count(v) for v in value]
        return _parse_count(value)

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
    optimizer: str  # the optimizer that pretrained it, as documented

    _opt = field_validator("optimizer")(_check_optimizer)


USER_DATA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")  # data.user_data.EXTENSIONS


class TaskSpec(_Strict):
    name: str  # a task of forgetless.data (a dataset may carry its file: "alpaca:/data/a.json")
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


# Fields that studies once named differently from the training config; old files still load.
RENAMED = {"rank": "lora_rank", "alpha": "lora_alpha", "divergence_factor": "diverge_factor"}


def _renamed(data: Any, where: str) -> Any:
    """`data` with old field names replaced by the training config's, one warning per name."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for old, new in RENAMED.items():
        if old in data:
            if new in data:
                raise ValueError(f"{old}: give {new} only ({old} is its old name)")
            warnings.warn(f"{where}: '{old}' is now '{new}' (the training config's name); rename it in the "
                          "study file", DeprecatedName, stacklevel=2)
            data[new] = data.pop(old)
    return data


class MethodSpec(_Strict):
    name: str | None = None  # default "full-adamw", "lora8-adamw"
    kind: Literal["full", "lora"]
    optimizer: str
    lora_rank: int | None = Field(None, gt=0)
    lora_alpha: float | None = Field(None, gt=0)  # None: the training box's default (2 x rank)
    lrs: list[float] = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)

    _opt = field_validator("optimizer")(_check_optimizer)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return _renamed(data, "methods[]")

    @field_validator("lrs")
    @classmethod
    def _lrs(cls, lrs: list[float]) -> list[float]:
        for lr in lrs:
            _check_lr(lr)
        if len(set(lrs)) != len(lrs):
            raise ValueError(f"learning rates repeat: {lrs}")
        return lrs

    @model_validator(mode="after")
    def _rank(self) -> MethodSpec:
        if self.kind == "lora" and self.lora_rank is None:
            raise ValueError("lora_rank: a lora method needs a rank (e.g. lora_rank: 16)")
        if self.kind == "full" and (self.lora_rank is not None or self.lora_alpha is not None):
            raise ValueError("lora_rank/lora_alpha: only a lora method takes a rank and alpha")
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
    steps: int = Field(gt=0)
    eval_every: int = Field(gt=0)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names(cls, tasks: Any) -> Any:
        if isinstance(tasks, list):
            return [{"name": t} if isinstance(t, str) else t for t in tasks]
        return tasks

    @model_validator(mode="after")
    def _interval(self) -> GridSpec:
        if self.eval_every > self.steps:
            raise ValueError(f"eval_every ({self.eval_every}) is larger than steps ({self.steps})")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods: two methods share a name: {labels}")
        return self


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")

    @field_validator("name")
    @classmethod
    def _not_a_path(cls, name: str) -> str:
        if set(name) == {"."}:  # "." or ".." would name this folder or its parent as the sweep's
            raise ValueError(f"{name!r} is not a study name (it names a folder); use letters, digits, . _ -")
        return name

    description: str = ""
    out_dir: str | None = None  # default: runs/<name>, relative to the working directory
    data: DataSpec = Field(default_factory=DataSpec)
    pretrain: list[PretrainSpec] = Field(default_factory=list)
    bases: list[BaseSpec] = Field(default_factory=list)
    finetune: list[GridSpec] = Field(default_factory=list)
    # A run stops as diverged when its optimised eval loss passes this multiple of its first eval,
    # or its training loss this multiple of its first logged value (the config's diverge_factor).
    diverge_factor: float = Field(4.0, gt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return _renamed(data, "study")

    @field_validator("finetune", mode="before")
    @classmethod
    def _one_or_many(cls, grids: Any) -> Any:
        return [grids] if isinstance(grids, dict) else grids

    @model_validator(mode="after")
    def _references(self) -> Study:
        names = [p.name or p.optimizer for p in self.pretrain] + [b.name for b in self.bases]
        if len(set(names)) != len(names):
            raise ValueError(f"pretrain/bases: two bases share a name: {names} (set `name:`)")
        if not self.pretrain and not self.bases:
            raise ValueError("pretrain/bases: the study has no base model (give `pretrain:` or `bases:`)")
        budgets = {p.name or p.optimizer: p.budgets for p in self.pretrain}
        for g, grid in enumerate(self.finetune):
            for k, ref in enumerate(grid.bases or []):
                name, budget = branches.base_ref(ref)
                if name not in names or (budget is not None and budget not in budgets.get(name, [])):
                    raise ValueError(f"finetune[{g}].bases[{k}]: no base named {ref!r}; defined: {', '.join(names)}"
                                     " (one budget of a multi-budget entry: NAME@TOKENS, e.g. adamw@1M)")
        return self

    def base_names(self) -> list[str]:
        return [p.name or p.optimizer for p in self.pretrain] + [b.name for b in self.bases]

    def token_ratios(self) -> list[tuple[int, str, float]]:
        """(grid index, base name, finetune tokens / pretraining tokens) for every grid x pretrained
        base whose batch and sequence length the grid sets (others are resolved only at run time)."""
        out = []
        for g, grid in enumerate(self.finetune):
            st = grid.settings
            if not st.get("batch_size") or not st.get("seq_len"):
                continue
            tokens = grid.steps * st["batch_size"] * st["seq_len"] * st.get("grad_accum", 1)
            refs = [branches.base_ref(r) for r in grid.bases or []]
            for p in self.pretrain:
                name = p.name or p.optimizer
                for budget in p.budgets:
                    if grid.bases is None or (name, None) in refs or (name, budget) in refs:
                        label = name if not isinstance(p.tokens, list) else f"{name}@{branches.tokens_label(budget)}"
                        out.append((g, label, tokens / budget))
        return out

    def resolved_out_dir(self) -> Path:
        return Path(self.out_dir or Path("runs") / self.name)


# ---------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    files = resources.files("forgetless.sweep").joinpath(PRESET_DIR).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def load_study(source: str | Path | dict) -> Study:
    """A Study from a YAML file, a preset name (`quick`, `gpt2`, ...) or a dict; StudyError if bad."""
    if isinstance(source, dict):
        raw, label = source, "study"
    else:
        path = Path(source)
        if path.is_file():
            label = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise StudyError(f"{label}: not UTF-8 text ({err.reason} at byte {err.start}); save it "
                                 "as UTF-8") from None
            except OSError as err:
                raise StudyError(f"{label}: cannot be read ({err.strerror})") from None
        elif str(source) in preset_names():
            text = resources.files("forgetless.sweep").joinpath(PRESET_DIR, f"{source}.yaml").read_text()
            label = f"preset {source}"
        else:
            raise StudyError(f"study: {source!r} is neither a file nor a preset; presets: "
                             f"{', '.join(preset_names())}")
        try:
            raw = load_yaml(text)  # bounded: no alias bomb, no duplicate key
        except yaml.YAMLError as err:
            raise StudyError(f"{label}: not valid YAML: {err}") from err
        if not isinstance(raw, dict):
            raise StudyError(f"{label}: a study file is a YAML mapping with at least `name:`")
    try:
        study = Study.model_validate(raw)
    except ValidationError as err:
        raise StudyError(f"{label}: invalid study\n  "
                         + format_validation_error(err, Study).replace("\n", "\n  ")) from None
    over = [(g, b, r) for g, b, r in study.token_ratios() if r > MAX_FINETUNE_RATIO]
    if over:
        g, b, r = max(over, key=lambda x: x[2])
        warnings.warn(f"{label}: finetune[{g}] on base {b} trains on {r:.0%} of the base's pretraining "
                      f"tokens ({len(over)} grid x base pair(s) above {MAX_FINETUNE_RATIO:.0%}); the paper's "
                      "finetunes use 1.3-10%, and its theory assumes a small move from the pretrained "
                      "weights: fewer steps or a longer pretraining keep the study in that regime",
                      RegimeWarning, stacklevel=2)
    return study


class RegimeWarning(UserWarning):
    """A study outside the paper's regime (finetunes above MAX_FINETUNE_RATIO of pretraining)."""


# ---------------------------------------------------------------------- expansion into cells


def cell_id(config: dict) -> str:
    """sha256 of the canonical JSON of a resolved config, first 16 hex digits. Renamed fields are
    hashed under their old names (RENAMED), so cells stored before a rename keep their ids."""
    old_name = {new: old for old, new in RENAMED.items()}
    blob = json.dumps({old_name.get(k, k): v for k, v in config.items()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expand(study: Study) -> list[Cell]:
    """The study's cells, bases first (config hashed into the id, meta the labels)."""
    data = study.data.model_dump()
    cells: list[Cell] = []
    bases: dict[str, list[tuple[str | None, dict]]] = {}  # base name -> [(cell id or None, meta)]
    for p in study.pretrain:
        name = p.name or p.optimizer
        if isinstance(p.tokens, list):  # a shared WSD trunk and a decay branch per budget
            for cell, budget in branches.wsd_cells(p, name, data, study.diverge_factor, cell_id):
                cells.append(cell)
                if budget is not None:
                    for key in (name, f"{name}@{budget}"):
                        bases.setdefault(key, []).append((cell.cell_id, cell.meta))
            continue
        for seed in p.seeds:
            config = {"kind": "pretrain", "data": data, "model": p.model, "optimizer": p.optimizer,
                      "tokens": p.tokens, "lr": p.lr, "seed": seed, "settings": p.settings,
                      "diverge_factor": study.diverge_factor}
            cid = cell_id(config)
            label = name if len(p.seeds) == 1 else f"{name}/s{seed}"
            meta = {"base": label, "base_optimizer": p.optimizer, "base_seed": seed}
            cells.append(Cell(cid, "pretrain", None, label, None, p.lr, config, meta))
            bases.setdefault(name, []).append((cid, meta))
    for b in study.bases:
        bases[b.name] = [(None, {"base": b.name, "base_optimizer": b.optimizer, "base_seed": None,
                                 "checkpoint": b.checkpoint})]
    for grid in study.finetune:
        for ref in grid.bases or study.base_names():
            name, budget = branches.base_ref(ref)
            for base_cid, base_meta in bases[name if budget is None else f"{name}@{budget}"]:
                for task in grid.tasks:
                    for m in grid.methods:
                        for lr in m.lrs:
                            for seed in grid.seeds:
                                cells.append(_finetune_cell(study, grid, base_cid, base_meta, task, m, lr, seed))
    return dedupe(branches.budget_major(cells))


def _finetune_cell(study: Study, grid: GridSpec, base_cid: str | None, base_meta: dict,
                   task: TaskSpec, m: MethodSpec, lr: float, seed: int) -> Cell:
    base = {"cell": base_cid} if base_cid else {"checkpoint": base_meta["checkpoint"]}
    config = {"kind": "finetune", "data": study.data.model_dump(), "base": base,
              "task": task.name, "task_settings": task.settings, "method": m.kind,
              "optimizer": m.optimizer, "lora_rank": m.lora_rank, "lora_alpha": m.lora_alpha, "lr": lr,
              "seed": seed, "steps": grid.steps, "eval_every": grid.eval_every,
              "settings": {**grid.settings, **m.settings},
              "diverge_factor": study.diverge_factor}
    label = f"{base_meta['base']}/{task.name}/{m.label}/lr={lr:g}"
    if len(grid.seeds) > 1:
        label += f"/s{seed}"
    # the text forgetting is measured on (sweep.execute: the study's corpus unless a setting names
    # another), for the figures' axes
    reference = {**config["settings"], **task.settings}.get("forget_corpus") or study.data.corpus
    meta = {**base_meta, "task": task.name, "method": m.label, "seed": seed, "reference": str(reference)}
    return Cell(cell_id(config), "finetune", base_cid, label, m.label, lr, config, meta)


def dedupe(cells: list[Cell]) -> list[Cell]:
    """Drop repeated cells (two grid entries resolving to the same run), keeping the first."""
    seen: set[str] = set()
    out = []
    for c in cells:
        if c.cell_id not in seen:
            seen.add(c.cell_id)
            out.append(c)
    return out
