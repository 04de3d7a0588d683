"""How often `forgetless compare` is right, on panels whose truth is known (many remedies at once).

A panel of k remedies makes k(k−1)/2 pairwise tests; at LEVEL each, equal remedies would be called
different somewhere in most panels. Simulated panels follow tests/report/test_compare.py's model
(a run gains g(t) nats of task loss and pays forgetting cost·g², so only the cost ranks a remedy;
speed and learning rate move a run along its frontier, not the frontier):
- null: 10 remedies with one cost and different speeds; no pair may be decided;
- one better: the same, with one remedy at a quarter of the cost; it should be named best, and
  nothing may be called better than it.
"""

from __future__ import annotations

import numpy as np

from forgetless.report.compare import compare_panel
from forgetless.report.statistics import FAILS, HOLDS, LEVEL

LRS, STEPS, COST, NOISE, SEEDS, PANELS = (1e-4, 1e-3), 5, 0.4, 0.015, 3, 60


def _rows(rng, costs: dict[str, float], speeds: dict[str, float]) -> list[dict]:
    rows = []
    for seed in range(SEEDS):
        f0, l0 = 4.0 + rng.normal(0, 0.05), 3.0 + rng.normal(0, 0.05)
        for name, cost in costs.items():
            for lr in LRS:
                run = f"s{seed}-{name}-{lr:g}"
                for t in range(STEPS + 1):
                    g = 1.2 * (1 - np.exp(-speeds[name] * (lr / LRS[0]) * t / STEPS))
                    noise = (0.0, 0.0) if t == 0 else tuple(rng.normal(0, NOISE, 2))
                    rows.append({"run_id": run, "base": "adamw", "base_optimizer": "adamw", "base_seed": seed,
                                 "task": "arith", "method": name, "remedy": name, "wise": None, "lr": lr, "step": t,
                                 "forgetting": f0 + cost * g * g + noise[0], "learning": l0 - g + noise[1],
                                 "tokens": 1000 * t, "replay_tokens": None, "wise_evaluations": None,
                                 "optimizer": "adamw"})
    return rows


NAMES = [f"r{i}" for i in range(10)]
SPEEDS = dict(zip(NAMES, np.linspace(0.6, 1.5, len(NAMES)), strict=True))


def test_equal_remedies_are_almost_never_told_apart() -> None:
    rng = np.random.default_rng(0)
    any_decided = 0
    for _ in range(PANELS):
        pc = compare_panel("adamw", "arith", _rows(rng, dict.fromkeys(NAMES, COST), SPEEDS))
        assert len(pc.pairs) == 45
        any_decided += any(p.decision.status in (HOLDS, FAILS) for p in pc.pairs)
    # Holm keeps the family's error at LEVEL (5%); 60 panels: allow sampling noise up to 10%
    assert any_decided / PANELS <= 2 * LEVEL, f"{any_decided}/{PANELS} null panels decided a pair"


def test_one_better_remedy_is_found_and_never_beaten() -> None:
    rng = np.random.default_rng(1)
    named, decided = 0, 0
    for _ in range(PANELS):
        costs = {**dict.fromkeys(NAMES, COST), "r3": COST / 4}
        pc = compare_panel("adamw", "arith", _rows(rng, costs, SPEEDS))
        for p in pc.pairs:  # nothing is decisively better than the better remedy
            if "r3" in (p.a, p.b):
                loser_is_r3 = (p.a == "r3" and p.decision.status == FAILS) or (p.b == "r3" and p.decision.status == HOLDS)
                assert not loser_is_r3, p.decision.text()
        named += pc.best == "r3"
        decided += pc.best == "r3" and "decisively better" in pc.answer and "no remedy" not in pc.answer
    assert named / PANELS >= 0.9, f"r3 named best in {named}/{PANELS}"
    # Holm's price at 3 seeds and 45 pairs: decided in 40/60 here (147/200 with other draws),
    # against 200/200 with each pair at LEVEL alone, which decided a pair in 179/200 null panels
    assert decided / PANELS >= 0.6, f"r3 decided best in {decided}/{PANELS}"
