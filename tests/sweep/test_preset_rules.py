"""Every shipped preset (each YAML file of the preset folder, so new ones are checked as they land)
keeps the paper's regime (issue 22 §3):

- every full-finetuning grid has >= 3 lrs, each at most a third of its base's pretraining lr (the
  paper pretrains at 3e-3 and sweeps full finetuning up to 1e-3);
- every LoRA grid has >= 2 lrs;
- every finetune trains on at most 20% of its base's pretraining tokens, and at most 10% wherever
  the budget allows. "Allows" is stated in tokens: 10% of the pretraining tokens must still hold
  MIN_FINETUNE_TOKENS = 40,960 (20 steps of 16 x 128 tokens, the shortest finetune that traces a
  trajectory on the CPU presets' tasks). Below that, a finetune may take up to that floor, within
  20%. So: finetune tokens <= min(20% P, max(10% P, 40,960)).

The rule is written out here rather than imported, so that it checks the report's regime section
(forgetless.report.regime.token_cap) too.
"""

import warnings

import pytest

from forgetless.report.regime import token_cap
from forgetless.sweep import branches
from forgetless.sweep.study import expand, load_study, preset_names

MIN_FINETUNE_TOKENS = 20 * 16 * 128

# Bases a preset loads from the hub: their published pretraining budget and peak lr.
KNOWN_BASES = {
    # Touvron et al. 2023 (Llama 2), Table 1 and §2.2: 2.0T tokens, peak lr 3e-4 for 7B.
    "meta-llama/Llama-2-7b-hf": {"tokens": 2_000_000_000_000, "lr": 3e-4},
}

# Presets allowed a full-finetuning grid of fewer than 3 lrs, and why. The report still flags
# these grids as single-lr (forgetless.report.regime.single_lr_grids).
FEWER_LRS_BY_DESIGN = {
    "remedies": "compares each remedy with its plain finetune at one shared lr (1e-3, a third of "
                "the pretraining lr); an lr grid per remedy would triple its 21 minutes",
}


def _cap(p: float) -> float:
    return min(0.20 * p, max(0.10 * p, MIN_FINETUNE_TOKENS))


def _pairs(study, grid) -> list[tuple[str, dict]]:
    """(label, {"tokens", "lr"}) of every base a grid finetunes: each budget of a multi-budget
    pretraining entry (NAME@TOKENS picks one; NAME all), and hub bases from KNOWN_BASES."""
    refs = [branches.base_ref(r) for r in grid.bases] if grid.bases else None
    out = []
    for p in study.pretrain:
        name = p.name or p.optimizer
        for budget in p.budgets:
            if refs is None or (name, None) in refs or (name, budget) in refs:
                out.append((f"{name}@{budget}", {"tokens": budget, "lr": p.lr}))
    for b in study.bases:
        if refs is None or (b.name, None) in refs:
            assert b.checkpoint in KNOWN_BASES, f"{study.name}: add {b.checkpoint}'s pretraining tokens and lr"
            out.append((b.name, KNOWN_BASES[b.checkpoint]))
    return out


def _grids(study):
    """(grid index, base label, its budget, method, finetune tokens) of every grid x base x method."""
    for g, grid in enumerate(study.finetune):
        pairs = _pairs(study, grid)
        assert pairs, f"{study.name} finetune[{g}]: no base"
        for base, pre in pairs:
            for m in grid.methods:
                st = {**grid.settings, **m.settings}
                assert st.get("batch_size") and st.get("seq_len"), \
                    f"{study.name} finetune[{g}]: a preset states its batch_size and seq_len (its token budget)"
                yield g, base, pre, m, grid.steps * st["batch_size"] * st["seq_len"] * st.get("grad_accum", 1)


def test_the_rule_as_the_report_states_it():
    for p in (10_000, 100_000, 200_000, 409_599, 409_600, 1_000_000, 8_000_000_000):
        assert token_cap(p) == pytest.approx(_cap(p))
    assert _cap(200_000) == pytest.approx(40_000)  # quick: the floor, clipped to 20%
    assert _cap(1_000_000) == pytest.approx(100_000)  # 10%


@pytest.mark.parametrize("name", preset_names())
def test_preset_keeps_the_paper_regime(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RegimeWarning (> 20%), no deprecated names
        study = load_study(name)
    problems = []
    for g, base, pre, m, tokens in _grids(study):
        where = f"{name} finetune[{g}] {m.label} on {base}"
        if m.kind == "full":
            if len(m.lrs) < 3 and name not in FEWER_LRS_BY_DESIGN:
                problems.append(f"{where}: {len(m.lrs)} lr(s), a full-finetuning grid needs >= 3")
            if max(m.lrs) > pre["lr"] / 3 * (1 + 1e-9):
                problems.append(f"{where}: lr {max(m.lrs):g} above a third of the pretraining lr {pre['lr']:g}")
        elif len(m.lrs) < 2:
            problems.append(f"{where}: {len(m.lrs)} lr, a LoRA grid needs >= 2")
        if tokens > _cap(pre["tokens"]) * (1 + 1e-9):
            problems.append(f"{where}: {tokens:,} finetune tokens = {tokens / pre['tokens']:.1%} of "
                            f"{pre['tokens']:,} (cap {_cap(pre['tokens']):,.0f})")
    assert not problems, "\n".join(problems)


def test_remedies_shares_quicks_adamw_and_muon_bases():
    """So a sweep folder that ran quick pretrains nothing again for remedies (and the other way)."""
    quick = {c.cell_id for c in expand(load_study("quick")) if c.kind == "pretrain" and
             c.meta["base_optimizer"] in ("adamw", "muon")}
    remedies = {c.cell_id for c in expand(load_study("remedies")) if c.kind == "pretrain"}
    assert len(quick) == 6 and remedies == quick


@pytest.mark.parametrize("name", ["quick", "cpu-full"])
def test_cpu_presets_pretrain_row_and_column_top1_for_claim_5(name):
    """Claim 5's contrasts against AdamW (p = 1, q = inf): column top-1 (q = 1 within p = 1) and
    row top-1 (p = inf within q = inf), each with the AdamW bases' seeds."""
    study = load_study(name)
    seeds = {p.optimizer: set(p.seeds) for p in study.pretrain}
    assert {"adamw", "coltop1", "rowtop1"} <= set(seeds)
    assert seeds["coltop1"] <= seeds["adamw"] and seeds["rowtop1"] <= seeds["adamw"]
    assert len(seeds["rowtop1"]) >= 3 and len(seeds["coltop1"]) >= 3


def test_cpu_full_has_five_pretraining_seeds_per_finetuned_family():
    study = load_study("cpu-full")
    seeds = {p.optimizer: p.seeds for p in study.pretrain}
    assert len(seeds["adamw"]) >= 5 and len(seeds["muon"]) >= 5


@pytest.mark.parametrize("name", preset_names())
def test_every_pretrained_base_of_every_grid_is_checked(name):
    """The pairs checked above are the study's own (grid, base budget) pairs, with the same ratios."""
    study = load_study(name)
    ours = sorted((g, round(tokens / pre["tokens"], 9)) for g, base, pre, m, tokens in _grids(study)
                  if "@" in base and m is study.finetune[g].methods[0])
    theirs = sorted((g, round(r, 9)) for g, _, r in study.token_ratios())
    assert ours == theirs and (ours or not study.pretrain)  # llama2-7b: hub bases only
