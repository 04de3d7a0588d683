"""The metric registry (forgetless.metrics): one declaration per measurement, read the same way
wherever the store keeps it, and the frontier drawn on any declared pair of axes."""

import math

import pytest

from forgetless import metrics
from forgetless.analysis import frontier
from forgetless.errors import UserError
from forgetless.report import effects
from forgetless.sweep.records import EvalPoint


def _point(method, step, f, y, kl=None, acc=None):
    extra = {"kl_to_base": kl} if kl is not None else None
    return EvalPoint.from_row({"run_id": f"{method}-run", "step": step, "kind": "finetune", "method": method,
                               "lr": 1e-4, "forgetting": f, "learning": y, "accuracy": acc, "extra": extra,
                               "meta": {"base": "adamw/s0", "base_optimizer": "adamw", "task": "arith"}})


def test_a_metric_is_read_from_its_column_or_from_extra():
    p = _point("full-adamw", 3, 4.2, 2.5, kl=0.125)
    assert p.value("forgetting") == 4.2 and p.value("learning") == 2.5
    assert p.value("kl_to_base") == 0.125  # not a column: the store keeps it in extra_json
    assert p.value("accuracy") is None  # the task has no accuracy
    assert math.isnan(_point("full-adamw", 3, 4.2, 2.5).value("kl_to_base"))  # an older store: not measured
    assert metrics.value({"forgetting": 1.5}, "forgetting") == 1.5  # a report row reads the same way


def test_declarations_name_their_direction_and_role():
    assert metrics.metric("accuracy").maximize and not metrics.metric("kl_to_base").maximize
    assert metrics.names(metrics.FORGETTING) == ["forgetting", "kl_to_base", "forgetting_delta"]
    assert metrics.columns() == ("forgetting", "learning", "accuracy")
    assert metrics.second_views() == ["kl_to_base"]  # the report shows claim 2 on it beside the verdict
    # one Δ-view for the frontier tables, compare and the verdicts
    assert frontier.DELTAS is effects.DELTAS is metrics.DELTAS


def test_an_unknown_metric_is_a_user_error_naming_the_allowed_ones():
    with pytest.raises(UserError, match=r"'kl_to_bas'.*forgetting, kl_to_base, forgetting_delta.*'kl_to_base'"):
        metrics.metric("kl_to_bas", metrics.FORGETTING)
    with pytest.raises(UserError, match="not a learning metric"):
        frontier.axes("forgetting", "kl_to_base")


def test_frontier_on_the_kl_axis_uses_the_kl_values_and_skips_points_without_it():
    pts = [_point("full-adamw", 0, 4.0, 3.0, kl=0.0), _point("full-adamw", 10, 4.1, 2.5, kl=0.05),
           _point("full-muon", 0, 4.0, 3.0, kl=0.0), _point("full-muon", 10, 4.3, 2.4, kl=0.2),
           _point("full-muon", 20, 4.4, 2.3)]  # no KL recorded at this point: not on the KL panel
    (panel,) = frontier.panels(pts, x="kl_to_base")
    assert panel.base_point == (0.0, 3.0) and (panel.x, panel.y) == ("kl_to_base", "learning")
    assert panel.methods["full-adamw"].points.tolist() == [[0.05, 2.5]]
    assert panel.methods["full-muon"].points.tolist() == [[0.2, 2.4]]
    (loss_panel,) = frontier.panels(pts)  # the default axes keep every point
    assert loss_panel.methods["full-muon"].points.tolist() == [[4.3, 2.4], [4.4, 2.3]]
    # the report's cloud reads any declared axis too
    assert effects.cloud(pts, x="kl_to_base").tolist() == [[0.05, 2.5], [0.2, 2.4]]
