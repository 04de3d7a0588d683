"""Regime checks: finetune/pretrain token ratios and grids that do not bracket the best lr."""

import warnings

import pytest

from forgetless.report.regime import check, token_ratios, unbracketed_grids
from forgetless.sweep.study import RegimeWarning, load_study


def _pt(method, lr, learning, step=10, seed=0):
    return {"base_optimizer": "adamw", "base_seed": seed, "task": "arith", "method": method, "lr": lr,
            "step": step, "learning": learning, "forgetting": 4.0}


def test_a_grid_whose_top_lr_learns_best_is_flagged():
    rising = [_pt("full-adamw", 1e-4, 2.0), _pt("full-adamw", 3e-4, 1.5), _pt("full-adamw", 1e-3, 1.2)]
    bracketed = [_pt("full-muon", 1e-4, 2.0), _pt("full-muon", 3e-4, 1.4), _pt("full-muon", 1e-3, 1.9)]
    # The step-0 point (the base) never decides, however low its loss.
    base = [_pt("full-muon", 1e-3, 0.1, step=0)]
    lines = unbracketed_grids(rising + bracketed + base)
    assert lines == ["adamw seed 0 arith full-adamw (best lr 0.001)"]
    assert unbracketed_grids([_pt("lora8-adamw", 1e-3, 1.0)]) == []  # one lr: nothing to bracket


def test_token_ratio_from_the_last_eval_points():
    runs = [{"cell_id": "b", "kind": "pretrain", "label": "adamw", "base_id": None},
            {"cell_id": "f", "kind": "finetune", "label": "ft", "base_id": "b"}]
    points = [{"run_id": "b", "tokens": 500_000}, {"run_id": "b", "tokens": 1_000_000},
              {"run_id": "f", "tokens": 0}, {"run_id": "f", "tokens": 150_000}]
    assert token_ratios(runs, points) == {"ft": pytest.approx(0.15)}
    regime = check(runs, points, [])
    assert regime.max_ratio == pytest.approx(0.15) and "15.0%" in regime.lines()[0]
    over = check(runs, points[:2] + [{"run_id": "f", "tokens": 300_000}], [])
    assert "1 above the limit" in over.lines()[0]


def _study(steps):
    return {"name": "r", "pretrain": [{"model": "nano", "optimizer": "adamw", "tokens": "100k"}],
            "finetune": [{"tasks": ["arith"], "steps": steps, "eval_every": 1,
                          "settings": {"batch_size": 10, "seq_len": 100},
                          "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4]}]}]}


def test_the_study_loader_warns_above_twenty_percent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_study(_study(20))  # 20 x 10 x 100 = 20k tokens: 20% of 100k, at the limit
    with pytest.warns(RegimeWarning, match="finetune\\[0\\] on base adamw trains on 21%"):
        load_study(_study(21))


@pytest.mark.parametrize("preset", ["quick", "cpu-full", "gpt2"])
def test_presets_stay_in_the_regime(preset):
    ratios = [r for *_, r in load_study(preset).token_ratios()]
    assert ratios and max(ratios) <= 0.20
