"""Muon's optimizer step across processes: round-robin orthogonalisation against every rank doing all.

Two processes (gloo on CPU, NCCL on a GPU machine with --device cuda) hold the hidden matrices of a
model preset (default gpt2-small: 12 layers, 7 matrices each) with a fixed random gradient, and
time `SteepestDescent(rule="muon").step()` in turns, in the same processes:

  replicated-all   DDP replicas, distributed=False: every rank orthogonalises every matrix
                   (what a plain optimizer does under DDP)
  replicated-rr    DDP replicas, distributed=True: each rank orthogonalises its round-robin share,
                   one all_gather shares the results
  fsdp-rr          FSDP2 shards (fully_shard per matrix), distributed=True: one all_to_all gathers
                   each matrix to its owner, one sends the rows back
  single           one process, the whole step (measured by rank 0 alone, the others idle)

Printed: the median over rounds of each contender's step time and its ratio to replicated-all in
the same round. With W ranks the round-robin can at best approach 1/W of the Newton-Schulz work
plus the communication.

    python benchmarks/distributed_step.py                       # gpt2-small matrices, 2 CPU processes
    python benchmarks/distributed_step.py --preset small --rounds 5
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _shapes(preset: str) -> list[tuple[int, int]]:
    from forgetless.models import PRESETS

    cfg = PRESETS[preset]
    d, f, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * d // cfg["num_attention_heads"]
    return [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)] * layers


def _module(shapes, device) -> torch.nn.Module:
    torch.manual_seed(0)
    mods = torch.nn.ModuleList(torch.nn.Linear(i, o, bias=False) for o, i in shapes).to(device)
    for m in mods:
        m.weight.grad = torch.randn_like(m.weight)
    return mods


def _time_step(opt, device, n: int) -> float:
    dist.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    return (time.perf_counter() - t) / n


def _child(rank: int, world: int, port: int, args) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    from forgetless.optim import SteepestDescent

    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank % torch.cuda.device_count()) if args.device == "cuda" else torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    shapes = _shapes(args.preset)
    kw = dict(rule="muon", lr=1e-3)
    contenders = {}
    rep = _module(shapes, device)
    contenders["replicated-all"] = SteepestDescent(rep.parameters(), **kw)
    rep2 = _module(shapes, device)
    contenders["replicated-rr"] = SteepestDescent(rep2.parameters(), distributed=True, **kw)
    sh = _module(shapes, device)
    grads = [m.weight.grad for m in sh]
    for m in sh:
        m.weight.grad = None
        fully_shard(m)
    for m, g in zip(sh, grads, strict=True):
        m.weight.grad = distribute_tensor(g, m.weight.device_mesh, m.weight.placements)
    contenders["fsdp-rr"] = SteepestDescent(sh.parameters(), distributed=True, **kw)
    single = SteepestDescent(_module(shapes, device).parameters(), **kw) if rank == 0 else None

    for opt in contenders.values():  # warm-up (allocations, first collectives)
        _time_step(opt, device, 1)
    times: dict[str, list[float]] = {k: [] for k in [*contenders, "single"]}
    for _ in range(args.rounds):
        for name, opt in contenders.items():
            times[name].append(_time_step(opt, device, args.per_round))
        dist.barrier()
        if rank == 0:
            t = time.perf_counter()
            for _ in range(args.per_round):
                single.step()
            times["single"].append((time.perf_counter() - t) / args.per_round)
        dist.barrier()
    if rank == 0:
        base = times["replicated-all"]
        n = sum(a * b for a, b in shapes)
        print(f"{args.preset}: {len(shapes)} matrices, {n / 1e6:.1f}M weights, {world} processes on "
              f"{args.device}, {args.threads} thread(s) each, median of {args.rounds} rounds x {args.per_round} steps")
        for name, ts in times.items():
            ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
            print(f"  {name:15s} {statistics.median(ts) * 1e3:9.1f} ms/step   vs replicated-all {ratio:5.2f}x")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2-small")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=2)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_child, args=(args.world, port, args), nprocs=args.world)


if __name__ == "__main__":
    main()
