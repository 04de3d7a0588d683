"""SteepestDescent(distributed=True) on 2 gloo processes against the single-process optimizer.

One launch of 2 processes runs every rule of `OPTIMIZERS`, and two rules registered by the
worker itself (tests/optim/optim_throwaway_rules.py), twice: on FSDP2 shards (`fully_shard`,
DTensor parameters with uneven and empty shards) and on DDP replicas. Each process also runs the
single-process optimizer on an unsharded copy with the same data, records how far the distributed
run is from it, and the tests below assert on those records. The single-process optimizer is the
reference: tests/optim/test_optim_reference.py checks it against torch's AdamW and Muon.
"""

import os
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from optim_throwaway_rules import ENTRYWISE_RULE, WHOLE_RULE, register_throwaway
from torch import nn

from forgetless.optim import (
    ENTRYWISE,
    FROBENIUS,
    OPTIMIZERS,
    WHOLE,
    SteepestDescent,
    build,
    functional,
)

WORLD, STEPS = 2, 3
OPTS = dict(lr=0.05, weight_decay=0.1)
RTOL, ATOL = 1e-5, 1e-6
# how the distributed step treats each rule: local up to per-matrix sums, or whole matrices
LOCAL_RULES = ["signsgd", "lion", "sgd"]
MATRIX_RULES = ["muon", "coltop1", "rowtop1", "colnorm", "rownorm"]
UNSCALED = ["signsgd", "sgd", "muon"]  # also run with update_rms=None
ONE_MATRIX = ["muon", "rownorm", "sgd", "lion"]  # also run on `One`, a lone (1, 4) matrix
N_MATRICES = 6  # a, b, d, e (Linear) + c, f (Conv1D, the transposed group); biases go to AdamW


class Conv1D(nn.Module):
    """GPT-2's layout: weight (d_in, d_out), y = x W; `build` puts it in a transposed group."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_in, d_out) * 0.3)

    def forward(self, x):
        return x @ self.weight


class Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(8, 5)  # (5, 8): 3 + 2 rows on the two ranks
        self.b = nn.Linear(5, 8)  # (8, 5): tall, Muon flips it
        self.d = nn.Linear(4, 1, bias=False)  # (1, 4): rank 1's shard is empty
        self.e = nn.Linear(8, 5, bias=False)  # a's shape: batched with a (and b, for Muon)
        self.c = Conv1D(3, 6)  # stored (d_in, d_out) = (3, 6): 2 + 1 rows
        self.f = Conv1D(6, 3)  # (6, 3): sharded along d_in, tall for Muon

    def forward(self, xs):
        outs = [self.a(xs[8]), self.b(xs[5]), self.d(xs[4]), self.e(xs[8]), self.c(xs[3]),
                self.f(xs[6])]
        return sum((o - 1).square().mean() for o in outs)


class One(nn.Module):
    """A single (1, 4) matrix: rank 1 holds an empty shard and owns no matrix."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.d = nn.Linear(4, 1, bias=False)

    def forward(self, xs):
        return (self.d(xs[4]) - 1).square().mean()


def _inputs(step: int) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return {k: torch.randn(4, k, generator=gen) for k in (3, 4, 5, 6, 8)}


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _mismatch(a: torch.Tensor, b: torch.Tensor) -> str | None:
    """None when a and b agree to RTOL/ATOL, else torch's description of the difference."""
    try:
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    except AssertionError as err:
        return str(err)
    return None


def _compare(model: nn.Module, opt, ref: nn.Module, ref_opt) -> dict[str, str | None]:
    """Parameters and optimizer state of a distributed run against the single-process one."""
    out = {}
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        name = name.removeprefix("module.")  # DDP's wrapper
        out[name] = _mismatch(_full(p), ref_params[name])
        for key, value in opt.state[p].items():
            out[f"{name}:{key}"] = _mismatch(_full(value).float(),
                                             ref_opt.state[ref_params[name]][key].float())
    return out


def _counting(seen: list[int]):
    """functional.direction that records how many matrices each call gets."""
    original = functional.direction

    def direction(rule, stacked, **kwargs):
        seen.append(stacked.shape[0])
        return original(rule, stacked, **kwargs)
    return direction


def _fsdp_case(rule: str, mesh, ckpt_dir: str, seen: list[int], make=Net,
               **opts) -> dict:
    from torch.distributed.checkpoint import load, save
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.fsdp import fully_shard

    def sharded(seed: int):
        model = fully_shard(make(seed), mesh=mesh)
        return model, build(model, rule, distributed=True, **OPTS, **opts)

    ref = make(0)
    ref_opt = build(ref, rule, **OPTS, **opts)
    model, opt = sharded(0)
    resumed = resumed_opt = None
    count = 0
    for step in range(STEPS):
        if step == STEPS - 1:  # checkpoint after STEPS - 1 steps, resume into another init
            save(dict(zip(("model", "optim"), get_state_dict(model, opt), strict=True)),
                 checkpoint_id=ckpt_dir)
            resumed, resumed_opt = sharded(1)
            msd, osd = get_state_dict(resumed, resumed_opt)
            load({"model": msd, "optim": osd}, checkpoint_id=ckpt_dir)
            set_state_dict(resumed, resumed_opt, model_state_dict=msd, optim_state_dict=osd)
        xs = _inputs(step)
        for m, o in [(ref, ref_opt), (model, opt), (resumed, resumed_opt)]:
            if m is None:
                continue
            o.zero_grad()
            m(xs).backward()
            before = len(seen)
            o.step()
            if o is opt:
                count += sum(seen[before:])
    resume_exact = all(torch.equal(p.to_local(), q.to_local()) for p, q in
                       zip(model.parameters(), resumed.parameters(), strict=True))
    resume_exact &= all(torch.equal(_full(opt.state[p][k]), _full(resumed_opt.state[q][k]))
                        for p, q in zip(model.parameters(), resumed.parameters(), strict=True)
                        for k in opt.state[p])
    moved = not torch.equal(_full(model.d.weight), make(0).d.weight)
    return dict(mismatch=_compare(model, opt, ref, ref_opt), count=count, moved=moved,
                resume_exact=resume_exact,
                state_is_dtensor=all(type(v).__name__ == "DTensor" for v in
                                     opt.state[model.d.weight].values() if v.ndim > 0))


def _ddp_case(rule: str, seen: list[int]) -> dict:
    ref = Net(0)
    ref_opt = build(ref, rule, **OPTS)
    model = nn.parallel.DistributedDataParallel(Net(0))
    opt = build(model, rule, distributed=True, **OPTS)
    count = 0
    for step in range(STEPS):
        xs = _inputs(step)  # the same batch on both ranks: DDP's average is the full gradient
        for m, o in [(ref, ref_opt), (model, opt)]:
            o.zero_grad()
            m(xs).backward()
            before = len(seen)
            o.step()
            if o is opt:
                count += sum(seen[before:])
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    copies = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(copies, flat)
    return dict(mismatch=_compare(model, opt, ref, ref_opt), count=count,
                replicas_equal=all(torch.equal(c, copies[0]) for c in copies))


def _rejections(mesh) -> dict[str, str]:
    """Messages of the ValueErrors for DTensors the optimizer must refuse."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, distribute_tensor

    out = {}
    try:
        build(fully_shard(Net(0), mesh=mesh), "muon", lr=0.01)  # distributed left False
    except ValueError as err:
        out["no_distributed"] = str(err)
    replicated = nn.Parameter(distribute_tensor(torch.ones(4, 4), mesh, [Replicate()]))
    try:
        SteepestDescent([replicated], rule="muon", distributed=True)
    except ValueError as err:
        out["placement"] = str(err)
    return out


def _worker(rank: int, tmp: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    # a short timeout turns a rank stuck in a collective (the other one failed) into an error
    dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp, "store"), WORLD),
                            rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    seen: list[int] = []
    functional.direction = _counting(seen)
    results: dict = {}
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        register_throwaway()  # a rule added in one file runs sharded like the built-in ones
        for rule in OPTIMIZERS:
            results[("fsdp", rule)] = _fsdp_case(rule, mesh, os.path.join(tmp, rule), seen)
            results[("ddp", rule)] = _ddp_case(rule, seen)
        for rule in UNSCALED:  # the branches without the RMS alignment
            results[("fsdp", rule, "unscaled")] = _fsdp_case(
                rule, mesh, os.path.join(tmp, f"{rule}-unscaled"), seen, update_rms=None)
        for rule in ONE_MATRIX:
            results[("fsdp", rule, "one")] = _fsdp_case(
                rule, mesh, os.path.join(tmp, f"{rule}-one"), seen, make=One)
        results["rejections"] = _rejections(mesh)
    except BaseException:
        results["error"] = traceback.format_exc()
    finally:
        torch.save(results, os.path.join(tmp, f"rank{rank}.pt"))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[dict]:
    """Results of both ranks, from one launch of WORLD processes."""
    tmp = str(tmp_path_factory.mktemp("sharded"))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(rank, tmp)) for rank in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    results = []
    for rank in range(WORLD):
        path = os.path.join(tmp, f"rank{rank}.pt")
        assert os.path.exists(path), f"rank {rank} wrote no results (exit code {procs[rank].exitcode})"
        res = torch.load(path, weights_only=False)
        assert "error" not in res, f"rank {rank} failed:\n{res['error']}"
        results.append(res)
    return results


def _bad(mismatch: dict[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in mismatch.items() if v is not None}


@pytest.mark.parametrize("rule", list(OPTIMIZERS))
def test_fsdp2_matches_single_process(runs, rule):
    for rank, res in enumerate(runs):
        case = res[("fsdp", rule)]
        assert not _bad(case["mismatch"]), f"rank {rank}: {_bad(case['mismatch'])}"
        assert case["moved"]
        assert case["state_is_dtensor"]  # sharded state, as distributed checkpointing expects


@pytest.mark.parametrize("rule", UNSCALED)
def test_fsdp2_matches_single_process_without_rms_alignment(runs, rule):
    for rank, res in enumerate(runs):
        case = res[("fsdp", rule, "unscaled")]
        assert not _bad(case["mismatch"]), f"rank {rank}: {_bad(case['mismatch'])}"
        assert case["moved"] and case["resume_exact"]


@pytest.mark.parametrize("rule", ONE_MATRIX)
def test_fsdp2_lone_matrix_with_an_empty_shard(runs, rule):
    for rank, res in enumerate(runs):
        case = res[("fsdp", rule, "one")]
        assert not _bad(case["mismatch"]), f"rank {rank}: {_bad(case['mismatch'])}"
        assert case["moved"] and case["resume_exact"]
    # the lone matrix is matrix 0: rank 0 owns it, rank 1 computes nothing
    expected = [STEPS, 0] if rule in MATRIX_RULES else [0, 0]
    assert [res[("fsdp", rule, "one")]["count"] for res in runs] == expected


@pytest.mark.parametrize("rule", list(OPTIMIZERS))
def test_ddp_replicas_match_single_process(runs, rule):
    for rank, res in enumerate(runs):
        case = res[("ddp", rule)]
        assert not _bad(case["mismatch"]), f"rank {rank}: {_bad(case['mismatch'])}"
        assert case["replicas_equal"]


@pytest.mark.parametrize("rule", list(OPTIMIZERS))
def test_fsdp2_checkpoint_resume_is_exact(runs, rule):
    # saved with torch.distributed.checkpoint after 2 steps, loaded into a model and optimizer
    # built from another init: the 3rd step equals the uninterrupted run's, bit for bit
    for res in runs:
        assert res[("fsdp", rule)]["resume_exact"]


@pytest.mark.parametrize("rule", MATRIX_RULES)
def test_each_rank_computes_its_share_of_matrices(runs, rule):
    # 6 matrices: rank 0 owns a, d (main group) and c (transposed group), rank 1 owns b, e, f;
    # each matrix's direction is computed once per step, by its owner only
    for kind in ("fsdp", "ddp"):
        counts = [res[(kind, rule)]["count"] for res in runs]
        assert counts == [STEPS * N_MATRICES // WORLD] * WORLD, (kind, counts)


def test_every_rule_is_covered():
    assert sorted(OPTIMIZERS) == sorted(["adamw", *LOCAL_RULES, *MATRIX_RULES])
    on_shards = {n: i.on_shards for n, i in OPTIMIZERS.items() if i.lmo_fn is not None}
    assert sorted(n for n, s in on_shards.items() if s != WHOLE) == sorted(LOCAL_RULES)
    assert {on_shards["sgd"], on_shards["lion"], on_shards["signsgd"]} == {FROBENIUS, ENTRYWISE}


@pytest.mark.parametrize("rule", [ENTRYWISE_RULE, WHOLE_RULE])
def test_a_rule_registered_in_one_file_runs_sharded_and_replicated(runs, rule):
    for rank, res in enumerate(runs):
        for kind in ("fsdp", "ddp"):
            case = res[(kind, rule)]
            assert not _bad(case["mismatch"]), f"rank {rank} {kind}: {_bad(case['mismatch'])}"
        assert res[("fsdp", rule)]["moved"] and res[("fsdp", rule)]["resume_exact"]
        assert res[("ddp", rule)]["replicas_equal"]
    # the entry-wise rule runs on local shards; the whole-matrix one on each matrix's owner
    per_rank = 0 if rule == ENTRYWISE_RULE else STEPS * N_MATRICES // WORLD
    assert [res[("fsdp", rule)]["count"] for res in runs] == [per_rank] * WORLD


@pytest.mark.parametrize("rule", LOCAL_RULES)
def test_local_rules_need_no_owner(runs, rule):
    # on shards these LMOs run on the local shard (no whole-matrix call at all); on replicas
    # every rank computes every matrix, as one process does
    assert [res[("fsdp", rule)]["count"] for res in runs] == [0] * WORLD
    assert [res[("ddp", rule)]["count"] for res in runs] == [STEPS * N_MATRICES] * WORLD


def test_dtensor_parameters_are_rejected_without_distributed_or_as_non_fsdp(runs):
    msgs = runs[0]["rejections"]
    assert "distributed=True" in msgs["no_distributed"]
    assert "Shard(dim=0)" in msgs["placement"] and "Replicate" in msgs["placement"]


def test_distributed_needs_an_initialised_process_group():
    assert not dist.is_initialized()
    param = nn.Parameter(torch.ones(2, 2))
    with pytest.raises(ValueError, match="distributed=True needs an initialised"):
        SteepestDescent([param], rule="muon", distributed=True)
    with pytest.raises(ValueError, match="distributed=True needs an initialised"):
        build([("w", param)], "muon", lr=0.01, distributed=True)
    with pytest.raises(ValueError, match="process_group is only used with distributed=True"):
        SteepestDescent([param], rule="muon", process_group=object())
