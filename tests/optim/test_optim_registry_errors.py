"""The registry's facts, the CLI that prints them, and errors that name argument and allowed values."""

import json
import re
from pathlib import Path

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from forgetless.optim import OPTIMIZERS, SteepestDescent, build, describe, same_family
from forgetless.optim.commands import register

EXPECTED_PQ = {
    "adamw": ("1", "inf"), "signsgd": ("1", "inf"), "lion": ("1", "inf"), "muon": ("2", "2"),
    "coltop1": ("1", "1"), "rowtop1": ("inf", "inf"), "colnorm": ("1", "2"),
    "rownorm": ("2", "inf"), "sgd": ("F", "F"),
}


def test_registry_norms_and_families():
    assert set(OPTIMIZERS) == set(EXPECTED_PQ)
    for name, (p, q) in EXPECTED_PQ.items():
        info = describe(name)
        assert (info.p, info.q) == (p, q) and info.name == name and info.reference
    assert same_family("adamw", "signsgd") and same_family("lion", "adamw")
    assert not same_family("adamw", "muon") and not same_family("coltop1", "rowtop1")
    assert not same_family("muon", "sgd") and same_family("muon", "muon")
    assert [n for n, i in OPTIMIZERS.items() if i.element_wise] == ["adamw", "signsgd", "lion"]


@pytest.mark.parametrize("call", [lambda: describe("adam"), lambda: same_family("muon", "x")])
def test_unknown_name_in_registry(call):
    with pytest.raises(ValueError, match=r"unknown; allowed values: adamw, signsgd, lion, muon"):
        call()


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="adam", lr=1e-3), r"name 'adam' is unknown; allowed values: adamw, .*rownorm"),
    (dict(name="muon", lr=0.0), r"lr must be a number > 0"),
    (dict(name="muon", lr=-1e-3), r"lr must be a number > 0"),
    (dict(name="muon", lr=1e-3, adamw_lr=0.0), r"adamw_lr must be a number > 0"),
    (dict(name="muon", lr=1e-3, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (dict(name="muon", lr=1e-3, momentum=-0.1), r"momentum must be in \[0, 1\)"),
    (dict(name="muon", lr=1e-3, weight_decay=-0.1), r"weight_decay must be a number >= 0"),
    (dict(name="muon", lr=1e-3, ns_dtpye="float32"), r"unknown keyword.*allowed values"),
    (dict(name="muon", lr=1e-3, ns_dtype="fp8"), r"ns_dtype 'fp8' is unknown; allowed values"),
    (dict(name="lion", lr=1e-3, betas=(0.9, 1.0)), r"betas must be two values in \[0, 1\)"),
    (dict(name="coltop1", lr=1e-3, hidden_patterns=[r"bias"]),
     r"parameter '0.bias' of shape \(8,\) to matrix rule 'coltop1'; allowed: 2-D"),
])
def test_build_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(_model(), **kwargs)


def test_optimizer_rejects_non_matrix_for_matrix_rule_and_unknown_rule():
    with pytest.raises(ValueError, match=r"rule 'muon' needs 2-D matrices .*shape \(3,\).*allowed"):
        SteepestDescent([dict(params=[nn.Parameter(torch.zeros(3))], rule="muon")], lr=0.1)
    with pytest.raises(ValueError, match=r"rule 'adam' is unknown; allowed values: adamw"):
        SteepestDescent([nn.Parameter(torch.zeros(3))], rule="adam")
    with pytest.raises(ValueError, match=r"lr must be a float > 0"):
        SteepestDescent([nn.Parameter(torch.zeros(3))], rule="adamw", lr=0.0)
    # element-wise members accept any shape
    SteepestDescent([dict(params=[nn.Parameter(torch.zeros(3))], rule="lion")], lr=0.1)


def test_nothing_trainable_is_an_error():
    model = _model().requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=True"):
        build(model, "muon", lr=1e-3)


def _cli():
    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps typer from flattening the app
    def noop() -> None:
        pass

    return app


def test_cli_table_and_describe():
    runner = CliRunner()
    out = runner.invoke(_cli(), ["optimizers"], env={"COLUMNS": "160"})
    assert out.exit_code == 0
    for name in OPTIMIZERS:
        assert name in out.output
    out = runner.invoke(_cli(), ["optimizers", "muon", "--json"])
    assert out.exit_code == 0
    data = json.loads(out.output)
    assert (data["p"], data["q"], data["family"]) == ("2", "2", "l2->l2")
    out = runner.invoke(_cli(), ["optimizers", "--json"])
    assert [d["name"] for d in json.loads(out.output)] == list(OPTIMIZERS)
    out = runner.invoke(_cli(), ["optimizers", "coltop1"])
    assert "||W||_{1->1}" in out.output and "appendix A.3" in out.output
    out = runner.invoke(_cli(), ["optimizers", "adam"])
    assert out.exit_code != 0 and "allowed values" in out.output


def test_docs_family_table_lists_the_registry_in_order():
    doc = (Path(__file__).parents[2] / "docs" / "optim.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", doc, flags=re.M)
    assert [name for name, _ in rows] == list(OPTIMIZERS)
    for name, family in rows:
        as_text = family.replace("ℓ", "l").replace("→", "->").replace("∞", "inf").lower()
        assert as_text == describe(name).family, name
