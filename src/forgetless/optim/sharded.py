"""`SteepestDescent(distributed=True)`: the same step on FSDP2 shards or DDP replicas.

Under torch.distributed (world size W) a param group holds two kinds of parameters:

- DTensors, as FSDP2's `fully_shard` leaves them: a 1-D device mesh, placement `Shard(0)`, each
  rank holding rows [k c, (k + 1) c) of the matrix (c = ceil(d0 / W), torch.chunk semantics, so a
  shard may be short or empty). The optimizer state is made with `zeros_like(param)` and so is a
  DTensor sharded the same way, which is what torch.distributed.checkpoint's
  `get_optimizer_state_dict` / `set_optimizer_state_dict` expect.
- plain tensors, taken as DDP replicas: identical on every rank, gradients already averaged.

Momentum, weight decay and Lion's second EMA are element-wise, so every rank applies them to its
local shard (`to_local()` shares storage with the DTensor). What happens next depends on the rule:

- rules local up to one scalar per matrix (record `on_shards` ENTRYWISE: signsgd and lion, whose
  lmo_fn acts entry by entry; FROBENIUS: sgd, whose lmo U / ||U||_F does up to the norm) on
  DTensors: the direction is computed on the local shard;
  the one global quantity the single-process rule needs per matrix (sum of lmo(U)^2 for the RMS
  scale of the sign rules, sum of U^2 for sgd's Frobenius norm) is summed over ranks with
  ONE all_reduce of a vector holding one partial sum per matrix of the group.
- matrix rules (on_shards WHOLE: muon, coltop1, rowtop1, colnorm, rownorm) on DTensors: matrix j of the group (in
  group order) is owned by rank j % W. ONE all_to_all_single sends every rank's shard of the
  (Nesterov-combined) momentum U of each matrix to its owner, the owner stacks the whole matrices
  it owns and runs the single-process code path (`functional.full_directions`: batched by shape, Muon's flip of tall
  matrices, transposed groups, the same scale), and ONE more all_to_all_single sends each rank its rows of
  the directions back. Every rank then applies its shard of the update. So each rank
  orthogonalises only about 1/W of the matrices (the scheme of microsoft/dion and modded-nanogpt).
  all_to_all_single takes uneven split sizes (gloo and NCCL both support it), so no padding;
  with one collective each way there is nothing to overlap, so they are issued synchronously.
- matrix rules on DDP replicas: the owner (rank j % W) computes matrix j's direction from its own
  full copy and ONE all_gather (of each rank's directions, padded to the largest rank's total)
  gives every rank every direction, so replicas stay identical.
- those local rules on DDP replicas and AdamW (torch's arithmetic, which supports DTensors) run
  exactly as in a single process; they need no communication.

The arithmetic is `functional`'s; this module adds only the collectives and never sees the
optimizer object. Every rank must call `step()` with the same param groups and the same parameters having
gradients (as FSDP2 and DDP guarantee), since every collective is issued by every rank.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from . import functional, lmo
from .registry import FROBENIUS, OPTIMIZERS, WHOLE

try:
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # a torch build without distributed support: no parameter is a DTensor
    DTensor, Shard = None, None


def is_dtensor(t: Tensor) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def _local(t: Tensor) -> Tensor:
    """The rank's shard of a DTensor (a view sharing its storage); a plain tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def _rows(d0: int, world: int) -> list[int]:
    """Rows of a dim-0 length d0 held by each of `world` ranks (torch.chunk, as FSDP2 and
    DTensor's Shard(0) split: chunks of ceil(d0 / world), the last ones short or empty)."""
    c = -(-d0 // world)
    return [max(0, min(d0, (k + 1) * c) - k * c) for k in range(world)]


def check_distributed(distributed: bool, process_group: Any) -> bool:
    """Validate the constructor's `distributed` / `process_group` arguments."""
    if not isinstance(distributed, bool):
        raise ValueError(f"distributed must be True or False, got {distributed!r}")
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group: call "
            "torch.distributed.init_process_group(...) first (torchrun sets the environment it "
            "reads), or pass distributed=False to train in a single process")
    if process_group is not None and not distributed:
        raise ValueError("process_group is only used with distributed=True; pass "
                         "distributed=True or leave process_group=None")
    return distributed


def check_group(group: dict[str, Any], distributed: bool) -> None:
    """Reject DTensor parameters this optimizer cannot update correctly."""
    if OPTIMIZERS[group["rule"]].lmo_fn is None:  # torch's AdamW handles any DTensor itself
        return
    dtensors = [p for p in group["params"] if is_dtensor(p)]
    if dtensors and not distributed:
        raise ValueError(
            f"rule {group['rule']!r} got DTensor parameters (FSDP2's fully_shard) but "
            "distributed=False; pass distributed=True (build(..., distributed=True)) so the "
            "norms and matrix directions are computed over whole matrices")
    for p in dtensors:
        if p.device_mesh.ndim != 1 or tuple(p.placements) != (Shard(0),):
            raise ValueError(
                f"distributed=True supports DTensor parameters as FSDP2 shards them (a 1-D mesh, "
                f"placements (Shard(dim=0),)); got placements {tuple(p.placements)} on a "
                f"{p.device_mesh.ndim}-D mesh for a parameter of shape {tuple(p.shape)}")
        if p.device_mesh != dtensors[0].device_mesh:
            raise ValueError("distributed=True needs the DTensor parameters of one param group "
                             "on one device mesh; put parameters of other meshes in other groups")
    # the matrices of a group travel in one flat buffer, so they must share a dtype
    dtypes = {p.dtype for p in group["params"]}
    if distributed and OPTIMIZERS[group["rule"]].on_shards == WHOLE and len(dtypes) > 1:
        raise ValueError(f"rule {group['rule']!r} with distributed=True needs one dtype per param "
                         f"group, got {sorted(str(d) for d in dtypes)}; put parameters of "
                         "different dtypes in separate param groups")


def lmo_step(group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
             bufs: list[Tensor], process_group: Any = None) -> None:
    """One distributed LMO step of `group` (see the module docstring); `process_group` is the
    group of the DDP replicas (DTensors use their own mesh's)."""
    local_p, local_g, local_b = ([_local(t) for t in ts] for ts in (params, grads, bufs))
    functional.begin(group, local_p, local_g, local_b)

    shard = [i for i, p in enumerate(params) if is_dtensor(p)]
    repl = [i for i, p in enumerate(params) if not is_dtensor(p)]
    local = OPTIMIZERS[group["rule"]].on_shards != WHOLE
    if shard:
        pg = params[shard[0]].device_mesh.get_group()
        step = _local_shards if local else _matrix_shards
        step(group, [params[i] for i in shard], [local_p[i] for i in shard],
             [local_g[i] for i in shard], [local_b[i] for i in shard], pg)
    if repl and local:  # replicas: the single-process code, the same on every rank
        functional.apply(group, [params[i] for i in repl], [grads[i] for i in repl],
                         [bufs[i] for i in repl])
    elif repl:
        _matrix_replicas(group, [params[i] for i in repl], [grads[i] for i in repl],
                         [bufs[i] for i in repl], process_group)
    functional.end(group, local_g, local_b)


def _local_shards(group: dict[str, Any], params: list[Tensor], local_p: list[Tensor],
                  local_g: list[Tensor], local_b: list[Tensor], pg: Any) -> None:
    """ENTRYWISE (signsgd, lion) and FROBENIUS (sgd) rules on local shards, with one all_reduce
    of per-matrix sums."""
    info, target = OPTIMIZERS[group["rule"]], group["update_rms"]
    sgd = info.on_shards == FROBENIUS
    us = [functional.lmo_input(group, g, b) for g, b in zip(local_g, local_b, strict=True)]
    opts = {k: group[k] for k in info.lmo_options}
    ds = us if sgd else [info.lmo_fn(u, **opts) for u in us]
    if not sgd and target is None:  # e.g. the textbook sign step: nothing global to know
        torch._foreach_add_(local_p, ds, alpha=-group["lr"])
        return
    # sgd needs ||U||_F and the entry-wise rules RMS(lmo U), e.g. RMS(sign U): both come from a sum of squares over the
    # whole matrix, i.e. over every rank's shard. One small all_reduce serves the whole group.
    acc = torch.promote_types(us[0].dtype, torch.float32)
    sums = torch.stack([torch.linalg.vector_norm(d, dtype=acc).square() for d in ds])
    dist.all_reduce(sums, group=pg)
    numel = torch.tensor([p.numel() for p in params], dtype=acc, device=sums.device)
    tiny = torch.finfo(us[0].dtype).tiny
    if sgd:  # lmo = U / max(||U||, eps) as lmo.frobenius; its RMS follows from ||U|| alone
        norm = sums.sqrt()
        scale = 1 / norm.clamp_min(lmo._EPS)
        if target is not None:
            scale = scale * (target / (norm * scale / numel.sqrt()).clamp_min(tiny))
    else:  # RMS of lmo(U), e.g. of sign(U) = sqrt(#nonzero / numel); a zero U's step stays 0
        scale = target / (sums / numel).sqrt().clamp_min(tiny)
    for p, d, s in zip(local_p, ds, scale.unbind(0), strict=True):
        p.add_(d.mul_(s.to(d.dtype)), alpha=-group["lr"])


def _matrix_shards(group: dict[str, Any], params: list[Tensor], local_p: list[Tensor],
                   local_g: list[Tensor], local_b: list[Tensor], pg: Any) -> None:
    """Matrix rules on FSDP2 shards: U to owners, directions computed there, rows back."""
    world, rank = dist.get_world_size(pg), dist.get_rank(pg)
    by_owner = [list(range(r, len(params), world)) for r in range(world)]  # round-robin
    order = [j for js in by_owner for j in js]
    mine = by_owner[rank]
    rows = [_rows(p.shape[0], world) for p in params]
    width = [math.prod(p.shape[1:]) for p in params]
    for j, p in enumerate(local_p):
        if p.shape[0] != rows[j][rank]:  # DTensor's Shard(0) is torch.chunk; guard anyway
            raise RuntimeError(f"local shard of a {tuple(params[j].shape)} parameter has "
                               f"{p.shape[0]} rows on rank {rank}, expected {rows[j][rank]}")
    us = [functional.lmo_input(group, g, b) for g, b in zip(local_g, local_b, strict=True)]

    # send: this rank's shard of every matrix, grouped by owner; receive: from every rank k its
    # rows of each matrix this rank owns. Split sizes are exact, so nothing is padded.
    send_sizes = [sum(us[j].numel() for j in js) for js in by_owner]
    recv_sizes = [sum(rows[j][k] * width[j] for j in mine) for k in range(world)]
    send = torch.cat([us[j].reshape(-1) for j in order])
    recv = send.new_empty(sum(recv_sizes))
    dist.all_to_all_single(recv, send, recv_sizes, send_sizes, group=pg)
    pieces: dict[int, list[Tensor]] = {j: [] for j in mine}
    for k, chunk in enumerate(recv.split(recv_sizes)):
        for j, part in zip(mine, chunk.split([rows[j][k] * width[j] for j in mine]), strict=True):
            pieces[j].append(part.view(rows[j][k], *params[j].shape[1:]))
    full_u = [torch.cat(pieces[j]) for j in mine]
    directions = functional.full_directions(group, full_u) if mine else []

    # the way back: rank k gets rows [k c, (k + 1) c) of every direction this rank computed
    back = [d.split(rows[j]) for j, d in zip(mine, directions, strict=True)]
    send = torch.cat([part.reshape(-1) for k in range(world) for part in
                      (b[k] for b in back)] or [send.new_empty(0)])
    recv = send.new_empty(sum(send_sizes))
    dist.all_to_all_single(recv, send, send_sizes, recv_sizes, group=pg)
    flat = dict(zip(order, recv.split([us[j].numel() for j in order]), strict=True))
    deltas = [flat[j].view_as(p) for j, p in enumerate(local_p)]
    torch._foreach_add_(local_p, deltas, alpha=-group["lr"])


def _matrix_replicas(group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                     bufs: list[Tensor], pg: Any) -> None:
    """Matrix rules on DDP replicas: owners compute, one all_gather shares the directions."""
    world, rank = dist.get_world_size(pg), dist.get_rank(pg)
    by_owner = [list(range(r, len(params), world)) for r in range(world)]
    mine = by_owner[rank]
    full_u = [functional.lmo_input(group, grads[j], bufs[j]) for j in mine]
    directions = functional.full_directions(group, full_u) if mine else []
    # all_gather needs equal sizes: pad each rank's flat directions to the largest total
    sizes = [sum(params[j].numel() for j in js) for js in by_owner]
    send = params[0].new_zeros(max(sizes))
    if mine:
        send[:sizes[rank]] = torch.cat([d.reshape(-1) for d in directions])
    gathered = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(gathered, send, group=pg)
    flat: dict[int, Tensor] = {}
    for r, js in enumerate(by_owner):
        flat.update(zip(js, gathered[r][:sizes[r]].split([params[j].numel() for j in js]),
                        strict=True))
    deltas = [flat[j].view_as(p) for j, p in enumerate(params)]
    torch._foreach_add_(params, deltas, alpha=-group["lr"])
