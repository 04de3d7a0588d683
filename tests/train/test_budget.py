"""The forgetting budget (forgetless.train.budget) on runs whose right answer is known.

A reference finetune at a high lr (3e-3) on the tiny nano base, with a reference of two sources
(code and text), keeps every checkpoint; its recorded points say, by the issue's rule applied here
by hand, at which evaluation a budget is left and which within-budget evaluation learned most.
The same finetune under that budget must stop there and keep that step's weights, tensor for
tensor. A budget below every evaluation must roll back with WiSE to weights that are the
interpolation of the base and the last checkpoint, whose forgetting HF's own loss confirms.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers
from pydantic import ValidationError
from safetensors.torch import load_file
from typer.testing import CliRunner

from forgetless.data import prepare_pretraining_data, sample_batch
from forgetless.train import FinetuneConfig, finetune
from forgetless.train.budget import WISE_ROUNDS, BudgetTracker, bisect_alpha
from forgetless.train.evaluate import EVAL_SEED

FT = dict(task="arith", steps=12, eval_every=2, batch_size=8, seq_len=96, eval_n=16, train_n=64,
          eval_tokens=1024, progress=False, threads=1, lr=3e-3, keep_checkpoints=100)


def _folder(root):
    """Text files (source "text") and Python files (source "code")."""
    rng = random.Random(3)
    words = "river stone lantern meadow whisper copper orchard harbor velvet thunder".split()
    root.mkdir()
    for i in range(60):
        (root / f"t{i:02d}.txt").write_text(
            "\n".join(" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(8)) + "\n")
        (root / f"c{i:02d}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n\n" for j in range(12)))
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("budget-ref") / "mixed")


@pytest.fixture(scope="module")
def reference(base_run, mixed, tmp_path_factory):
    """The finetune without a budget: every point and every checkpoint."""
    out = tmp_path_factory.mktemp("budget") / "reference"
    return finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=out, forget_corpus=str(mixed), **FT))


def _pairs(point, base):
    """(loss now, loss at the base) for the total and each source."""
    return [(point["forgetting"], base["forgetting"])] + [
        (point["forgetting_by_source"][s], v) for s, v in base["forgetting_by_source"].items()]


def _allowed(budget, base_loss):
    return float(budget[:-1]) / 100 * base_loss if isinstance(budget, str) else budget


def expected(points, budget, patience):
    """(the step the run must stop at or None, the point it must keep or None), by the rule."""
    base, run, kept = points[0], 0, None
    for p in points[1:]:
        if all(now - b0 <= _allowed(budget, b0) for now, b0 in _pairs(p, base)):
            run = 0
            if kept is None or p["learning"] < kept["learning"]:
                kept = p
        else:
            run += 1
            if run == patience:
                return p["step"], kept
    return None, kept


def _tensors(path):
    return load_file(str(path / "model.safetensors"))


def _strip(points):
    return [{k: v for k, v in p.items() if k != "wall_time"} for p in points]


@pytest.mark.parametrize("form", ["nats", "percent-cli"])
def test_stops_where_the_budget_is_left_and_keeps_the_best_within(form, base_run, mixed, reference, tmp_path, capfd):
    points = reference.points
    assert [p["step"] for p in points] == list(range(0, 13, 2)) and set(points[0]["forgetting_by_source"]) == {"code", "text"}
    base = points[0]
    if form == "nats":  # between the worst change at step 4 and at step 6
        worst = [max(now - b0 for now, b0 in _pairs(p, base)) for p in points]
        budget, patience = round((worst[2] + worst[3]) / 2, 4), 2
    else:
        rel = [max((now - b0) / b0 for now, b0 in _pairs(p, base)) for p in points]
        budget, patience = f"{100 * (rel[2] + rel[3]) / 2:.4f}%", 1
    stop, kept = expected(points, budget, patience)
    assert stop is not None and stop < FT["steps"] and kept is not None, "the reference run must cross the budget"
    out = tmp_path / "ft"
    if form == "nats":
        result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=out, forget_corpus=str(mixed),
                                         forgetting_budget=budget, budget_patience=patience, **FT))
    else:  # the command a practitioner types
        from forgetless.cli import app

        args = ["finetune", str(base_run.out_dir), "--out", str(out), "--forget-corpus", str(mixed),
                "--forgetting-budget", budget, "--budget-patience", str(patience)]
        for k, v in FT.items():
            args += [f"--{k.replace('_', '-')}" if v is not False else f"--no-{k.replace('_', '-')}"] + (
                [str(v)] if not isinstance(v, bool) else [])
        cli = CliRunner().invoke(app, args)
        assert cli.exit_code == 0, cli.output
        assert f"checkpoint {out / 'best-within-budget'}" in cli.output
        result = None
    # It stopped where the budget was left, with the reference's numbers up to there.
    recorded = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    got = [r for r in recorded if r.get("kind") == "eval"]
    assert [p["step"] for p in got][-1] == stop
    assert _strip(got) == _strip([p for p in points if p["step"] <= stop])
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "done" and status["step"] == stop and "outside the budget" in status["stopped"]
    assert status["final_checkpoint"] == str(out / "best-within-budget")
    record = json.loads((out / "budget.json").read_text())
    assert record["kept"]["step"] == kept["step"] and record["kept"]["learning"] == kept["learning"]
    assert record["kept"]["forgetting"] == kept["forgetting"] and record["stopped"] == status["stopped"]
    if result is not None:
        assert result.final_checkpoint == out / "best-within-budget" and result.budget["kept"]["step"] == kept["step"]
    # best-within-budget/ holds that step's weights, tensor for tensor, and loads with plain HF.
    want = _tensors(reference.out_dir / "checkpoints" / f"step-{kept['step']:06d}")
    have = _tensors(out / "best-within-budget")
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)
    transformers.AutoModelForCausalLM.from_pretrained(out / "best-within-budget")
    # The console names the step and marks the sources outside at the last point.
    err = capfd.readouterr().err if result is not None else cli.output
    assert "stopped early: forgetting outside the budget" in err and f"kept: step {kept['step']} " in err
    last = got[-1]
    for (now, b0), name in zip(_pairs(last, base), ["all", *base["forgetting_by_source"]], strict=True):
        row = next(line for line in err.splitlines() if line.startswith(f"{name} "))
        assert row.endswith("outside") == (now - b0 > _allowed(budget, b0)), row
    if form == "nats":  # resumed after the stop: nothing more is trained, the same step is kept
        again = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=out, forget_corpus=str(mixed),
                                        forgetting_budget=budget, budget_patience=patience, resume=True, **FT))
        assert _strip(again.points) == _strip(got) and again.budget["kept"]["step"] == kept["step"]


def _forgetting_by_hand(checkpoint_or_model, corpus_dir, tiny) -> float:
    """Mean token loss with a plain HF forward (labels=input_ids) on the base corpus' held-out windows."""
    model = checkpoint_or_model if isinstance(checkpoint_or_model, torch.nn.Module) else \
        transformers.AutoModelForCausalLM.from_pretrained(checkpoint_or_model)
    model.eval()
    val = prepare_pretraining_data(str(corpus_dir), vocab_size=tiny["vocab_size"], progress=False).val
    x, y = sample_batch(val, FT["eval_tokens"] // tiny["seq_len"], tiny["seq_len"], EVAL_SEED, 0)
    seq = torch.cat([x, y[:, -1:]], dim=1)
    with torch.no_grad():
        return float(torch.stack([model(input_ids=s[None], labels=s[None]).loss for s in seq]).mean())


def test_wise_rolls_back_when_no_evaluation_is_within(base_run, corpus_dir, tmp_path, tiny):
    """A budget below every evaluation: stop after `patience` evaluations, then the WiSE blend of
    the base and the last weights that meets the budget, checked with HF's own loss."""
    budget = 0.05
    out = tmp_path / "ft"
    result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=out, forgetting_budget=budget, **FT))
    assert [p["step"] for p in result.points] == [0, 2, 4]  # both evaluations outside (patience 2)
    assert all(p["forgetting_delta"] > budget for p in result.points[1:])
    wise = result.budget["wise"]
    assert result.budget["kept"] is None and wise["rounds"] == WISE_ROUNDS
    alpha = wise["alpha"]
    assert 0 < alpha < 1 and (alpha * 2 ** WISE_ROUNDS).is_integer()
    # the weights are (1 − α)·base + α·(step-4 checkpoint of this run), computed here
    base_w, last_w = _tensors(base_run.final_checkpoint), _tensors(out / "checkpoints" / "step-000004")
    kept = _tensors(out / "best-within-budget")
    assert kept.keys() == last_w.keys()
    for k in kept:
        assert torch.allclose(kept[k], base_w[k] * (1 - alpha) + last_w[k] * alpha, atol=1e-6), k
    # HF's loss on the held-out windows: within the budget, and the number the result reports
    base_loss = _forgetting_by_hand(base_run.final_checkpoint, corpus_dir, tiny)
    kept_loss = _forgetting_by_hand(out / "best-within-budget", corpus_dir, tiny)
    assert kept_loss - base_loss <= budget
    assert kept_loss == pytest.approx(wise["forgetting"], abs=1e-4)
    assert wise["learning"] < result.points[0]["learning"]  # it kept some of what was learned
    assert result.final_checkpoint == out / "best-within-budget"


def test_tracker_on_known_points():
    """Per source: the total within and one source outside is outside, and that source is named."""
    t = BudgetTracker(0.1, patience=2)
    pt = lambda step, total, code, prose, learning: {  # noqa: E731
        "step": step, "forgetting": total, "learning": learning, "forgetting_by_source": {"code": code, "prose": prose}}
    assert t.observe(pt(0, 3.0, 2.0, 4.0, 5.0)).keep is False  # the base is never kept
    d = t.observe(pt(2, 3.05, 2.05, 4.05, 4.0))
    assert d.keep and d.stop is None
    assert not t.observe(pt(4, 3.08, 2.02, 4.09, 4.5)).keep  # within but learned less
    d = t.observe(pt(6, 3.09, 2.03, 4.2, 3.0))  # total within, prose +0.2 outside
    assert not d.keep and d.stop is None and t.last["outside"] == ["prose"]
    d = t.observe(pt(8, 3.01, 2.01, 4.01, 3.5))  # back within: the count starts again
    assert d.keep and t.kept["step"] == 8 and t.outside == []
    t.observe(pt(10, 3.5, 2.0, 4.0, 2.0))
    d = t.observe(pt(12, float("nan"), 2.0, 4.0, 2.0))  # a NaN is outside
    assert d.stop and "steps 10, 12" in d.stop and t.kept["step"] == 8
    table = "\n".join(t.table())
    assert "prose" in table and table.count("outside") == 1  # step 12: only the total (NaN) is out
    rel = BudgetTracker("5%", patience=1)
    rel.observe(pt(0, 2.0, 1.0, 4.0, 5.0))
    assert rel.allowances() == pytest.approx({"all": 0.1, "code": 0.05, "prose": 0.2})
    assert rel.observe(pt(2, 2.09, 1.06, 4.0, 4.0)).stop  # code: +0.06 > 5% of 1.0


def test_bisection_finds_the_largest_dyadic_alpha_within():
    """forgetting(α) = 2α² against a budget of 0.3: within up to α* = √0.15 ≈ 0.387, and the
    largest multiple of 1/64 below it is 24/64."""
    alpha, point, trace = bisect_alpha(lambda a: {"forgetting": 2 * a * a}, lambda p: p["forgetting"] <= 0.3)
    assert alpha == 24 / 64 and point["forgetting"] == 2 * alpha**2 and len(trace) == WISE_ROUNDS
    assert bisect_alpha(lambda a: {"forgetting": 1.0}, lambda p: False)[:2] == (0.0, None)


@pytest.mark.parametrize("field, value, words", [
    ("forgetting_budget", -0.1, "above 0"), ("forgetting_budget", 0, "above 0"),
    ("forgetting_budget", "abc%", "neither nats"), ("forgetting_budget", "abc", "neither nats"),
    ("forgetting_budget", "-5%", "above 0"), ("forgetting_budget", float("nan"), "neither nats"),
    ("forgetting_budget", True, "neither nats"), ("budget_patience", 0, "greater than or equal to 1"),
])
def test_bad_budgets_name_the_field(field, value, words, tmp_path):
    with pytest.raises(ValidationError) as err:
        FinetuneConfig(base="b", task="arith", out_dir=tmp_path, **{"forgetting_budget": 0.1, field: value})
    assert field in str(err.value) and words in str(err.value)


def test_budget_values_and_the_command_line_error(tmp_path):
    cfg = lambda v: FinetuneConfig(base="b", task="arith", out_dir=tmp_path, forgetting_budget=v)  # noqa: E731
    assert cfg("0.1").forgetting_budget == 0.1 and cfg(" 5 %").forgetting_budget == "5%"
    assert cfg("2.50%").forgetting_budget == "2.5%" and cfg(None).forgetting_budget is None
    from forgetless.cli import app

    result = CliRunner().invoke(app, ["finetune", "b", "--task", "arith", "--out", str(tmp_path / "x"),
                                      "--forgetting-budget", "abc%"])
    assert result.exit_code == 2 and "forgetting_budget (--forgetting-budget)" in result.output


def test_named_parts_are_sources_split_as_on_their_own(mixed, corpus_dir):
    """--forget-corpus NAME=SPEC,...: each part's documents carry its name, and each part's
    held-out documents are the ones it holds out on its own (the split is by key)."""
    from forgetless.data.corpus import iter_split, open_corpus

    named = open_corpus(f"words={mixed},arith={corpus_dir}")
    for name, spec in (("words", mixed), ("arith", corpus_dir)):
        alone = {d.key for d in iter_split(open_corpus(str(spec)), "val")}
        assert alone and {d.key for d in iter_split(named, "val") if d.source == name} == alone
    assert {d.source for d in named.documents()} == {"words", "arith"}
    for bad, words in ((f"a={mixed},a={corpus_dir}", "given twice"), (f"a={mixed},{corpus_dir}", "is not NAME=SPEC")):
        with pytest.raises(ValueError, match=words):
            open_corpus(bad)


def test_lora_rollback_with_named_sources(base_run, mixed, corpus_dir, tmp_path, capfd):
    """LoRA under a budget no evaluation meets, on a reference of two named parts: the budget
    applies to each part, and the rollback scales the learned update, so the kept merged weights
    are base + α·(last − base) exactly where LoRA trained."""
    out = tmp_path / "ft"
    result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=out, method="lora", lora_rank=4,
                                     forget_corpus=f"words={mixed},arith={corpus_dir}", forgetting_budget="1%",
                                     **{**FT, "lr": 3e-2, "steps": 4}))
    record = json.loads((out / "budget.json").read_text())
    assert set(record["allowances"]) == {"all", "words", "arith"}
    base = result.points[0]
    assert record["allowances"]["words"] == pytest.approx(0.01 * base["forgetting_by_source"]["words"])
    assert all(p["forgetting_delta"] > record["allowances"]["all"] or
               any(p["forgetting_by_source"][s] - base["forgetting_by_source"][s] > record["allowances"][s]
                   for s in ("words", "arith")) for p in result.points[1:])  # none within: a rollback
    alpha = record["wise"]["alpha"]
    assert 0 < alpha < 1 and record["kept"] is None
    base_w, last_w = _tensors(base_run.final_checkpoint), _tensors(out / "checkpoints" / "step-000004")
    kept = _tensors(out / "best-within-budget")
    moved = [k for k in kept if not torch.equal(last_w[k], base_w[k])]
    assert moved and all("proj" in k for k in moved)
    for k in kept:
        assert torch.allclose(kept[k] - base_w[k], alpha * (last_w[k] - base_w[k]), atol=1e-6), k
    err = capfd.readouterr().err
    assert any(line.startswith("words ") for line in err.splitlines())
    assert any(line.startswith("arith ") for line in err.splitlines())


@pytest.mark.filterwarnings("ignore::UserWarning")  # the tiny study is outside the paper's regime, on purpose
def test_a_study_setting_stops_its_cells(corpus_dir, tmp_path):
    """`settings: {forgetting_budget: ...}` in a study: of two cells that differ only by the budget,
    the budgeted one stops at the first evaluation the plain one records outside (patience 1), its
    points are the plain cell's up to there, and the store names best-within-budget/ as its
    checkpoint (here the WiSE rollback's: no evaluation is within 0.001 nats)."""
    from forgetless.sweep.runner import run_sweep
    from forgetless.sweep.store import Store
    from forgetless.sweep.study import load_study

    method = {"kind": "full", "optimizer": "adamw", "lrs": [3e-3]}
    study = load_study({
        "name": "budget", "out_dir": str(tmp_path), "data": {"corpus": str(corpus_dir), "vocab_size": 512},
        "pretrain": [{"name": "b", "model": "nano", "optimizer": "adamw", "tokens": "6k",
                      "settings": {"seq_len": 32, "batch_size": 8, "eval_tokens": 1024, "eval_every": 8}}],
        "finetune": {"tasks": [{"name": "arith", "settings": {"train_n": 32, "eval_n": 8}}], "steps": 6,
                     "eval_every": 2, "settings": {"seq_len": 128, "batch_size": 4, "eval_tokens": 512},
                     "methods": [{**method, "name": "plain"},
                                 {**method, "name": "budget",
                                  "settings": {"forgetting_budget": 0.001, "budget_patience": 1}}]}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(study, workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    with Store(tmp_path / "results.sqlite") as st:
        runs = {r["method"]: r for r in st.runs("budget") if r["method"]}
        points = {m: [p for p in st.points(study="budget") if p["run_id"] == r["cell_id"] and p["step"] >= 0]
                  for m, r in runs.items()}
    plain = sorted(points["plain"], key=lambda p: p["step"])
    first_out = next(p["step"] for p in plain[1:] if p["forgetting"] - plain[0]["forgetting"] > 0.001)
    got = sorted(points["budget"], key=lambda p: p["step"])
    assert [p["step"] for p in got] == [p["step"] for p in plain if p["step"] <= first_out] and first_out < 6
    assert [(p["forgetting"], p["learning"]) for p in got] == [(p["forgetting"], p["learning"]) for p in plain[:len(got)]]
    assert runs["budget"]["status"] == "done" and runs["budget"]["checkpoint"].endswith("best-within-budget")
