"""A tenth rule is one `register` call: it is listed, validated, and steps as written by hand."""

import json

import pytest
import torch
import typer
from optim_throwaway_rules import (
    ENTRYWISE_RULE,
    WHOLE_RULE,
    register_throwaway,
    scaled_sign,
    unregister_throwaway,
)
from torch import nn
from typer.testing import CliRunner

from forgetless.optim import (
    ENTRYWISE,
    OPTIMIZERS,
    WHOLE,
    SteepestDescent,
    build,
    describe,
    register,
    same_family,
)
from forgetless.optim.commands import register as register_cli

LR, WD, BETA = 0.05, 0.1, 0.95


@pytest.fixture
def rules():
    names = register_throwaway()
    yield names
    unregister_throwaway()
    assert ENTRYWISE_RULE not in OPTIMIZERS and WHOLE_RULE not in OPTIMIZERS


def test_registered_rules_join_the_registry_and_the_cli(rules):
    assert list(OPTIMIZERS)[-2:] == rules
    assert describe(ENTRYWISE_RULE).on_shards == ENTRYWISE and describe(WHOLE_RULE).on_shards == WHOLE
    assert same_family(ENTRYWISE_RULE, "signsgd") and not same_family(WHOLE_RULE, "signsgd")
    app = typer.Typer()
    register_cli(app)
    app.command("noop")(lambda: None)  # a second command keeps typer from flattening the app
    out = CliRunner().invoke(app, ["optimizers", "--json"])
    assert out.exit_code == 0 and [d["name"] for d in json.loads(out.output)][-2:] == rules
    with pytest.raises(ValueError, match="unknown keyword"):
        build(nn.Linear(3, 2), WHOLE_RULE, lr=0.1, sign_scale=2.0)  # not an option of this rule


def _steps(rule: str, steps: int = 3, **opts) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights after each step, and the gradients seen, for a bias-free (3, 5) layer."""
    torch.manual_seed(0)
    layer = nn.Linear(5, 3, bias=False)
    opt = build(layer, rule, lr=LR, weight_decay=WD, **opts)
    weights, grads = [layer.weight.detach().clone()], []
    for step in range(steps):
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        (layer(x) - 1).square().mean().backward()
        grads.append(layer.weight.grad.clone())
        opt.step()
        weights.append(layer.weight.detach().clone())
    return weights, grads


def _by_hand(w0: torch.Tensor, grads: list[torch.Tensor], step_of) -> list[torch.Tensor]:
    """M <- beta M + (1 - beta) G; W <- (1 - lr wd) W - lr step_of(M), from the definitions."""
    m, w, out = torch.zeros_like(w0), w0.clone(), [w0.clone()]
    for g in grads:
        m = BETA * m + (1 - BETA) * g
        w = (1 - LR * WD) * w - LR * step_of(m)
        out.append(w.clone())
    return out


@pytest.mark.parametrize("opts,step_of", [
    # RMS-aligned: sign_scale cancels, the step is 0.2 sign(M) (no zero entry in M)
    ({}, lambda m: 0.2 * torch.sign(m)),
    ({"update_rms": None, "sign_scale": 0.25}, lambda m: 0.25 * torch.sign(m)),
])
def test_entrywise_rule_steps_as_written_by_hand(rules, opts, step_of):
    weights, grads = _steps(ENTRYWISE_RULE, **opts)
    for got, want in zip(weights, _by_hand(weights[0], grads, step_of), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_whole_matrix_rule_steps_as_written_by_hand(rules):
    def one_entry(m):  # the largest |M| alone, scaled so the step's RMS is 0.2: 0.2 sqrt(numel)
        d = torch.zeros_like(m)
        i = m.abs().argmax()
        d.view(-1)[i] = torch.sign(m.view(-1)[i]) * 0.2 * m.numel() ** 0.5
        return d
    weights, grads = _steps(WHOLE_RULE)
    for got, want in zip(weights, _by_hand(weights[0], grads, one_entry), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # one entry moves by the step (plus decay), the others by weight decay only
    moved = (weights[1] - (1 - LR * WD) * weights[0]).abs() > 1e-6
    assert moved.sum() == 1


@pytest.mark.parametrize("rule", [ENTRYWISE_RULE, WHOLE_RULE])
def test_registered_rule_trains_a_tiny_model(rules, rule):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = build(model, rule, lr=0.02)
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    y = x[:, :1] * 0.5 - x[:, 1:2]
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    # and its state dict round-trips into a fresh optimizer
    fresh = build(model, rule, lr=0.02)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["rule"] == rule


def test_register_rejects_a_taken_name_and_bad_fields(rules):
    with pytest.raises(ValueError, match="'muon' is empty or taken"):
        register("muon", "2", "2", scaled_sign)
    with pytest.raises(ValueError, match="on_shards 'rows' is unknown; allowed values: whole"):
        register("x1", "1", "inf", scaled_sign, on_shards="rows")
    with pytest.raises(ValueError, match="momentum_kind 'adam' is unknown; allowed values: ema"):
        register("x2", "1", "inf", scaled_sign, momentum_kind="adam")
    with pytest.raises(ValueError, match="scaling 'moonlight' .* allowed on_shards with it"):
        register("x3", "1", "inf", scaled_sign, element_wise=True, scaling="moonlight")
    assert not {"x1", "x2", "x3"} & set(OPTIMIZERS)
    with pytest.raises(ValueError, match="needs 2-D matrices"):  # a WHOLE rule is a matrix rule
        SteepestDescent([dict(params=[nn.Parameter(torch.zeros(3))], rule=WHOLE_RULE)], lr=0.1)
