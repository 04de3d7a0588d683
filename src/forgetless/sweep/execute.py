"""Cells to training runs: a resolved cell config becomes a `forgetless.train` config.

The mapping (study field -> train config field):

    pretrain cell:  model, optimizer, tokens, lr, seed; data.corpus/tokenizer/vocab_size -> corpus/
                    tokenizer/vocab_size; divergence_factor -> diverge_factor; settings -> as named
    finetune cell:  base (the base cell's run directory, or the study's checkpoint), task, method,
                    optimizer, lr, seed, steps, eval_every, rank -> lora_rank, alpha -> lora_alpha;
                    for an outside checkpoint data.corpus/tokenizer -> forget_corpus/forget_tokenizer
                    (no tokenizer: the checkpoint's own; a forgetless run directory stays the base
                    and its newest checkpoint gives the tokenizer; bases are checked before any cell);
                    task settings, then grid/method settings -> as named

Every run is started with resume=True on its own directory `<out_dir>/cells/<cell id>`, so a
cell interrupted at any point continues from its last checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from forgetless.sweep.study import Study, StudyError, expand

# Fields the study sets itself; `settings` may not override them.
_COMMON = {"out_dir", "optimizer", "lr", "seed", "diverge_factor", "resume", "progress"}
OWNED = {"pretrain": _COMMON | {"model", "tokens", "corpus", "tokenizer", "vocab_size"},
         "finetune": _COMMON | {"base", "task", "method", "lora_rank", "lora_alpha", "steps", "eval_every"}}


def train_config(cell: dict, out_dir: Path, base_dir: str | None):
    """The `PretrainConfig` / `FinetuneConfig` of a cell (pydantic validates it)."""
    from forgetless.train import FinetuneConfig, PretrainConfig

    cfg = cell["config"]
    common = {"out_dir": out_dir, "optimizer": cfg["optimizer"], "lr": cfg["lr"], "seed": cfg["seed"],
              "diverge_factor": cfg["divergence_factor"], "resume": True, "progress": False,
              "console": False}  # the sweep prints one line per finished cell; cells log to their run dir
    threads = os.environ.get("FORGETLESS_WORKER_THREADS")  # set by the runner's worker pool
    if threads:
        common["threads"] = int(threads)
    data = cfg["data"]
    if cfg["kind"] == "pretrain":
        return PretrainConfig(model=cfg["model"], tokens=cfg["tokens"], corpus=data["corpus"],
                              tokenizer=data["tokenizer"], vocab_size=data["vocab_size"],
                              **cfg["settings"], **common)
    extra: dict = {}
    if "checkpoint" in cfg["base"]:  # an outside model: forgetting on the study's corpus
        base = cfg["base"]["checkpoint"]  # a forgetless run dir stays one: finetune reads its config
        extra = {"forget_corpus": data["corpus"], "forget_tokenizer": data["tokenizer"] or _model_dir(base)}
    else:
        base = base_dir or "."
    if cfg["method"] == "lora":
        extra.update(lora_rank=cfg["rank"], lora_alpha=cfg["alpha"])
    return FinetuneConfig(base=str(base), task=cfg["task"], method=cfg["method"], steps=cfg["steps"],
                          eval_every=cfg["eval_every"], **extra,
                          **{**cfg["task_settings"], **cfg["settings"]}, **common)


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
    from forgetless.train.config import format_validation_error

    problems = check_bases(study)
    seen: set[str] = set()
    for cell in expand(study):
        cfg = cell["config"]
        clash = OWNED[cfg["kind"]] & (set(cfg["settings"]) | set(cfg.get("task_settings", {})))
        where = "pretrain run" if cfg["kind"] == "pretrain" else "finetune cell"
        if clash:
            text = f"{where}: settings may not set {sorted(clash)}; the study's own fields set them"
            if text not in seen:
                seen.add(text)
                problems.append(f"{cell['label']}: {text}")
            continue
        try:
            train_config(cell, Path("."), "." if cell["base_id"] else None)
        except ValidationError as err:
            text = format_validation_error(err)
            if text not in seen:  # one message per distinct problem, not per grid cell
                seen.add(text)
                problems.append(f"{cell['label']} ({where}):\n    " + text.replace("\n", "\n    "))
    if problems:
        raise StudyError(f"study {study.name}: cells that the training box would refuse:\n  "
                         + "\n  ".join(problems))


def train_executor(cell: dict, out_dir: Path, base_dir: str | None, on_eval: Callable[[dict], None]):
    """Run a cell with `forgetless.train` (resuming when its directory holds a checkpoint)."""
    from forgetless.train import finetune, pretrain

    cfg = train_config(cell, out_dir, base_dir)
    run = pretrain if cell["config"]["kind"] == "pretrain" else finetune
    return run(cfg, on_eval=on_eval)
