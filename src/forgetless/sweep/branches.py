"""Bases at several pretraining budgets for little more than the price of the longest: one
warm-up / stable / decay run per (optimizer, seed) whose constant-lr trunk is shared, and a short
decay branch per budget (Hägele et al. 2024, "Scaling laws and compute-optimal training beyond
fixed training durations"; the schedule is `forgetless.train.loop`'s "wsd").

A pretraining entry with a list of budgets B_1 < ... < B_n, at S_i = B_i / (batch x seq x
accumulation) steps each, decay fraction f, becomes, per seed:

    trunk_1: constant lr, steps 0 .. D_1            D_i = S_i - round(f S_i), the branch point
    trunk_i: continues trunk_{i-1}, steps D_{i-1} .. D_i      (base: the previous trunk cell)
    branch_i: continues trunk_i, steps D_i .. S_i, lr decaying linearly to min_lr_ratio
                                                             (base: trunk_i; the finished base)

Each is a cell of its own, so the runner's dependency order, claims and resume apply as to any
cell: the trunk is trained once, branch i and its finetunes run while later trunks train, and an
interrupted sweep continues from the last checkpoint of whichever cell it stopped in. Branch i is
the uninterrupted WSD run of S_i steps bit for bit (tests/train/test_schedule.py). Cost: the
longest trunk plus the branches, f·ΣS_i, instead of ΣS_i for one cosine run per budget.
The warm-up, `warmup` (default 0.1) of the smallest budget's steps, is the same in every piece.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forgetless.counts import parse_count
from forgetless.sweep.records import Cell
from forgetless.train.config import TrainConfig

# the training config's defaults, for settings an entry leaves out
_DEFAULT = {name: TrainConfig.model_fields[name].default for name in ("grad_accum", "warmup")}


def tokens_label(n: int) -> str:
    """250k, 1M, 1.5M, 16M: a budget as a person writes it (labels only)."""
    for suffix, unit in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= unit:
            return f"{n / unit:.4g}{suffix}"
    return str(n)


def per_step(settings: dict[str, Any]) -> int:
    return int(settings["batch_size"]) * int(settings["seq_len"]) * int(settings.get("grad_accum", _DEFAULT["grad_accum"]))


def decay_start(steps: int, decay: float) -> int:
    """As forgetless.train.loop.decay_start (kept here so a study expands without torch)."""
    return steps - max(1, round(decay * steps))


def plan(budgets: list[int], settings: dict[str, Any], decay: float) -> tuple[int, list[tuple[int, int]]]:
    """(warm-up steps, [(branch point D_i, steps S_i)] per budget) of the module docstring."""
    unit = per_step(settings)
    steps = [max(2, round(b / unit)) for b in budgets]
    points = [(decay_start(s, decay), s) for s in steps]
    warm = round(float(settings.get("warmup", _DEFAULT["warmup"])) * steps[0])
    return warm, points


def check_plan(budgets: list[int], settings: dict[str, Any], decay: float) -> None:
    """ValueError naming the field when the budgets cannot share a trunk."""
    if budgets != sorted(set(budgets)):
        raise ValueError(f"tokens: several budgets must be distinct and ascending; got {budgets}")
    missing = [k for k in ("batch_size", "seq_len") if not settings.get(k)]
    if missing:
        raise ValueError(f"settings: a pretraining entry with several budgets needs {missing} (the budgets' "
                         "steps and branch points are computed from them)")
    taken = {"schedule", "decay", "warmup_steps", "start_from", "steps"} & set(settings)
    if taken:
        raise ValueError(f"settings: {sorted(taken)} are set by the budgets' trunk and branches; give `decay:` "
                         "on the entry instead")
    warm, points = plan(budgets, settings, decay)
    starts = [d for d, _ in points]
    if starts[0] <= warm or starts != sorted(set(starts)):
        raise ValueError(f"tokens: budgets {budgets} give branch points {starts} (steps) and warm-up {warm}; "
                         "each must start its decay after the warm-up and after the previous one")


def wsd_cells(entry: Any, name: str, data: dict, diverge_factor: float,
              cell_id: Callable[[dict], str]) -> list[tuple[Cell, int | None]]:
    """The trunk and branch cells of a multi-budget entry (study.PretrainSpec), each with its
    budget (None for trunks, which are not bases)."""
    warm, points = plan(entry.budgets, entry.settings, entry.decay)
    unit = per_step(entry.settings)
    out: list[tuple[Cell, int | None]] = []
    for seed in entry.seeds:
        common = {"kind": "pretrain", "data": data, "model": entry.model, "optimizer": entry.optimizer,
                  "lr": entry.lr, "seed": seed, "settings": entry.settings, "eval_diverge_factor": diverge_factor,
                  "warmup_steps": warm}
        previous, done = None, 0
        for budget, (start, steps) in zip(entry.budgets, points, strict=True):
            trunk_cfg = {**common, "tokens": start * unit, "schedule": "constant",
                         "base": {"cell": previous} if previous else None, **_compile(entry, start - done)}
            trunk = Cell(cell_id(trunk_cfg), "pretrain", previous, f"{name}/trunk@{tokens_label(budget)}/s{seed}",
                         None, entry.lr, trunk_cfg,
                         {"base": f"{name}/trunk/s{seed}", "base_optimizer": entry.optimizer, "base_seed": seed,
                          "trunk": True, "base_tokens": start * unit})
            branch_cfg = {**common, "tokens": steps * unit, "schedule": "wsd", "decay": entry.decay,
                          "base": {"cell": trunk.cell_id}, **_compile(entry, steps - start)}
            label = f"{name}@{tokens_label(budget)}/s{seed}"
            branch = Cell(cell_id(branch_cfg), "pretrain", trunk.cell_id, label, None, entry.lr, branch_cfg,
                          {"base": label, "base_optimizer": entry.optimizer, "base_seed": seed,
                           "base_tokens": steps * unit, "budget": tokens_label(budget)})
            out += [(trunk, None), (branch, budget)]
            previous, done = trunk.cell_id, start
    return out


def _compile(entry: Any, steps: int) -> dict[str, bool]:
    """torch.compile a piece of at least `compile_steps` steps: compiling costs about a minute per
    process on a shared 2-core CPU and pays 1.3-1.9x there (docs/BENCHMARKS.md), so only long
    pieces gain. Absent otherwise, so the cell ids of uncompiled pieces do not change."""
    return {"compile": True} if entry.compile_steps and steps >= entry.compile_steps else {}


def base_ref(ref: str) -> tuple[str, int | None]:
    """A grid's base reference: NAME (every budget) or NAME@TOKENS (one budget of a multi-budget entry)."""
    name, at, budget = ref.partition("@")
    if not at:
        return ref, None
    try:
        return name, parse_count(budget, "tokens")
    except ValueError:
        return ref, None


def budget_major(cells: list[Cell]) -> list[Cell]:
    """Cells ordered by the rank of their budget among their entry's budgets (a finetune takes
    its base's), pretraining before finetuning within a rank; the runner starts cells in this
    order, so the smallest budget's bases and finetunes finish first and a sweep stopped early
    leaves whole budgets. Studies without multi-budget entries keep their order."""
    level: dict[str, int] = {}  # pretraining cell -> budget index (trunk i and branch i: i)
    for c in cells:
        if c.kind == "pretrain" and c.base_id in level:
            trunk_i = level[c.base_id]  # the base of a trunk piece or a branch is trunk i - 1 or trunk i
            level[c.cell_id] = trunk_i + 1 if c.meta.get("trunk") else trunk_i
        elif c.kind == "pretrain":
            level[c.cell_id] = 0
    if not any(level.values()):
        return cells
    key = {c.cell_id: (level[c.cell_id], 0) if c.kind == "pretrain" else (level.get(c.base_id, 0), 1) for c in cells}
    return sorted(cells, key=lambda c: key[c.cell_id])
