"""Cells to training runs: a resolved cell config becomes a `forgetless.train` config.

A cell's fields carry the training config's names (optimizer, lr, seed, model,
tokens, task, method, lora_rank, lora_alpha, steps, eval_every; `settings` and a task's settings
are config fields too), so they pass through unrenamed. What a cell says in another shape:
    data.corpus/tokenizer/vocab_size -> corpus/tokenizer/vocab_size (pretraining), or, for an
        outside checkpoint, forget_corpus/forget_tokenizer (no tokenizer: the checkpoint's own;
        a forgetless run directory stays the base and its newest checkpoint gives the tokenizer);
    base -> the base cell's run directory, or the study's checkpoint (a pretraining cell with a
        base, a WSD trunk piece or decay branch of sweep.branches: start_from).

Every run is started with resume=True on its own directory `<out_dir>/cells/<cell id>`, so a
cell interrupted at any point continues from its last checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from forgetless.errors import format_validation_error
from forgetless.sweep.records import Cell
from forgetless.sweep.study import Study, StudyError, expand

# Fields the study sets itself; `settings` may not override them.
_COMMON = ("optimizer", "lr", "seed")  # diverge_factor (the training loss check) is a setting
PASSED = {"pretrain": _COMMON + ("model", "tokens"),
          "finetune": _COMMON + ("task", "method", "lora_rank", "lora_alpha", "steps", "eval_every")}
# Set by a multi-budget entry's trunk pieces and branches (sweep.branches) in the cell itself; a
# single-budget entry may still give them in `settings` (its cells do not carry them).
BRANCHES = ("schedule", "decay", "warmup_steps", "compile")
_RUNNER = {"out_dir", "resume", "progress", "console", "threads"}  # the sweep's runner sets these per cell
OWNED = {"pretrain": {*PASSED["pretrain"], *_RUNNER, "corpus", "tokenizer", "vocab_size", "start_from"},
         "finetune": {*PASSED["finetune"], *_RUNNER, "base"}}


def train_config(cell: Cell, out_dir: Path, base_dir: str | None):
    """The `PretrainConfig` / `FinetuneConfig` of a cell (pydantic validates it)."""
    from forgetless.train import FinetuneConfig, PretrainConfig

    cfg, kind = cell.config, cell.kind
    fields = {name: cfg[name] for name in PASSED[kind] + (BRANCHES if kind == "pretrain" else ())
              if cfg.get(name) is not None}
    fields.update(out_dir=out_dir, resume=True, progress=False,
                  console=False)  # the sweep prints one line per finished cell; cells log to their run dir
    threads = os.environ.get("FORGETLESS_WORKER_THREADS")  # set by the runner's worker pool
    if threads:
        fields["threads"] = int(threads)
    data = cfg["data"]
    if kind == "pretrain":
        if cell.base_id:  # a WSD trunk piece or decay branch continues the run of its base cell
            fields["start_from"] = base_dir or "."
        return PretrainConfig(corpus=data["corpus"], tokenizer=data["tokenizer"], vocab_size=data["vocab_size"],
                              **{**cfg["settings"], **fields})  # a branch's compile decides over settings
    if "checkpoint" in cfg["base"]:  # an outside model: forgetting on the study's corpus
        base = cfg["base"]["checkpoint"]  # a forgetless run dir stays one: finetune reads its config
        fields.update(forget_corpus=data["corpus"], forget_tokenizer=data["tokenizer"] or _model_dir(base))
    else:
        base = base_dir or "."
    return FinetuneConfig(base=str(base), **fields, **{**cfg["task_settings"], **cfg["settings"]})


def _model_dir(base: str) -> str:
    """The checkpoint directory of a base (a forgetless run directory becomes its newest
    checkpoint, which holds the tokenizer); a hub name, or a path checked elsewhere, as it is."""
    from forgetless.errors import UserError
    from forgetless.models import resolve_checkpoint

    try:
        return resolve_checkpoint(base)
    except UserError:
        return base


def check_bases(study: Study) -> list[str]:
    """Problems with the study's outside checkpoints: a path that does not exist or holds no
    model, or damaged weight files (a hub name is left to the hub)."""
    from forgetless.errors import UserError, one_line
    from forgetless.models import resolve_checkpoint

    problems = []
    for k, b in enumerate(study.bases):
        try:
            resolve_checkpoint(b.checkpoint)
        except UserError as err:
            problems.append(f"bases[{k}] ({b.name}): {one_line(err)}")
    return problems


def check_study(study: Study) -> None:
    """Build every cell's training config before any work; StudyError naming cell and field."""
    from forgetless.data.corpus import check_sources
    from forgetless.train import FinetuneConfig, PretrainConfig

    tasks = [t.name for g in study.finetune for t in g.tasks]
    problems = check_bases(study) + check_sources(study.data.corpus, tasks, study.data.tokenizer)  # before any work
    seen: set[str] = set()
    for cell in expand(study):
        cfg = cell.config
        clash = OWNED[cfg["kind"]] & (set(cfg["settings"]) | set(cfg.get("task_settings", {})))
        where = "pretrain run" if cfg["kind"] == "pretrain" else "finetune cell"
        if clash:
            text = f"{where}: settings may not set {sorted(clash)}; the study's own fields or the sweep set them"
            if text not in seen:
                seen.add(text)
                problems.append(f"{cell.label}: {text}")
            continue
        try:
            train_config(cell, Path("."), "." if cell.base_id else None)
        except ValidationError as err:
            text = format_validation_error(err, PretrainConfig if cfg["kind"] == "pretrain" else FinetuneConfig)
            if text not in seen:  # one message per distinct problem, not per grid cell
                seen.add(text)
                problems.append(f"{cell.label} ({where}):\n    " + text.replace("\n", "\n    "))
    if problems:
        raise StudyError(f"study {study.name}: cells that the training box would refuse:\n  "
                         + "\n  ".join(problems))


def train_executor(cell: Cell, out_dir: Path, base_dir: str | None, on_eval: Callable[[dict], None]):
    """Run a cell with `forgetless.train` (resuming when its directory holds a checkpoint)."""
    from forgetless.train import finetune, pretrain

    cfg = train_config(cell, out_dir, base_dir)
    run = pretrain if cell.kind == "pretrain" else finetune
    return run(cfg, on_eval=on_eval)
