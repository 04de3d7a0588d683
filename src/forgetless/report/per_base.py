"""Claims stated "whichever the base" (2 and 3), decided per base family (issue 21, paper §2).

The paper's claim 2 is that full finetuning with the pretraining optimizer's family gives the best
learning-forgetting frontier *whichever* that family is, AdamW or Muon (Fig. 1-2). Pooling the
bases of both families into one test lets a main effect of the finetuning optimizer (Muon simply
better on every base) cancel in the mean and hide a reversal on one base. So:

- Required parts. One part per (base family, cross family): "on AdamW bases, the AdamW family
  against Muon", "... against SGD", "on Muon bases, the Muon family against AdamW", each decided
  by `statistics.decide` over that base family's own (base, seed) units. Each cross family is a
  part of its own: averaging over them would let a big win over SGD hide a loss to Muon. A base
  family the paper names (AdamW, Muon) with no cross family measured is a part "not measured".
- Combination (`statistics.every_part`, not `statistics.combine`): the claim holds when every
  part holds, does not hold when any part is decisively reversed, is "partial" when every
  measured part holds but one was not measured, and is inconclusive otherwise.
- Shown beside, never deciding, for each pair of base families F, G that finetune each other:
  the consistency effect, per pretraining seed ½(e_F + e_G) where e_F is the same-minus-cross gap
  on F's base against G (a main effect of the finetuning optimizer cancels in it), and the main
  effect, per seed ½(e_G − e_F) = how much better G finetuning is than F finetuning averaged over
  both bases. Both are decided by the same rule so the reader sees their intervals.

The per-unit effect is `effects.path_gap`: the learning gap between the two methods' envelopes
over their interpolated run trajectories, over a forgetting window fixed in advance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from forgetless.analysis.pareto import dominated_share
from forgetless.metrics import X_DEFAULT
from forgetless.optim import describe

from .claim import group
from .effects import (
    FORGETTING_WINDOW,
    MIN_WINDOW,
    cloud,
    common_reach,
    measured_start,
    path_gap,
    paths,
)
from .rows import Row
from .statistics import FAILS, NOT_MEASURED, Decision, decide, every_part

REQUIRED_BASES = ("adamw", "muon")  # the paper's claim 2 names both; a missing one is a missing part


def family(optimizer: str) -> str:
    """The optimizer's norm family (adamw, lion, signsgd share one); unknown names stand alone."""
    try:
        return describe(optimizer).family
    except (KeyError, ValueError):
        return str(optimizer)


@dataclass
class PerBase:
    """Per-unit effects and their decisions for one claim decided per base family."""

    units: dict[str, dict[tuple, float]] = field(default_factory=dict)  # part -> {(base, seed): e}
    parts: dict[str, Decision] = field(default_factory=dict)  # required parts
    shown: dict[str, Decision] = field(default_factory=dict)  # consistency, main effects
    details: list[str] = field(default_factory=list)
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)  # part -> (base label, other label)

    @property
    def status(self) -> str:
        return every_part([d.status for d in self.parts.values()])

    def headline(self) -> Decision | None:
        """The part that decides the status: a reversed part if any, else the weakest measured."""
        measured = [d for d in self.parts.values() if d.status != NOT_MEASURED]
        if not measured:
            return None
        failing = [d for d in measured if d.status == FAILS]
        return min(failing or measured, key=lambda d: d.mean)


def _labels(rows: list[Row]) -> dict[str, str]:
    """family -> the base optimizer names of that family found in the rows, joined by '/'."""
    names: dict[str, set] = defaultdict(set)
    for r in rows:
        if r.base_optimizer:
            names[family(r.base_optimizer)].add(r.base_optimizer)
    return {fam: "/".join(sorted(n)) for fam, n in names.items()}


def unit_gaps(points: list[Row], same: Callable[[Row, str], bool],
              others: Callable[[list[Row], str], dict[str, list[Row]]],
              window: float = FORGETTING_WINDOW,
              x: str = X_DEFAULT) -> tuple[dict[tuple[str, str], dict[tuple, float]], list[str]]:
    """{(base family, other label): {(base optimizer, base seed): path gap, mean over tasks}}, on
    the forgetting metric x (forgetless.metrics) against the task loss."""
    gaps: dict[tuple[str, str], dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    details = []
    for (base, seed), rows in group(points, "base_optimizer", "base_seed").items():
        for (task,), task_rows in group(rows, "task").items():
            start = [(r.value(x), r.learning) for r in task_rows if r.step == 0]
            start = [s for s in start if np.isfinite(s).all()]
            f0, l0 = start[0] if start else (np.nan, np.nan)
            mine = [r for r in task_rows if same(r, base)]
            a = paths(mine, (f0, l0), x=x)
            for name, b_rows in others(task_rows, base).items():
                b = paths(b_rows, (f0, l0), x=x)
                e = path_gap(a, b, f0, window)
                cell = gaps[(family(base), name)]  # the part exists even when no unit has both methods
                if not np.isfinite(e):
                    continue
                cell[(base, seed)].append(e)
                ca, cb = cloud(mine, x), cloud(b_rows, x)
                top = max(min(f0 + window, common_reach(a, b)), f0 + MIN_WINDOW)
                guess = measured_start(a, b, f0) - f0
                details.append(f"base {base} seed {seed}, {task}: learns {e:+.3f} nats more than {name} "
                               f"over forgetting [{f0:.3f}, {top:.3f}]"
                               + (f" (one method's lowest checkpoint forgets {guess:+.3f} above the "
                                  f"base: below it, its path is interpolated from the base)" if guess > 0.05 else "")
                               + (" (one method never forgot measurably: compared at no measurable "
                                  "forgetting)" if common_reach(a, b) < f0 + MIN_WINDOW else "")
                               + "; dominates "
                               f"{dominated_share(ca, cb):.2f} of its points, is dominated on "
                               f"{dominated_share(cb, ca):.2f}")
    out = {k: {u: float(np.mean(v)) for u, v in per.items()} for k, per in gaps.items()}
    return out, details


def decide_per_base(points: list[Row], same: Callable[[Row, str], bool],
                    others: Callable[[list[Row], str], dict[str, list[Row]]], margin: float,
                    method_label: str, required: tuple[str, ...] = (),
                    window: float = FORGETTING_WINDOW, x: str = X_DEFAULT) -> PerBase:
    """Required parts per (base family, other method), plus consistency and main effects."""
    gaps, details = unit_gaps(points, same, others, window, x)
    result = decide_gaps(gaps, _labels(points), margin, method_label, required)
    result.details = details
    return result


def decide_gaps(gaps: dict[tuple[str, str], dict[tuple, float]], base_names: dict[str, str],
                margin: float, method_label: str, required: tuple[str, ...] = ()) -> PerBase:
    """The decisions from per-unit gaps {(base family, other label): {(base, seed): gap}}; the
    calibration simulation calls this directly with gaps from `effects.path_gap`."""
    result = PerBase()
    for (fam, other), units in sorted(gaps.items()):
        name = f"on {base_names.get(fam, fam)} bases: {method_label} against {other}"
        result.units[name] = units
        result.pairs[name] = (fam, other)
        result.parts[name] = decide(list(units.values()), margin)
    measured = {fam for fam, _ in gaps}
    for opt in required:
        if family(opt) not in measured:
            result.parts[f"on {opt} bases: {method_label} against another family"] = decide([])
    _consistency_and_main(result, base_names, margin)
    return result


def _by_seed(units: dict[tuple, float]) -> dict:
    seeds: dict = defaultdict(list)
    for (_base, seed), e in units.items():
        seeds[seed].append(e)
    return {s: float(np.mean(v)) for s, v in seeds.items()}


def _family_of_label(label: str) -> str | None:
    """The family of an 'other method' label ("full muon", "full adamw/lion"); None for LoRA."""
    names = label.removeprefix("full ").split("/")
    fams = {family(n) for n in names}
    return fams.pop() if len(fams) == 1 and not label.startswith("LoRA") else None


def _consistency_and_main(result: PerBase, base_names: dict[str, str], margin: float) -> None:
    """For each pair of base families F, G finetuned with each other: consistency and main effect."""
    by_pair = {(fam, _family_of_label(other)): _by_seed(result.units[name])
               for name, (fam, other) in result.pairs.items()}
    for (f, g), e_f in sorted(by_pair.items(), key=str):
        back = by_pair.get((g, f))
        if g is None or back is None or f > g:  # each unordered pair once
            continue
        seeds = sorted(set(e_f) & set(back), key=str)
        if not seeds:
            continue
        fn, gn = base_names.get(f, f), base_names.get(g, g)
        result.shown[f"consistency ({fn} and {gn} bases): ½(same − cross) per seed"] = decide(
            [(e_f[s] + back[s]) / 2 for s in seeds], margin)
        main = [(back[s] - e_f[s]) / 2 for s in seeds]  # positive = G finetuning better on both
        if np.mean(main) < 0 if main else False:
            fn, gn, main = gn, fn, [-x for x in main]
        result.shown[f"main effect: {gn} finetuning better than {fn}, mean over both bases"] = decide(main, margin)
