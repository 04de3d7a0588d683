"""Training across processes started by torchrun: DDP (a replica per process) or FSDP2 (sharded).

A run under `torchrun --nproc-per-node W -m forgetless pretrain|finetune ...` computes the same
optimizer steps as one process, up to float rounding:
- step k's global batch is built identically on every rank (it is a pure function of the seed and
  k), and rank r trains on its share of the rows of each micro-batch;
- the loss of a micro-batch is Σ_local ℓ / N_global · W, where N_global counts the target tokens of
  the whole step; DDP and FSDP2 average gradients over ranks, so the gradient is
  Σ_all ℓ / N_global, the single-process gradient;
- evaluation splits the rows of each fixed eval batch the same way and sums losses and token counts
  over ranks, so the points are the single-process points;
- the optimizer is `forgetless.optim` with distributed=True: element-wise rules on local shards,
  matrix rules (Muon, the column/row rules) on whole matrices spread round-robin over ranks.
Checkpoints: DDP writes the ordinary checkpoint from rank 0 (every replica is the same); FSDP2
writes sharded safetensors through torch.distributed.checkpoint (model and optimizer state, every
rank its own shard) and consolidates the model into a plain Hugging Face checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from forgetless.data.sft import IGNORE_INDEX as IGNORE
from forgetless.models import quiet

STRATEGIES = ("auto", "ddp", "fsdp")
FSDP_AUTO_PARAMS = 10**9  # `auto` shards models from this size on; smaller ones fit one device
SHARDED_MODEL, SHARDED_OPTIMIZER = "sharded", "optimizer"


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, world size, and how the model is spread ("none" alone)."""

    rank: int = 0
    world: int = 1
    strategy: str = "none"  # none | ddp | fsdp

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True inside a process that torchrun started for a run of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(parallel: str, device_name: str) -> tuple[str, torch.device]:
    """Join the process group torchrun describes; returns (backend, this process's device).

    NCCL with one GPU per process (LOCAL_RANK) on CUDA machines, gloo on CPUs."""
    if parallel not in STRATEGIES:
        raise ValueError(f"parallel {parallel!r} is unknown; allowed: {', '.join(STRATEGIES)}")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return backend, device


def choose(parallel: str, model: torch.nn.Module, lora: bool) -> Dist:
    """The Dist of this process for a model: `auto` is DDP below FSDP_AUTO_PARAMS, FSDP2 from there."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return Dist()
    strategy = parallel
    if strategy == "auto":
        big = sum(p.numel() for p in model.parameters()) >= FSDP_AUTO_PARAMS
        strategy = "fsdp" if big and not lora else "ddp"
    if strategy == "fsdp" and lora:
        raise ValueError("parallel 'fsdp' shards full finetuning; LoRA trains few parameters, "
                         "use parallel 'ddp' (allowed with method 'lora': auto, ddp)")
    return Dist(dist.get_rank(), dist.get_world_size(), strategy)


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, bf16: bool) -> torch.nn.Module:
    """DDP around the model, or FSDP2 on every decoder layer and then the root (HF models name
    their layer classes in `_no_split_modules`); bf16 compute with fp32 gradient reduction on CUDA."""
    if d.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if d.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if bf16 else MixedPrecisionPolicy()
        layer_classes = set(getattr(model, "_no_split_modules", None) or [])
        for module in model.modules():
            if type(module).__name__ in layer_classes:
                fully_shard(module, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    return model


def spread(model: torch.nn.Module, parallel: str, device: torch.device, precision: str,
           lora: bool = False, shards: str | Path | None = None) -> tuple[Dist, torch.nn.Module]:
    """`choose` and `wrap` for a run: (this process's Dist, the model to train). `shards`: a
    checkpoint whose weights exist only as shards, loaded once the model is sharded like them."""
    d = choose(parallel, model, lora)
    trained = wrap(model, d, device, bf16=device.type == "cuda" and precision != "fp32")
    if shards is not None and shards_only(shards):
        if d.strategy != "fsdp":
            raise ValueError(f"{shards} holds a sharded model; resume it under torchrun with parallel "
                             f"'fsdp', or make it whole first: forgetless consolidate {shards}")
        load_sharded_model(Path(shards), model)
    return d, trained


def write_config(model: torch.nn.Module, path: Path) -> None:
    """A sharded checkpoint's model files besides the weights (the shards, consolidated by the
    checkpoint writer): config.json and generation_config.json."""
    model.config.save_pretrained(path)
    model.generation_config.save_pretrained(path)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (FSDP2 keeps the model's own class)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def local_rows(x: torch.Tensor, y: torch.Tensor, d: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of a global batch (contiguous, sizes differing by at most one).

    A rank left without rows (fewer rows than ranks) gets row 0 with every target ignored: it
    adds nothing to the loss but still runs the forward that FSDP2's collectives wait for."""
    if d.world == 1:
        return x, y
    rows = torch.arange(x.shape[0]).tensor_split(d.world)[d.rank]
    if len(rows) == 0:
        return x[:1], torch.full_like(y[:1], IGNORE)
    return x[rows], y[rows]


def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, d: Dist, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce of micro-batches before the last one of a step."""
    if d.strategy == "ddp" and not sync:
        with model.no_sync():
            yield
    elif d.strategy == "fsdp":
        model.set_requires_gradient_sync(sync)
        yield
    else:
        yield


# ---------------------------------------------------------------- FSDP2 checkpoints


def _model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as DTensors, one entry per parameter (a tied head shares the embedding's
    storage and is left out: the HF config re-ties it on load)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    names = _own_names(model)
    return {k: v for k, v in get_model_state_dict(model).items() if k in names}


def _own_names(model: torch.nn.Module) -> set[str]:
    """Parameter and buffer names, each storage once (named_parameters drops tied duplicates)."""
    return {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}


def _optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(flatten_optimizer_state_dict=True))


def save_sharded(directory: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                 consolidate: bool) -> None:
    """Every rank writes its shards into directory/sharded (model) and directory/optimizer as
    safetensors; with `consolidate`, rank 0 then joins the model shards into full tensors in
    directory (model-*.safetensors + model.safetensors.index.json, what from_pretrained reads)."""
    import torch.distributed.checkpoint as dcp

    # consolidating, the writer puts the shards in directory/sharded itself ("sharded" is its name)
    target = directory if consolidate else directory / SHARDED_MODEL
    dcp.save(_model_state(model), storage_writer=dcp.HuggingFaceStorageWriter(
        str(target), save_distributed=True, enable_consolidation=consolidate))
    tensors = {k: v for k, v in _optimizer_state(model, opt).items() if isinstance(v, torch.Tensor)}
    dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(
        str(directory / SHARDED_OPTIMIZER), save_distributed=True))


def load_sharded_optimizer(directory: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Fill `opt` (fresh) with the optimizer state of a sharded checkpoint; every rank reads its
    own shards. Hyper-parameters (lr, ...) come back with the trainer state, not from here."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state = _optimizer_state(model, opt)  # allocates the state, the target of the load
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(directory / SHARDED_OPTIMIZER)))
    state.update(tensors)
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(flatten_optimizer_state_dict=True))


@contextlib.contextmanager
def _logging_below(level: int) -> Iterator[None]:
    """Log records below `level` dropped for the duration (dcp logs a damaged shard's traceback as a
    warning on the root logger before raising; the error is reported once, in one line)."""
    before = logging.root.manager.disable
    logging.disable(level - 1)
    try:
        yield
    finally:
        logging.disable(before)


def load_sharded_model(directory: Path, model: torch.nn.Module) -> None:
    """Load a checkpoint's model shards into a model (sharded with FSDP2, or whole in one process)."""
    import torch.distributed.checkpoint as dcp

    state = _model_state(model) if dist.is_initialized() else _plain_state(model)
    try:
        with warnings.catch_warnings(), _logging_below(logging.ERROR):  # dcp's notes and tracebacks:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # said below, once
            dcp.load(state, storage_reader=dcp.HuggingFaceStorageReader(str(directory / SHARDED_MODEL)))
    except (Exception, dcp.api.CheckpointException) as err:  # noqa: BLE001 - a BaseException, wrapping any reader error
        from forgetless.errors import CorruptCheckpoint

        last = [line.strip() for line in str(err).splitlines() if line.strip()][-1:] or [type(err).__name__]
        raise CorruptCheckpoint(f"{directory / SHARDED_MODEL} is truncated or corrupt ({last[0][:300]}); "
                                "restore its files") from None
    if dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(strict=False))
    else:
        model.load_state_dict(state, strict=False)


def shards_only(checkpoint: str | Path) -> bool:
    """True for a sharded checkpoint whose model was not consolidated (its weights are the shards)."""
    path = Path(checkpoint)
    return (path / SHARDED_MODEL).is_dir() and not any(path.glob("model*.safetensors"))


def empty_model(checkpoint: str | Path) -> torch.nn.Module:
    """The checkpoint's architecture with fresh weights, for `load_sharded_model` to fill."""
    import transformers

    with quiet():
        return transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.from_pretrained(checkpoint, trust_remote_code=False), dtype=torch.float32)


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = _own_names(model)
    return {k: v for k, v in model.state_dict().items() if k in names}


def consolidate(checkpoint: str | Path, out: str | Path | None = None) -> Path:
    """A plain Hugging Face checkpoint (model.safetensors) from a sharded FSDP2 checkpoint, in one
    process: the model is built from the checkpoint's config.json, the shards are read into it
    (no pickle anywhere), and it is saved with its tokenizer next to it (or in `out`)."""
    import transformers

    src = Path(checkpoint)
    if not (src / SHARDED_MODEL).is_dir():
        raise FileNotFoundError(f"{src} is not a sharded checkpoint: no {SHARDED_MODEL}/ folder "
                                "(a checkpoint of a run with parallel 'fsdp')")
    model = empty_model(src)
    load_sharded_model(src, model)
    dst = Path(out) if out is not None else src
    dst.mkdir(parents=True, exist_ok=True)
    for stale in dst.glob("model-*.safetensors"):
        stale.unlink()
    (dst / "model.safetensors.index.json").unlink(missing_ok=True)
    with quiet():
        model.save_pretrained(dst)
        if dst != src:
            transformers.AutoTokenizer.from_pretrained(src, trust_remote_code=False).save_pretrained(dst)
    return dst
