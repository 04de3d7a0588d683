"""forgetless compare on results stores whose right answer is known.

Runs follow the calibration model of tests/report/simulate.py: a run at learning rate η gains
g(t) = G·(1 − exp(−v·(η/η0)·t/T)) nats of task loss and pays forgetting c·g², so a remedy's
frontier is F = F0 + c·(L0 − L)² and only its cost c ranks it. Known truth: WiSE on the AdamW
finetune (c/4) < replay (c/2) < plain AdamW (c) < Muon (2c); in the null store two remedies
share c and differ in speed only, so no verdict may be decisive.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from forgetless.analysis.frontier import panels
from forgetless.cli import app
from forgetless.report.compare import compare, rows_from_store
from forgetless.report.statistics import FAILS, HOLDS, INCONCLUSIVE
from forgetless.sweep.cell import first_loss
from forgetless.sweep.records import Cell
from forgetless.sweep.store import Store

LRS = (1e-4, 3e-4, 1e-3)
STEPS, COST, NOISE = 5, 0.4, 0.015


def _curve(rng, f0, l0, cost, speed, lr):
    out = [(0, f0, l0, 1.2 * 0)]
    for t in range(1, STEPS + 1):
        g = 1.2 * (1 - np.exp(-speed * (lr / LRS[0]) * t / STEPS))
        out.append((t, f0 + cost * g * g + rng.normal(0, NOISE), l0 - g + rng.normal(0, NOISE), g))
    return out


def _store(path, methods: dict[str, tuple[float, float, dict]], wise_cost: float | None = None, seeds=3, rng_seed=0):
    """A store with finetune cells of `methods` (name -> (cost, speed, settings)) on 3 AdamW bases,
    task arith; WiSE points on the first method's runs when `wise_cost` is given."""
    rng = np.random.default_rng(rng_seed)
    store = Store(path / "results.sqlite")
    cells, points = [], {}
    for seed in range(seeds):
        f0, l0 = 4.0 + rng.normal(0, 0.05), 3.0 + rng.normal(0, 0.05)
        for k, (name, (cost, speed, settings)) in enumerate(methods.items()):
            for lr in LRS:
                cid = f"s{seed}-{name}-{lr:g}"
                cells.append(Cell(cid, "finetune", f"base{seed}", cid, name, lr, {"settings": settings},
                                  {"base": f"adamw/s{seed}", "base_optimizer": "adamw", "base_seed": seed,
                                   "task": "arith", "method": name, "seed": 0}))
                curve = _curve(rng, f0, l0, cost, speed, lr)
                pts = [{"step": t, "tokens": 1000 * t, "forgetting": f, "learning": y, "wall_time": 0.0,
                        **({"replay_tokens": 50 * t} if settings.get("replay") else {})} for t, f, y, _ in curve]
                if k == 0 and wise_cost is not None:  # WiSE: the end's gain scaled by α, on a cheaper curve
                    g_end = curve[-1][3]
                    for i, alpha in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
                        g = alpha * g_end
                        f = f0 if alpha == 0 else f0 + wise_cost * g * g + rng.normal(0, NOISE)
                        y = l0 if alpha == 0 else l0 - g + rng.normal(0, NOISE)
                        pts.append({"step": -(i + 1), "wise": alpha, "finetune_step": STEPS, "tokens": 5000,
                                    "forgetting": f, "learning": y, "wise_evaluations": 5, "wall_time": 0.0})
                points[cid] = pts
    store.add_study("remedies-test", {"name": "remedies-test"}, cells)
    for cid, pts in points.items():
        store.add_points(cid, pts)
    return store


KNOWN = {"full-adamw": (COST, 1.0, {}), "full-adamw-replay5": (COST / 2, 1.0, {"replay": 0.05}),
         "full-muon": (2 * COST, 1.5, {})}


def test_known_ranking_is_found_and_decided(tmp_path):
    with _store(tmp_path, KNOWN, wise_cost=COST / 4) as store:
        rows = rows_from_store(store, "remedies-test")
        [pc] = compare(rows)
        # every WiSE point became its own remedy; α = 0 (the base) is in no cloud
        assert pc.remedies == ["full-adamw", "full-adamw+wise", "full-adamw-replay5", "full-muon"]
        assert len(pc.clouds["full-adamw+wise"]) == 3 * 3 * 4
        order = ["full-adamw+wise", "full-adamw-replay5", "full-adamw", "full-muon"]  # the truth, best first
        for p in pc.pairs:
            want = HOLDS if order.index(p.a) < order.index(p.b) else FAILS
            assert p.decision.status == want, (p.a, p.b, p.decision.text())
            assert p.decision.n_units == 3
        assert pc.best == "full-adamw+wise" and "decisively better than each of the other 3" in pc.answer
        # Δ-view: within the tightest budget (Δ 0.1 nats, before any run has reached its end), the
        # cheaper remedy learns more; larger budgets reach each remedy's last point, where they tie
        tight = np.array([pc.delta[m][0] for m in order])
        assert np.isfinite(tight).all() and (np.diff(tight) > 0).all()
        # costs beside them: replay tokens only on the replay remedy, WiSE evaluations only on WiSE
        assert pc.cost["full-adamw-replay5"]["replay_tokens"] == 250 and pc.cost["full-adamw"]["replay_tokens"] == 0
        assert pc.cost["full-adamw+wise"]["wise_evaluations"] == 5 and pc.cost["full-muon"]["wise_evaluations"] == 0


def test_same_frontier_is_never_decided(tmp_path):
    same = {"full-adamw": (COST, 1.0, {}), "full-adamw-l2sp": (COST, 0.6, {"l2sp": 0.01})}
    with _store(tmp_path, same) as store:
        [pc] = compare(rows_from_store(store, "remedies-test"))
    assert [p.decision.status for p in pc.pairs] == [INCONCLUSIVE]
    assert "no remedy's frontier is decisively better" in pc.answer


def test_wise_points_stay_out_of_trajectories(tmp_path):
    with _store(tmp_path, {"full-adamw": (COST, 1.0, {})}, wise_cost=COST / 4, seeds=1) as store:
        pts = store.points(study="remedies-test")
        assert any((p.get("extra") or {}).get("wise") is not None for p in pts)
        [panel] = panels(pts)
        assert list(panel.methods) == ["full-adamw"] and (panel.methods["full-adamw"].steps > 0).all()
        cell = Cell("s0-full-adamw-0.0001", "finetune", None, "", None, None, {})
        first = [p for p in pts if p["run_id"] == cell.cell_id and p["step"] == 0][0]
        assert first_loss(store, cell) == first["learning"]  # not a WiSE point's (negative step, sorted first)


def test_compare_command_writes_figures_and_answer(tmp_path):
    _store(tmp_path, KNOWN, wise_cost=COST / 4).close()
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "full-adamw+wise gives the best frontier" in result.output
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| full-adamw-replay5 |" in md and "replay tokens/run" in md and "WiSE evaluations/run" in md
    assert (tmp_path / "cmp" / "compare-adamw-arith.png").stat().st_size > 10_000


def test_compare_command_without_results_is_a_user_error(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nowhere.yaml")])
    assert result.exit_code == 2


@pytest.mark.parametrize("bad", ["quick"])
def test_compare_on_a_study_without_a_store(tmp_path, bad):
    result = CliRunner().invoke(app, ["compare", bad, "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "no results yet" in result.output


def test_compare_one_run_directory(tmp_path):
    # A `forgetless finetune --wise` run directory: its trajectory against its own WiSE curve; one
    # unit, so nothing is decided, and the answer says more seeds would decide.
    import json

    run = tmp_path / "ft"
    run.mkdir()
    (run / "config.yaml").write_text("base: runs/base\ntask: arith\nmethod: full\noptimizer: adamw\nlr: 0.001\n")
    lines = [{"kind": "header"}]
    lines += [{"kind": "eval", "step": s, "tokens": 100 * s, "forgetting": 4.0 + 0.1 * s, "learning": 3.0 - 0.2 * s}
              for s in range(4)]
    lines += [{"kind": "eval", "step": -(i + 1), "wise": a, "tokens": 300, "forgetting": 4.0 + 0.05 * a,
               "learning": 3.0 - 0.5 * a, "wise_evaluations": 3} for i, a in enumerate((0.0, 0.5, 1.0))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = CliRunner().invoke(app, ["compare", str(run)])
    assert result.exit_code == 0, result.output
    assert "no remedy's frontier is decisively better" in result.output
    md = (run / "compare" / "compare.md").read_text()
    assert "| full-adamw+wise | 1 |" in md and "3 WiSE evaluations/run" in md


def test_remedies_preset_is_valid_cell_by_cell_and_shares_quicks_bases():
    import warnings

    from forgetless.sweep.execute import check_study
    from forgetless.sweep.study import expand, load_study

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no regime warning, no old field names
        study = load_study("remedies")
    check_study(study)  # every cell's FinetuneConfig, replay / l2sp / wise included, validates
    cells = expand(study)
    pre = {c.cell_id for c in cells if not c.is_finetune}
    quick = {c.cell_id for c in expand(load_study("quick")) if not c.is_finetune}
    assert len(pre) == 6 and pre <= quick  # the quick preset's AdamW and Muon bases, cached
    assert all(len(p.seeds) >= 3 for p in study.pretrain)
    assert max(r for *_, r in study.token_ratios()) <= 0.20
    ft = [c for c in cells if c.is_finetune]
    settings = [c.config["settings"] for c in ft]
    assert {s.get("replay") for s in settings} == {None, 0.01, 0.05} and {s.get("l2sp") for s in settings} == {None, 0.1, 1.0}
    assert {c.meta["task"] for c in ft} == {"arith", "instruct"} and any(s.get("wise") for s in settings)


# ------------------------------------------------------------------ issue 23 §5: your own runs
def _run_dir(path, method: str, slope: float, reference: str = "stdlib", seed: int = 0, wise: bool = False):
    """A finetune run directory whose points lie on F = 4 + 0.1·s, L = 3 − slope·s (s = 0..3)."""
    import json

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"base: /models/SmolLM-135M\ntask: arith\nmethod: {method}\noptimizer: adamw\n"
                                      f"lr: 0.001\nseed: {seed}\nforget_corpus: {reference}\n")
    lines = [{"kind": "header"}]
    lines += [{"kind": "eval", "step": s, "tokens": 100 * s, "forgetting": 4.0 + 0.1 * s, "learning": 3.0 - slope * s}
              for s in range(4)]
    if wise:
        lines += [{"kind": "eval", "step": -(i + 1), "wise": a, "tokens": 300, "forgetting": 4.0 + 0.05 * a,
                   "learning": 3.0 - 0.5 * a, "wise_evaluations": 3} for i, a in enumerate((0.0, 0.5, 1.0))]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_compare_several_run_directories(tmp_path):
    """`compare runs/ft-full runs/ft-lora` used to be 'unexpected extra arguments': each directory is
    a remedy on one figure, with the Δ-view; one downloaded checkpoint's unit is the finetuning seed."""
    full = _run_dir(tmp_path / "runs" / "ft-full", "full", 0.2)
    lora = _run_dir(tmp_path / "runs" / "ft-lora", "lora", 0.1)
    result = CliRunner().invoke(app, ["compare", str(full), str(lora)])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "runs" / "compare" / "compare.md").read_text()
    # Δ-view by hand: the lowest task loss with forgetting at most Δ above the base's 4.0
    for name, slope in (("ft-full", 0.2), ("ft-lora", 0.1)):
        want = [min(3.0 - slope * s for s in range(1, 4) if 0.1 * s <= d + 1e-9) for d in (0.1, 0.25, 0.5, 1.0)]
        assert f"| {name} | 1 | " + " | ".join(f"{v:.3f}" for v in want) + " |" in md, md
    # one unit, a finetuning seed: nothing decisive, and no pretraining seeds asked for
    assert "more finetuning seeds would decide" in result.output
    assert "pretraining seed" not in result.output and "pretraining seed" not in md
    assert (tmp_path / "runs" / "compare" / "compare-SmolLM-135M-arith.png").stat().st_size > 10_000
    result = CliRunner().invoke(app, ["compare", str(full), str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not a finetune run directory" in result.output


def test_compare_finetuning_seeds_are_the_units(tmp_path):
    """Run directories that differ only in their seed are one remedy at several finetuning seeds."""
    from forgetless.report.compare import compare
    from forgetless.report.compare_commands import runs_rows

    dirs = [str(_run_dir(tmp_path / f"{m}-s{seed}", m, slope, seed=seed))
            for seed in range(3) for m, slope in (("full", 0.2), ("lora", 0.1))]
    rows, _ = runs_rows(dirs)
    (pc,) = compare(rows)
    assert pc.remedies == ["full", "lora"]
    assert (pc.units, pc.unit) == (3, "finetuning seed")
    assert [len(p.effects) for p in pc.pairs] == [3]  # one frontier gap per finetuning seed


def test_figure_names_the_reference_and_shows_every_point(tmp_path, monkeypatch):
    """The x axis says what forgetting was measured on (stdlib here, not 'pretraining loss'), and
    the finetune and WiSE points are drawn opaque, each at its coordinates."""
    import forgetless.analysis.plots as plots
    from forgetless.report.compare import compare, plot, rows_from_run

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=None: figures.append(fig) or path)
    (pc,) = compare(rows_from_run(_run_dir(tmp_path / "ft", "full", 0.2, wise=True)))
    plot(pc, tmp_path / "f.png")
    (ax,) = figures[0].axes
    assert ax.get_xlabel() == "forgetting: loss on stdlib (lower is better)"
    shown = {(round(float(x), 6), round(float(y), 6)) for c in ax.collections for x, y in c.get_offsets()
             if c.get_alpha() is not None and c.get_alpha() >= 0.8}
    trajectory = {(round(4.0 + 0.1 * s, 6), round(3.0 - 0.2 * s, 6)) for s in range(1, 4)}
    wise = {(round(4.0 + 0.05 * a, 6), round(3.0 - 0.5 * a, 6)) for a in (0.5, 1.0)}  # α = 0 is the base
    assert trajectory | wise <= shown


def test_a_study_takes_the_users_own_task_file(tmp_path):
    """A study whose task is the user's file used to be 'unknown task'; finetune takes it, so does a study."""
    from forgetless.data.corpus import check_sources
    from forgetless.sweep.study import StudyError, load_study

    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"prompt": "a", "completion": "b"}\n' * 4)
    study = {"name": "own", "data": {"corpus": "stdlib", "vocab_size": 512},
             "pretrain": [{"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": "20k"}],
             "finetune": {"tasks": [str(mine)], "steps": 6, "eval_every": 3,
                          "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4]}]}}
    assert [t.name for t in load_study(study).finetune[0].tasks] == [str(mine)]
    assert check_sources(None, [str(mine)]) == []
    assert check_sources(None, [str(tmp_path / "gone.jsonl")]) == [f"task {str(tmp_path / 'gone.jsonl')!r}: no such file"]
    study["finetune"]["tasks"] = ["arithh"]
    with pytest.raises(StudyError, match="unknown task 'arithh'"):
        load_study(study)


def test_study_figures_name_the_reference_text():
    """A study's finetune cells carry the text forgetting is measured on (the study's corpus, or a
    forget_corpus setting), and the frontier figure's panels take it for the x axis."""
    from forgetless.analysis.frontier import panels
    from forgetless.sweep.study import expand, load_study

    study = {"name": "ref", "data": {"corpus": "stdlib", "vocab_size": 512},
             "bases": [{"name": "smol", "checkpoint": "HuggingFaceTB/SmolLM2-135M", "optimizer": "adamw"}],
             "finetune": {"tasks": ["arith"], "steps": 6, "eval_every": 3,
                          "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4]},
                                      {"kind": "lora", "optimizer": "adamw", "lrs": [1e-3], "lora_rank": 4,
                                       "settings": {"forget_corpus": "hf:wikitext"}}]}}
    cells = [c for c in expand(load_study(study)) if c.kind == "finetune"]
    assert sorted(c.meta["reference"] for c in cells) == ["hf:wikitext", "stdlib"]
    points = [{"kind": "finetune", "meta": cells[0].meta, "method": "full", "lr": 1e-4, "run_id": "r", "step": s,
               "forgetting": 3.0 + 0.1 * s, "learning": 2.0 - 0.1 * s, "extra": None} for s in range(3)]
    (pn,) = panels(points)
    assert pn.reference == cells[0].meta["reference"]
