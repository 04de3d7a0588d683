"""`pretrain`: a model preset trained from scratch on a corpus, validation loss measured as it goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
import yaml

from forgetless.data import prepare_pretraining_data, sample_batch
from forgetless.errors import UserError
from forgetless.models import build_model, latest_checkpoint, quiet, set_dropout
from forgetless.train import distributed, runtime
from forgetless.train.config import PretrainConfig
from forgetless.train.evaluate import autocast_for, forgetting_batches, mean_loss
from forgetless.train.loop import Job, run_job
from forgetless.train.rundir import RunResult


def pretrain(cfg: PretrainConfig, on_eval: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train `cfg.model` from scratch on `cfg.corpus`; returns the run's status and eval points.

    Each eval point's `forgetting` (also `val_loss`) is the mean token loss on a fixed sample of
    the corpus's held-out split, the quantity a later finetune's forgetting is measured by.
    Step k's batch is `sample_batch(train, B, T, seed, k·A + i)` for micro-batch i of A.
    """
    from forgetless.train.rundir import claim_ends_with_the_call

    with runtime.torch_threads(cfg.threads), claim_ends_with_the_call(cfg.out_dir):  # the run dir's lock
        return _pretrain(cfg, on_eval)


def _pretrain(cfg: PretrainConfig, on_eval: Callable[[dict[str, Any]], None] | None) -> RunResult:
    from forgetless.models.loading import check_model_overrides

    cfg = cfg.resolved()
    check_model_overrides(cfg.model, cfg.model_overrides)  # before any work: typos, heads that do not divide
    device, run = runtime.start(cfg)
    resume_from = runtime.open_run(run, cfg) or _branch_point(cfg)
    data = prepare_pretraining_data(cfg.corpus, cfg.tokenizer, cfg.vocab_size, progress=cfg.progress)
    tokenizer = data.tokenizer
    runtime.seed_everything(cfg.seed)
    if resume_from is not None and distributed.shards_only(resume_from):
        model = distributed.empty_model(resume_from)  # filled from the shards once sharded, below
    elif resume_from is not None:
        with quiet():
            model = transformers.AutoModelForCausalLM.from_pretrained(
                resume_from, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=False)
    else:
        model = build_model(cfg.model, vocab_size=len(tokenizer), **cfg.model_overrides)
        runtime.set_token_ids(model, tokenizer)
    set_dropout(model, cfg.dropout)
    model.to(device)
    autocast = autocast_for(device, cfg.precision)
    d, trained = distributed.spread(model, cfg.parallel, device, cfg.precision, shards=resume_from)
    optimizer = runtime.make_optimizer(model, cfg, sharded=d.active)
    val_batches = forgetting_batches(data.val, cfg.seq_len, cfg.eval_tokens, cfg.eval_batch_size)

    def batches(step: int):
        first = step * cfg.grad_accum
        return [sample_batch(data.train, cfg.batch_size, cfg.seq_len, cfg.seed, first + i)
                for i in range(cfg.grad_accum)]

    def evaluate() -> dict[str, Any]:
        loss = mean_loss(model, val_batches, device, autocast, d)
        return {"forgetting": loss, "val_loss": loss, "learning": None, "accuracy": None}

    def write_model(path: Path) -> None:
        if d.strategy == "fsdp":
            distributed.write_config(model, path)
        else:
            model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    job = Job(cfg=cfg, run=run, model=trained, optimizer=optimizer, batches=batches, evaluate=evaluate,
              write_model=write_model, device=device, resume_from=resume_from, on_eval=on_eval, dist=d)
    return run_job(job)


# Settings a branch must share with the run it continues, or it would not be that run's continuation.
SHARED_WITH_TRUNK = ("model", "model_overrides", "corpus", "tokenizer", "vocab_size", "optimizer", "lr", "adamw_lr",
                     "weight_decay", "momentum", "optimizer_kwargs", "seed", "batch_size", "seq_len", "grad_accum",
                     "grad_clip", "dropout", "warmup_steps", "min_lr_ratio")


def _branch_point(cfg: PretrainConfig) -> Path | None:
    """The checkpoint `start_from` names (a run directory: its newest), after checking that the
    run it comes from trained with this run's settings (SHARED_WITH_TRUNK); None without one."""
    if cfg.start_from is None:
        return None
    source = Path(cfg.start_from)
    ckpt = latest_checkpoint(source) if (source / "checkpoints").is_dir() else source
    if ckpt is None or not (ckpt / "trainer_state.json").is_file():
        raise UserError(f"start_from: {cfg.start_from} holds no forgetless checkpoint with a trainer state")
    saved = ckpt.parent.parent / "config.yaml"
    if saved.is_file():
        trunk = yaml.safe_load(saved.read_text()) or {}
        now = cfg.model_dump(mode="json")
        differ = [k for k in SHARED_WITH_TRUNK if k in trunk and trunk[k] != now[k]]
        if differ:
            raise UserError("start_from: this run differs from the run it continues in "
                            + ", ".join(f"{k} ({trunk[k]!r} there, {now[k]!r} here)" for k in differ))
    return ckpt
