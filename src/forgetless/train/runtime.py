"""Set-up shared by pretraining and finetuning: device, seeds, threads, optimizer, resume checks."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import yaml

from forgetless import optim
from forgetless.models import latest_checkpoint
from forgetless.train import distributed
from forgetless.train.config import TrainConfig
from forgetless.train.rundir import RunDir
from forgetless.train.trackers import check_trackers

# Fields that may change between a run and its resumption (they do not change the numbers).
_RESUMABLE = {"resume", "progress", "trackers", "device", "threads", "compile", "log_every", "keep_checkpoints",
              "consolidate"}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available; allowed: auto, cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for but MPS is not available; allowed: auto, cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def setup_compile_cache() -> None:
    """Keep inductor's compiled kernels between runs (they cost minutes to build), under the
    forgetless cache unless the user chose a directory. Importing torch._dynamo (transformers
    does) already writes torch's default into TORCHINDUCTOR_CACHE_DIR: that is not a choice."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from forgetless.data import cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")


def start(cfg: TrainConfig) -> tuple[torch.device, RunDir]:
    """Checks that need no data: trackers installed, device present; under torchrun, joining the
    process group (this process's device is then its LOCAL_RANK's GPU, or the CPU)."""
    check_trackers(cfg.trackers)
    if distributed.launched():
        _, device = distributed.setup(cfg.parallel, cfg.device)
        return device, RunDir(cfg.out_dir)
    return pick_device(cfg.device), RunDir(cfg.out_dir)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU thread count set to n for the duration (None: leave it), restored after.

    On a busy machine fewer threads than cores is much faster: idle OpenMP threads spin."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def open_run(run: RunDir, cfg: TrainConfig):
    """Write config.yaml (resolved, with resume off) and return the checkpoint to resume from.

    A resumed run must have the same settings as the killed one, or it would not be the same
    run: differing fields are named in the error.
    """
    saved_path = run.path / "config.yaml"
    if cfg.resume and saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text()) or {}
        now = cfg.model_dump(mode="json")
        changed = sorted(k for k in now if k not in _RESUMABLE and saved.get(k) != now[k])
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
            raise ValueError(f"resume: settings differ from the run in {run.path} ({detail}); "
                             "resume with the same settings or choose another out_dir")
    if distributed.launched() and torch.distributed.get_rank() != 0:
        torch.distributed.barrier()  # rank 0 prepares the directory, then the others read it
        return latest_checkpoint(run.path) if cfg.resume else None
    ckpt = run.prepare(cfg.model_copy(update={"resume": False}).to_yaml(), cfg.resume)
    if distributed.launched():
        torch.distributed.barrier()
    return ckpt


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, sharded: bool = False) -> torch.optim.Optimizer:
    """forgetless.optim.build on the trainable parameters (for LoRA: the adapters only);
    `sharded`: the ranks of a torchrun job share the matrix work (see forgetless.optim)."""
    kwargs: dict[str, Any] = dict(cfg.optimizer_kwargs)
    if sharded:
        kwargs["distributed"] = True
    if cfg.adamw_lr is not None:
        kwargs["adamw_lr"] = cfg.adamw_lr
    if cfg.momentum is not None:
        kwargs["momentum"] = cfg.momentum
    return optim.build(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def set_token_ids(model: torch.nn.Module, tokenizer) -> None:
    """Make the model's config and generation config agree with the tokenizer's special tokens."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is None:
            continue
        config.eos_token_id = tokenizer.eos_token_id
        config.bos_token_id = tokenizer.bos_token_id
        config.pad_token_id = pad
