"""Checkpoints without pickle: Hugging Face model files plus the trainer state as safetensors + JSON.

A checkpoint directory `checkpoints/step-NNNNNN/` holds
    model.safetensors, config.json, generation_config.json, tokenizer files   (loadable by
        transformers.AutoModelForCausalLM; for LoRA the merged model, or only the adapter files
        when merging is off)
    adapter/                    the PEFT adapter (LoRA runs with merging on), used to resume
    trainer_state.safetensors   every tensor of the optimizer state and the RNG states
    trainer_state.json          the rest: step, tokens, scheduler, optimizer structure, ...

Nested state (the optimizer's state_dict) is flattened: each tensor goes to the safetensors file
under its path ("optimizer.state.3.exp_avg") and the JSON keeps the structure with
{"__tensor__": path} in its place, so no file the user may hand back is ever unpickled.
The directory is written under a temporary name and renamed, so a kill never leaves half a checkpoint;
`verify_checkpoint` still checks one before a resume trusts it (a disk can lose or garble files).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from forgetless.errors import CorruptCheckpoint, one_line
from forgetless.models import check_weights

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able structure of `obj`, its tensors moved into `tensors` under dotted paths."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):  # keys may be ints (optimizer state is keyed by parameter index)
        return {"__dict__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout uses torch's)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state()),
                             "python": random.getstate()}
    state["numpy"][1] = torch.from_numpy(state["numpy"][1].astype(np.int64))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_trainer_state(directory: Path, state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    structure = flatten(state, "state", tensors)
    save_file(tensors, str(directory / STATE_TENSORS))
    (directory / STATE_JSON).write_text(json.dumps(structure))


def load_trainer_state(directory: Path) -> dict[str, Any]:
    try:
        tensors = load_file(str(directory / STATE_TENSORS))
        return unflatten(json.loads((directory / STATE_JSON).read_text()), tensors)
    except Exception as err:  # SafetensorError, OSError, JSON or structure errors: a bad file
        raise CorruptCheckpoint(f"{directory}: trainer state unreadable ({one_line(err)})") from None


def _tensor_refs(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return {obj["__tensor__"]}
        items = obj.get("__dict__", obj.get("__tuple__", []))
        return set().union(*[_tensor_refs(v[1] if "__dict__" in obj else v) for v in items])
    if isinstance(obj, list):
        return set().union(*[_tensor_refs(v) for v in obj])
    return set()


def verify_checkpoint(directory: Path) -> None:
    """CorruptCheckpoint, naming the file, unless the checkpoint's weight files and trainer state
    are whole: safetensors headers and lengths, the state JSON, and every tensor it refers to
    present. Reads headers only, so it is cheap on large checkpoints."""
    check_weights(directory)
    try:
        structure = json.loads((directory / STATE_JSON).read_text())
        with safe_open(str(directory / STATE_TENSORS), "pt") as f:
            missing = _tensor_refs(structure) - set(f.keys())
    except Exception as err:
        raise CorruptCheckpoint(f"{directory}: trainer state unreadable ({one_line(err)})") from None
    if missing:
        raise CorruptCheckpoint(f"{directory}: trainer state lacks {len(missing)} tensors "
                                f"(e.g. {sorted(missing)[0]})")


def write_checkpoint(root: Path, step: int, write_model: Callable[[Path], None],
                     state: dict[str, Any], keep: int,
                     sharded: Callable[[Path], None] | None = None, main: bool = True,
                     barrier: Callable[[], None] = lambda: None) -> Path:
    """Write `root/step-NNNNNN` atomically (model files by `write_model`, then the trainer state)
    and delete all but the newest `keep` checkpoints.

    Under FSDP2 every rank calls this: `sharded(tmp)` writes each rank's shards, the `main` rank
    writes the rest and renames, and `barrier` keeps the ranks in step around it."""
    final = root / f"step-{step:06d}"
    # ranks must agree on the temporary name, so a sharded write leaves the pid out
    tmp = root / (f".tmp-step-{step:06d}" if sharded else f".tmp-step-{step:06d}-{os.getpid()}")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    if sharded is not None:
        sharded(tmp)
    if main:
        write_model(tmp)
        save_trainer_state(tmp, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        old = sorted(p for p in root.glob("step-*") if p.is_dir())
        for stale in old[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final
