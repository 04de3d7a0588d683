"""Frontier panels leave the shared step-0 point out of every method's cloud and mark it once."""

from forgetless.analysis.frontier import panels
from forgetless.sweep.records import EvalPoint


def _point(method, step, f, y):
    return EvalPoint.from_row({"kind": "finetune", "method": method, "step": step, "forgetting": f, "learning": y,
            "lr": 1e-4, "run_id": f"{method}-run", "meta": {"base": "adamw", "base_optimizer": "adamw",
                                                         "task": "arith"}})


def test_step_zero_is_the_base_point_not_a_cloud_point():
    pts = [_point("full-adamw", 0, 4.0, 3.0), _point("full-adamw", 10, 4.1, 2.5),
           _point("full-muon", 0, 4.0, 3.0), _point("full-muon", 10, 4.3, 2.4)]
    (panel,) = panels(pts)
    assert panel.base_point == (4.0, 3.0)
    assert panel.methods["full-adamw"].points.tolist() == [[4.1, 2.5]]
    assert panel.methods["full-muon"].points.tolist() == [[4.3, 2.4]]
    assert panel.methods["full-adamw"].runs == ["full-adamw-run"]
