"""Regime checks on hand-made studies whose answers are worked out by hand: budgets in tokens per
parameter, finetune/pretrain token and lr ratios, single-lr grids and grids that do not bracket
the best lr."""

import json
import warnings

import pytest

from forgetless.models import build_model, count_parameters
from forgetless.report.regime import (
    base_parameters,
    check,
    llama_parameters,
    single_lr_grids,
    token_cap,
    token_ratios,
    unbracketed_grids,
)
from forgetless.report.rows import Row
from forgetless.sweep.records import EvalPoint, Run
from forgetless.sweep.study import RegimeWarning, load_study


def _runs(rows):
    """Runs as Store.run_records gives them (status done)."""
    return [Run(status="done", **r) for r in rows]


def _points(rows):
    """Eval points as Store.eval_points gives them; only their tokens are read here."""
    return [EvalPoint(step=0, forgetting=float("nan"), learning=float("nan"), **p) for p in rows]


def _pt(method, lr, learning, step=10, seed=0):
    return Row(base_optimizer="adamw", base_seed=seed, task="arith", method=method, lr=lr,
               step=step, learning=learning, forgetting=4.0)


def test_a_grid_whose_top_lr_learns_best_is_flagged():
    rising = [_pt("full-adamw", 1e-4, 2.0), _pt("full-adamw", 3e-4, 1.5), _pt("full-adamw", 1e-3, 1.2)]
    bracketed = [_pt("full-muon", 1e-4, 2.0), _pt("full-muon", 3e-4, 1.4), _pt("full-muon", 1e-3, 1.9)]
    # The step-0 point (the base) never decides, however low its loss.
    base = [_pt("full-muon", 1e-3, 0.1, step=0)]
    lines = unbracketed_grids(rising + bracketed + base)
    assert lines == ["adamw seed 0 arith full-adamw (best lr 0.001)"]
    assert unbracketed_grids([_pt("lora8-adamw", 1e-3, 1.0)]) == []  # one lr: the single-lr check's


def test_token_ratio_from_the_last_eval_points():
    runs = _runs([{"cell_id": "b", "kind": "pretrain", "label": "adamw", "base_id": None},
                  {"cell_id": "f", "kind": "finetune", "label": "ft", "base_id": "b"}])
    points = _points([{"run_id": "b", "tokens": 500_000}, {"run_id": "b", "tokens": 1_000_000},
                      {"run_id": "f", "tokens": 0}, {"run_id": "f", "tokens": 150_000}])
    assert token_ratios(runs, points) == {"ft": pytest.approx(0.15)}
    regime = check(runs, points, [])
    assert regime.max_ratio == pytest.approx(0.15)
    line = next(x for x in regime.lines() if x.startswith("finetune tokens"))
    assert "15.0%" in line
    # 10% of 1M tokens is 100k, above the 40,960-token floor: the budget allows 10%, so 15% is flagged.
    assert regime.over_target == ["ft"] and "1 above 10% where the budget allows 10%" in line
    over = check(runs, points[:2] + _points([{"run_id": "f", "tokens": 300_000}]), [])
    assert "1 above 20%" in over.lines()[1] and over.over_target == []


def test_token_cap_is_ten_percent_or_the_floor_never_above_twenty():
    assert token_cap(1_000_000) == pytest.approx(100_000)  # 10%
    assert token_cap(300_000) == pytest.approx(40_960)  # 10% = 30k < floor 40,960 (13.7%)
    assert token_cap(100_000) == pytest.approx(20_000)  # the floor would be 41%: 20%


def _study_runs(tokens=200_704, vocab=2048, lrs=(1e-4, 3e-4, 1e-3, 3e-3), lora_lrs=(3e-3,)):
    """One AdamW base (micro, 3e-3) with 3 seeds: a full grid and a LoRA grid on each, as the store
    lists them."""
    runs, points = [], []
    for seed in range(3):
        bid = f"b{seed}"
        runs.append({"cell_id": bid, "kind": "pretrain", "label": f"adamw/s{seed}", "base_id": None, "lr": 3e-3,
                     "method": None, "config": {"model": "micro", "data": {"vocab_size": vocab}, "tokens": 200_000,
                                                "lr": 3e-3}, "meta": {"base": f"adamw/s{seed}"}})
        points.append({"run_id": bid, "tokens": tokens})
        for kind, method, grid in (("full", "full-adamw", lrs), ("lora", "lora8-adamw", lora_lrs)):
            for lr in grid:
                fid = f"{bid}-{method}-{lr}"
                runs.append({"cell_id": fid, "kind": "finetune", "label": fid, "base_id": bid, "lr": lr,
                             "method": method, "config": {"method": kind, "lr": lr},
                             "meta": {"base": f"adamw/s{seed}", "base_optimizer": "adamw", "base_seed": seed,
                                      "task": "arith", "method": method, "seed": 0}})
                points.append({"run_id": fid, "tokens": 36_864})
    return _runs(runs), _points(points)


def test_budget_in_tokens_per_parameter_against_the_built_model():
    runs, points = _study_runs()
    n = count_parameters(build_model("micro", 2048))  # the reference: the model itself
    regime = check(runs, points, [])
    assert [b.parameters for b in regime.budgets] == [n] * 3
    assert regime.budgets[0].tokens_per_parameter == pytest.approx(200_704 / n)
    first = regime.lines()[0]
    assert first.startswith(f"pretraining budget: 201k tokens on {n / 1e6:.3g}M parameters, "
                            f"{200_704 / n:.2g} tokens per parameter (adamw: 3 bases")
    # Far below the paper's 65 tokens per parameter: the line that names the convergence study.
    assert "convergence study" in regime.lines()[1] and "docs/BENCHMARKS.md" in regime.lines()[1]
    assert "far from the pretraining minimum" in regime.lines()[1]


def test_budget_past_the_convergence_studys_turn_is_not_called_far_from_a_minimum():
    """cpu-full's 16 tokens per parameter: short of the paper's 65, past where the study turns."""
    n = count_parameters(build_model("micro", 2048))
    runs, points = _study_runs(tokens=16 * n)
    line = check(runs, points, []).lines()[1]
    assert "far from" not in line and "short of the paper's about 65" in line
    assert "convergence study" in line


def test_parameters_from_the_checkpoint_config_win_over_the_preset(tmp_path):
    """A BPE may end with fewer tokens than asked: the checkpoint's config.json is what was trained."""
    model = build_model("nano", 300)
    model.config.to_json_file(tmp_path / "config.json")
    config = {"model": "nano", "data": {"vocab_size": 512}}
    run = Run("b", "pretrain", "nano", "done", checkpoint=str(tmp_path), config=config)
    assert base_parameters(run) == count_parameters(model)
    assert base_parameters(Run("b", "pretrain", "nano", "done", config=config)) == \
        count_parameters(build_model("nano", 512))
    untied = json.loads((tmp_path / "config.json").read_text()) | {"tie_word_embeddings": False}
    assert llama_parameters(untied) == count_parameters(model) + 300 * 96  # a second V x d head


def test_lr_ratios_and_the_grids_above_a_third():
    runs, points = _study_runs()
    regime = check(runs, points, [])
    assert sorted(set(regime.lr_ratios.values())) == pytest.approx([1 / 30, 0.1, 1 / 3, 1.0])
    line = next(x for x in regime.lines() if x.startswith("full-finetuning lr"))
    # 3e-3 on a 3e-3 base is 1; 1e-3 is exactly a third and is not flagged: 3 finetunes (one a seed).
    assert "1/30-1 " in line and "3 finetunes above 1/3" in line
    assert sorted(set(regime.lora_lr_ratios.values())) == pytest.approx([1.0])
    ok_runs, ok_points = _study_runs(lrs=(1e-4, 3e-4, 1e-3))
    ok = next(x for x in check(ok_runs, ok_points, []).lines() if x.startswith("full-finetuning lr"))
    assert "above" not in ok
    # A grid learning best at its top lr: named as what a capped grid shows, only when it is capped.
    rising = [_pt("full-adamw", lr, 2.0 - i * 0.1) for i, lr in enumerate((1e-4, 3e-4, 1e-3))]
    capped = check(ok_runs, ok_points, rising).lines()[-1]
    assert capped.startswith("1 grid(s) learn best") and "not a sign of a grid set too low" in capped
    assert "not a sign" not in check(runs, points, rising).lines()[-1]  # this grid reaches 3e-3


def test_single_lr_grids_are_flagged_once_per_family():
    runs, points = _study_runs()
    assert single_lr_grids(runs) == ["arith lora8-adamw on adamw bases (lr 0.003)"]
    line = next(x for x in check(runs, points, []).lines() if "single lr" in x)
    assert line.startswith("1 grid(s) have a single lr")
    two, _ = _study_runs(lora_lrs=(1e-3, 3e-3))
    assert single_lr_grids(two) == []


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
