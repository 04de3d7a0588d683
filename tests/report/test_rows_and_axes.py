"""The report's typed rows (forgetless.report.rows) and its tests on any declared forgetting metric:
`compare` and claim 2 on kl_to_base, on tables whose answer is known by construction.

Every run learns g(t) = 0.3·t nats of task loss (learning L0 − g) and pays forgetting F0 + c·g² on
the loss-based measure and KL = k·g² on the KL one, with its own costs c and k: at matched
forgetting the cheaper run learns more, so the ranking on each axis is the order of its cost.
"""

import zlib

import numpy as np
import pytest

from forgetless.report.compare import compare
from forgetless.report.rows import Row, as_rows
from forgetless.report.statistics import FAILS, HOLDS
from forgetless.report.verdicts import claim2_same_optimizer

STEPS = 6


def _run(remedy, seed, c, k, base="adamw", optimizer="adamw", lr=1e-3, noise=0.0):
    rng = np.random.default_rng(zlib.crc32(repr((remedy, seed, lr, base)).encode()))  # the same in every process
    rows = []
    for t in range(STEPS + 1):
        g = 0.3 * t
        e = (0.0, 0.0) if t == 0 else tuple(rng.normal(0, noise, 2))
        rows.append({"run_id": f"{base}-{seed}-{remedy}-{lr}", "base": f"{base}/s{seed}", "base_optimizer": base,
                     "base_seed": seed, "task": "arith", "method": remedy, "kind": "full", "optimizer": optimizer,
                     "lr": lr, "seed": 0, "step": t, "forgetting": 4.0 + c * g * g + e[0], "learning": 3.0 - g + e[1],
                     "kl_to_base": k * g * g})
    return rows


def test_old_dict_rows_become_typed_rows_and_still_read_as_dicts():
    (r,) = as_rows([{"run_id": "x", "kind": "lora", "finetune_seed": 3, "step": 2, "forgetting": 4.5,
                     "learning": 2.0, "kl_to_base": 0.25, "wise": 0.5, "method": "lora8-adamw"}])
    assert (r.finetuning, r.seed, r.value("kl_to_base"), r.wise, r.remedy) == ("lora", 3, 0.25, 0.5, "lora8-adamw+wise")
    assert r["kind"] == "lora" and r["forgetting"] == 4.5 and r.get("kl_to_base") == 0.25  # older readers
    assert r.get("nothing", 7) == 7 and np.isnan(Row(step=1).value("kl_to_base"))


def test_compare_ranks_by_the_axis_it_is_given():
    # a forgets less by the loss measure (c 0.1 against 0.4), b moves the distribution less (k 0.1 against 0.4)
    rows = [r for seed in range(4) for lr in (1e-3, 3e-3)
            for r in _run("a", seed, 0.1 + 0.01 * seed, 0.4, lr=lr, noise=0.002)
            + _run("b", seed, 0.4, 0.1 + 0.01 * seed, lr=lr, noise=0.002)]
    [loss] = compare(rows)
    [kl] = compare(rows, x="kl_to_base")
    assert [(p.a, p.b, p.decision.status) for p in loss.pairs] == [("a", "b", HOLDS)]
    assert [(p.a, p.b, p.decision.status) for p in kl.pairs] == [("a", "b", FAILS)]
    assert loss.best == "a" and kl.best == "b"
    assert kl.base_point == pytest.approx((0.0, 3.0)) and loss.base_point == pytest.approx((4.0, 3.0))


def test_claim2_on_kl_sees_what_the_loss_measure_does_not():
    """Same-family finetunes move the distribution a quarter as far (KL) at the same loss-based
    forgetting: claim 2 holds on KL and is not decided on the loss measure."""
    rows = []
    for base in ("adamw", "muon"):
        for seed in range(4):
            for opt in ("adamw", "muon"):
                k = (0.1 if opt == base else 0.4) + 0.01 * seed
                rows += _run(f"full-{opt}", seed, 0.2 + 0.01 * seed, k, base=base, optimizer=opt, noise=0.001)
    on_kl = claim2_same_optimizer(rows, x="kl_to_base")
    on_loss = claim2_same_optimizer(rows)
    assert on_kl.status == HOLDS and on_kl.effect > 0.1
    assert on_loss.status != HOLDS and abs(on_loss.effect) < 0.02
    assert "matched KL(base ‖ model)" in on_kl.test


def test_the_report_shows_claim_2_on_kl_when_the_points_carry_it(tmp_path):
    from forgetless.report.document import second_view_sections
    from forgetless.sweep.records import EvalPoint

    rows = []
    for base in ("adamw", "muon"):
        for seed in range(3):
            for opt in ("adamw", "muon"):
                rows += _run(f"full-{opt}", seed, 0.2, (0.1 if opt == base else 0.4) + 0.01 * seed, base=base,
                             optimizer=opt, noise=0.001)
    typed = as_rows(rows)
    points = [EvalPoint(run_id=r.run_id, step=r.step, tokens=None, forgetting=r.forgetting, learning=r.learning,
                        extra={"kl_to_base": r.value("kl_to_base")}, method=r.method, lr=r.lr,
                        meta={"base": r.base, "base_optimizer": r.base_optimizer, "task": r.task}) for r in typed]
    (section,) = second_view_sections(typed, points, tmp_path, "kl_to_base")
    assert section.title.startswith("Claim 2 on KL(base ‖ model)") and "Claim 2's test on it: holds" in section.paragraphs[0]
    assert all(path.is_file() for path, _ in section.figures)
    no_kl = [Row.of({**r, "kl_to_base": None}) for r in rows]  # a store from before the metric: no section
    assert second_view_sections(no_kl, points, tmp_path, "kl_to_base") == []


def test_the_report_reads_a_study_once(tmp_path):
    """tables.read: one query of the runs and one of the points give the same rows as the readers
    that each query the store themselves (the old-store fixture: a real study's store)."""
    import shutil
    from pathlib import Path

    from forgetless.report import tables
    from forgetless.sweep.store import Store

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "old_store" / "results.sqlite"
    shutil.copy(fixture, tmp_path / "results.sqlite")
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        calls = []
        for name in ("run_records", "eval_points", "runs", "points", "runs_by_id"):
            method = getattr(store, name)
            setattr(store, name, lambda *a, _m=method, _n=name, **k: calls.append(_n) or _m(*a, **k))
        once = tables.read(store, "old-store")
        assert sorted(calls) == ["eval_points", "run_records", "runs"]  # one query of each table (run_records reads runs)
        calls.clear()
        assert once.pretrain == tables.pretrain_rows(store, "old-store")
        assert [r.run_id for r in once.finetune] == [r.run_id for r in tables.finetune_rows(store, "old-store")]
    assert len(once.pretrain) == 6 and len({r.run_id for r in once.finetune}) > 10
