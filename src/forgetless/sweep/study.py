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

    reproduce:                      # what `forgetless reproduce` adds to the sweep (optional)
      probe_tokens: 8192
      memorization: {optimizers: [adamw, muon], preset: nano, steps: 200, seeds: [0, 1, 2]}

Every field that is a training setting (model, optimizer, tokens, lr, seeds, task, kind = the
config's method, lora_rank, lora_alpha, steps, eval_every, corpus, tokenizer, vocab_size) is the
training config's own field, with its checks and default (sweep/study_fields.py). `settings`
mappings (on a pretraining run, a grid, a method or a task) pass the other fields through to the
training box's `PretrainConfig` / `FinetuneConfig` (seq_len, batch_size, warmup, diverge_factor,
...); a method's settings override its grid's.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forgetless.errors import UserError, format_validation_error
from forgetless.sweep import branches
from forgetless.sweep.records import Cell
from forgetless.sweep.study_fields import (  # noqa: F401  (the study's parts, re-exported)
    MAX_FINETUNE_RATIO,
    RENAMED,
    BaseSpec,
    DataSpec,
    DeprecatedName,
    GridSpec,
    MemorizationSpec,
    MethodSpec,
    PretrainSpec,
    ReproduceSpec,
    TaskSpec,
    renamed,
)
from forgetless.untrusted import load_yaml

PRESET_DIR = "presets"


class StudyError(UserError, ValueError):
    """A study file that cannot be run; the message names the field."""


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    # The sweep's own check (sweep/cell.py): a run stops as diverged when the loss it optimises,
    # measured at an eval point, passes this multiple of its first eval. The training loop's check
    # on the training loss is the config's `diverge_factor`, a setting like any other.
    eval_diverge_factor: float = Field(4.0, gt=1.0)
    reproduce: ReproduceSpec = Field(default_factory=ReproduceSpec)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return renamed(data, "study", ("divergence_factor", "diverge_factor"))

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
            tokens = grid.steps * branches.per_step(st)
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


# Cell config keys hashed under an earlier name (RENAMED), so cells stored before a rename keep
# their ids: the sweep's divergence check was `divergence_factor`, then `diverge_factor`.
HASHED_AS = {"lora_rank": "rank", "lora_alpha": "alpha", "eval_diverge_factor": "divergence_factor",
             "diverge_factor": "divergence_factor"}


def cell_id(config: dict) -> str:
    """sha256 of the canonical JSON of a resolved config, first 16 hex digits (HASHED_AS names)."""
    blob = json.dumps({HASHED_AS.get(k, k): v for k, v in config.items()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expand(study: Study) -> list[Cell]:
    """The study's cells, bases first (config hashed into the id, meta the labels)."""
    cells: list[Cell] = []
    bases: dict[str, list[tuple[str | None, dict]]] = {}  # base name -> [(cell id or None, meta)]
    data: dict[str, dict] = {}  # base name -> the data its finetunes carry (vocab_size of its model)
    for p in study.pretrain:
        name = p.name or p.optimizer
        data[name] = study.data.resolved(p.model)
        if isinstance(p.tokens, list):  # a shared WSD trunk and a decay branch per budget
            for cell, budget in branches.wsd_cells(p, name, data[name], study.eval_diverge_factor, cell_id):
                cells.append(cell)
                if budget is not None:
                    for key in (name, f"{name}@{budget}"):
                        bases.setdefault(key, []).append((cell.cell_id, cell.meta))
                        data[key] = data[name]
            continue
        for seed in p.seeds:
            config = {"kind": "pretrain", "data": data[name], "model": p.model, "optimizer": p.optimizer,
                      "tokens": p.tokens, "lr": p.lr, "seed": seed, "settings": p.settings,
                      "eval_diverge_factor": study.eval_diverge_factor}
            cid = cell_id(config)
            label = name if len(p.seeds) == 1 else f"{name}/s{seed}"
            meta = {"base": label, "base_optimizer": p.optimizer, "base_seed": seed}
            cells.append(Cell(cid, "pretrain", None, label, None, p.lr, config, meta))
            bases.setdefault(name, []).append((cid, meta))
    for b in study.bases:
        bases[b.name] = [(None, {"base": b.name, "base_optimizer": b.optimizer, "base_seed": None,
                                 "checkpoint": b.checkpoint})]
        data[b.name] = study.data.resolved(None)
    for grid in study.finetune:
        for ref in grid.bases or study.base_names():
            name, budget = branches.base_ref(ref)
            key = name if budget is None else f"{name}@{budget}"
            for base_cid, base_meta in bases[key]:
                for task in grid.tasks:
                    for m in grid.methods:
                        for lr in m.lrs:
                            for seed in grid.seeds:
                                cells.append(_finetune_cell(study, data[key], grid, base_cid, base_meta, task, m,
                                                            lr, seed))
    return dedupe(branches.budget_major(cells))


def _finetune_cell(study: Study, data: dict, grid: GridSpec, base_cid: str | None, base_meta: dict,
                   task: TaskSpec, m: MethodSpec, lr: float, seed: int) -> Cell:
    base = {"cell": base_cid} if base_cid else {"checkpoint": base_meta["checkpoint"]}
    config = {"kind": "finetune", "data": data, "base": base,
              "task": task.name, "task_settings": task.settings, "method": m.kind,
              "optimizer": m.optimizer, "lora_rank": m.lora_rank, "lora_alpha": m.lora_alpha, "lr": lr,
              "seed": seed, "steps": grid.steps, "eval_every": grid.eval_every,
              "settings": {**grid.settings, **m.settings},
              "eval_diverge_factor": study.eval_diverge_factor}
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
