"""Set-up shared by pretraining and finetuning: device, seeds, threads, optimizer, resume checks."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import yaml

from forgetless import optim
from forgetless.data import cache_dir
from forgetless.errors import UserError
from forgetless.models import latest_checkpoint
from forgetless.train import distributed
from forgetless.train.config import TrainConfig
from forgetless.train.evaluate import head_split
from forgetless.train.rundir import RunDir, same_sweep_cell
from forgetless.train.trackers import check_trackers

# Fields that may change between a run and its resumption (they do not change the numbers).
# out_dir too: a run directory that was moved or copied resumes where it now is.
# Memory settings are among them: after an out-of-memory a run resumes with them lowered.
_RESUMABLE = {"resume", "progress", "trackers", "device", "threads", "compile", "log_every", "keep_checkpoints",
              "out_dir", "consolidate", "console", "micro_batch", "gradient_checkpointing", "eval_batch_size",
              "wise", "diverge_factor"}  # WiSE is evaluated after training: other α change no training number;
# diverge_factor only says when a run counts as diverged (a sweep's cells took the study's 4 before
# issue 25, the config's 10 since: their runs resume)


class DeviceUnavailable(UserError, ValueError):
    """A device that is not one, or not on this machine."""


def pick_device(name: str) -> torch.device:
    """The torch device for a `device` setting: auto (CUDA when there is one, else CPU), cpu,
    cuda, cuda:N or mps. The one device picker of training and of the analysis commands."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailable(f"device {name!r} is not a device; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r} asked for but CUDA is not available; allowed: auto, cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"device {name!r} asked for but MPS is not available; allowed: auto, cpu")
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
        fields = type(cfg).model_fields  # a field newer than the run's config.yaml had its default then
        before = {k: saved[k] if k in saved else fields[k].get_default(call_default_factory=True) for k in now}
        changed = sorted(k for k in now if k not in _RESUMABLE and before[k] != now[k]
                         and not (k == "base" and same_sweep_cell(saved.get(k), now[k])))  # a moved sweep
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


class Stopped(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`): ends the run like Ctrl-C, its status "stopped"."""


def stop_on_sigterm(term: dict[str, bool], graceful: bool):
    """Make SIGTERM stop the training loop (main thread only: signal handlers can be set nowhere
    else); returns the handler to put back, or None when none was set. `graceful` (one process):
    the first signal asks the loop to stop after the step in progress, with a checkpoint of it;
    a second one, or any under torchrun (ranks could stop at different steps), raises at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked child (a tokenizer pool's worker) inherited this handler:
            signal.signal(signum, signal.SIG_DFL)  # it must die as SIGTERM says, or the pool's
            os.kill(os.getpid(), signum)  # terminate() waits for it forever
            return
        if graceful and not term["asked"]:
            term["asked"] = True
            return
        raise Stopped(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler) or signal.SIG_DFL


# ---------------------------------------------------------------- memory

CHECKPOINTING_FROM = 100_000_000  # parameters: gradient checkpointing on by default from here
CPU_ACTIVATION_CAP = 2**30        # bytes of activations on CPU: bigger forwards buy no speed there
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")


@dataclass
class MemoryPlan:
    """How a run fits in memory: tokens per forward/backward in training (or fixed rows when
    micro_batch is set), tokens per forward in evaluation, gradient checkpointing."""

    train_tokens: int | None
    micro_batch: int | None
    eval_tokens: int
    checkpointing: bool
    parameters: int
    budget: int  # activation bytes the plan was sized for

    def train_rows(self, width: int) -> int:
        """Rows of a batch of `width` tokens per forward/backward."""
        if self.micro_batch or self.train_tokens is None:
            return self.micro_batch or 1 << 30  # None and None: whole batches
        return max(1, self.train_tokens // max(1, width))

    def record(self, seq_len: int) -> dict:
        return {"micro_batch": self.train_rows(seq_len), "at_seq_len": seq_len, "eval_tokens_per_forward": self.eval_tokens,
                "gradient_checkpointing": self.checkpointing, "parameters": self.parameters,
                "activation_budget_mb": round(self.budget / 2**20)}


def hf_model(model: torch.nn.Module):
    """The Hugging Face model inside PEFT/DDP wrappers (the outermost PreTrainedModel)."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


def free_memory(device: torch.device) -> int:
    """Bytes that can still be allocated: the GPU's free memory, or the host's available memory
    (the lower of /proc/meminfo's MemAvailable and a cgroup limit when one is set)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    free = psutil.virtual_memory().available
    try:  # a container's limit is lower than what the host reports
        limit = int(open("/sys/fs/cgroup/memory.max").read().strip())
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
        free = min(free, limit - used)
    except (OSError, ValueError):
        pass
    return free


def plan_memory(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> MemoryPlan:
    """Size the forwards from the model's shape and the free memory (weights already loaded).

    Per token, training keeps ~(16·hidden + 5·intermediate) fp32 activations per layer for the
    backward (with checkpointing: hidden per layer plus one layer's and its gradients), and — only where the loss
    cannot be taken in chunks (torchrun, an unusual head) — the logits three times (logits,
    log-softmax, gradient); evaluation holds one layer's (6·hidden + 3·intermediate),
    twice for safety. Gradients and two optimizer moments (12 bytes per trainable parameter) come
    off the free memory first; activations get half of the rest, at most CPU_ACTIVATION_CAP on CPU.
    """
    hf = hf_model(model)
    config = getattr(hf, "config", None)
    hidden = getattr(config, "hidden_size", None) or 768
    layers = getattr(config, "num_hidden_layers", None) or 12
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    vocab = getattr(config, "vocab_size", None) or 50257
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    checkpointing = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else params >= CHECKPOINTING_FROM
    layer_bytes = (16 * hidden + 5 * inter) * 4
    # checkpointed: each layer's input kept, one layer recomputed with its gradients (x2; measured:
    # a 135M model at 7 x 1024 tokens per piece peaked 6.05 GB with x1, over the 6 GB goal)
    stored = (layers * hidden * 4 + 2 * layer_bytes) if checkpointing else layers * layer_bytes
    # the loss in chunks (one process, a plain head) keeps no per-token logits; otherwise ~3 copies
    logits = 0 if head_split(model) is not None and not distributed.launched() else 3 * 4 * vocab
    train_per_token = stored + logits
    eval_per_token = 2 * (6 * hidden + 3 * inter) * 4
    spare = max(0, free_memory(device) - 12 * trainable)
    budget = spare // 2 if device.type != "cuda" else int(spare * 0.7)
    if device.type == "cpu":
        budget = min(budget, CPU_ACTIVATION_CAP)
    return MemoryPlan(train_tokens=None if cfg.micro_batch else max(1, budget // train_per_token),
                      micro_batch=cfg.micro_batch, eval_tokens=max(1, budget // eval_per_token),
                      checkpointing=bool(checkpointing), parameters=params, budget=budget)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Hugging Face gradient checkpointing (non-reentrant: works with frozen inputs, as in LoRA)."""
    hf = hf_model(model)
    if hf is None or not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError("gradient_checkpointing: this model does not support it; allowed: false")
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class OutOfMemory(Exception):
    """A run that ran out of memory; the message says which setting to lower."""


def is_oom(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)


def oom_message(phase: str, step: int, cfg: TrainConfig, plan: MemoryPlan | None, width: int | None) -> str:
    """One line: where memory ran out and the setting to lower."""
    seq = width or cfg.seq_len
    if phase == "evaluation":
        rows = min(cfg.eval_batch_size or 1, max(1, (plan.eval_tokens if plan else seq) // max(1, seq or 1)))
        return (f"out of memory in evaluation at step {step} ({rows} sequences x {seq} tokens per forward); "
                f"lower eval_batch_size (--eval-batch-size, now {cfg.eval_batch_size}) or seq_len (--seq-len)")
    rows = plan.train_rows(seq or 1) if plan else cfg.batch_size
    hint = "" if (plan and plan.checkpointing) else ", or turn on --gradient-checkpointing"
    return (f"out of memory in training at step {step} ({rows} sequences x {seq} tokens per forward/backward); "
            f"lower micro_batch (--micro-batch, now {rows}) or seq_len (--seq-len, now {cfg.seq_len}){hint}")
