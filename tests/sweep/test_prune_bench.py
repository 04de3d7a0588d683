"""benchmarks/prune.py with a finished sweep as its full side (--full), on the known-answer study
of test_prune.py: the stand-in trainer's bad learning rate (12 of 36 finetunes) is worse than the
base at every step, so exactly those runs stop at the warm-up's step 4 of 8.

Known answers: finetuning steps 36 x 8 = 288 full, 288 - 12 x 4 = 240 pruned; the hypervolume of
every panel kept whole (the bad runs' points are dominated); claim 2 unchanged; the oracle bound
(each run stopped after its last point on its line's front) at the 24 good runs' steps; the full sweep's
directory not modified by a byte; and the offline simulation (--simulate) finds the same stops as
the pruned sweep that ran.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from forgetless.sweep.prune import PruneRule
from forgetless.sweep.runner import run_sweep
from forgetless.sweep.study import load_study

ROOT = Path(__file__).resolve().parents[2]
BAD_LR, STEPS, EVERY = 1e-2, 8, 2


def _bench():
    spec = importlib.util.spec_from_file_location("prune_bench", ROOT / "benchmarks" / "prune.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["prune_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def _point(same: bool, seed: int, lr: float, step: int) -> tuple[float, float]:
    if step == 0:
        return 4.0, 3.0
    if lr == BAD_LR:
        return 4.3 + 0.02 * step, 3.3 - 0.01 * step
    x = 40.0 * lr * step
    return 4.0 + x, 3.0 - ((2.0 if same else 1.0) + 0.05 * seed) * x


def executor(cell, out_dir: Path, base_dir, on_eval):
    out_dir.mkdir(parents=True, exist_ok=True)
    if cell.kind == "pretrain":
        on_eval({"step": 0, "tokens": 0, "forgetting": 4.0, "learning": None})
        return SimpleNamespace(status="done", points=[], final_checkpoint=None)
    same = cell.config["optimizer"] == cell.meta["base_optimizer"]
    for step in range(0, STEPS + 1, EVERY):
        f, lo = _point(same, cell.meta["base_seed"], cell.lr, step)
        on_eval({"step": step, "tokens": step * 64, "forgetting": f, "learning": lo})
    return SimpleNamespace(status="done", points=[], final_checkpoint=None)


def _study(out: Path) -> dict:
    pre = [{"name": fam, "model": "nano", "optimizer": fam, "tokens": 1000, "seeds": [0, 1, 2]}
           for fam in ("adamw", "muon")]
    lrs = [1e-3, 2e-3, BAD_LR]
    return {"name": "prune", "out_dir": str(out), "pretrain": pre,
            "finetune": {"tasks": ["arith"], "steps": STEPS, "eval_every": EVERY,
                         "methods": [{"kind": "full", "optimizer": "adamw", "lrs": lrs},
                                     {"kind": "full", "optimizer": "muon", "lrs": lrs}]}}


def _fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_finished_sweep_as_the_full_side(tmp_path) -> None:
    bench = _bench()
    full = tmp_path / "finished"
    run_sweep(load_study(_study(full)), workers=0, executor=executor, progress=False)
    for leftover in full.glob("results.sqlite-*"):  # a clean store, as a finished run leaves it
        leftover.unlink()
    before = _fingerprint(full)

    study = bench.stored_study(bench.snapshot(full, tmp_path / "snap"), None)  # the study its store recorded
    # 6 bases x 2 methods = 12 lines of 3 learning rates: the first of each has no peer to be judged by
    assert bench.judged(study) == {"finetunes": 36, "with_a_peer_before": 24, "lines": 12}
    got = bench.measure(study, full, tmp_path / "bench", PruneRule(warmup=2), workers=0, executor=executor)
    assert _fingerprint(full) == before  # read, never written
    assert got["pruned_counts"] == {"done": 6 + 36 - 12, "pruned": 12}
    assert got["full"]["finetune_steps"] == 36 * STEPS and got["full"]["runs_pruned"] == 0
    assert got["pruned"]["finetune_steps"] == 36 * STEPS - 12 * 4 and got["pruned"]["runs_pruned"] == 12
    assert got["compute_share_steps"] == pytest.approx((36 * STEPS - 12 * 4) / (36 * STEPS))
    assert got["full"]["finetune_wall_s"] >= 0 and "compute_share_wall" in got
    assert got["panels"] == 6 and got["hypervolume_kept_mean"] == pytest.approx(1.0)
    assert got["hypervolume_kept_worst"] == pytest.approx(1.0)
    assert got["verdicts"]["claim2_same_optimizer"]["full"][0] == "holds"
    assert got["verdicts_changed"] == []
    assert got["points_equal_to_full"] == f"{24 * 5 + 12 * 3} of {24 * 5 + 12 * 3}"  # steps 0-8, pruned: 0-4
    # The bound: the good runs end on their line's front (a straight trade-off), the bad ones are never on it.
    share, never = got["oracle_steps_share"]["line"]
    assert share == pytest.approx(24 * STEPS / (36 * STEPS)) and never == 12

    sim = bench.measure(study, full, tmp_path / "bench", PruneRule(warmup=2), workers=0, simulated=True)
    assert _fingerprint(full) == before
    assert sim["pruned"] == {"finetune_steps": got["pruned"]["finetune_steps"], "runs_pruned": 12}
    assert sim["hypervolume_kept_mean"] == pytest.approx(got["hypervolume_kept_mean"])
    assert sim["verdicts_changed"] == []


def test_bases_from_another_sweep_are_not_trained_again(tmp_path) -> None:
    bench = _bench()
    src = tmp_path / "src"  # the same bases, other finetunes (as quick's bases under the remedies preset)
    other = _study(src)
    other["finetune"]["methods"] = [{"kind": "full", "optimizer": "adamw", "lrs": [5e-4]}]
    run_sweep(load_study(other), workers=0, executor=executor, progress=False)
    study = load_study(_study(tmp_path / "full"))
    assert bench.seed_bases(src, tmp_path / "full", study) == 6
    kinds: list[str] = []

    def counting(cell, out_dir, base_dir, on_eval):
        kinds.append(cell.kind)
        return executor(cell, out_dir, base_dir, on_eval)

    counts = run_sweep(study, workers=0, executor=counting, progress=False)
    assert counts == {"done": 42} and kinds == ["finetune"] * 36  # the 6 bases were already done


def test_prune_on_ray_names_what_to_use_instead() -> None:
    from forgetless.errors import UserError
    from forgetless.sweep.runner import make_backend

    with pytest.raises(UserError, match=r"--prune works with --backend local only .*--backend local \(the default\)"):
        make_backend("ray", prune=PruneRule())
