"""Each rule's step inside the optimizer: its RMS, its direction, hand-written references."""

import math

import pytest
import torch

from forgetless.optim import OPTIMIZERS, SteepestDescent

# Dual norms from the definitions (see test_optim_lmo.py); D = -step direction for gradient G.
DUAL = {
    "signsgd": lambda m: m.abs().sum(),
    "coltop1": lambda m: m.abs().max(dim=0).values.sum(),
    "rowtop1": lambda m: m.abs().max(dim=1).values.sum(),
    "colnorm": lambda m: m.norm(dim=0).sum(),
    "rownorm": lambda m: m.norm(dim=1).sum(),
    "sgd": lambda m: m.norm(),
}
NORM = {
    "signsgd": lambda d: d.abs().max(),
    "coltop1": lambda d: d.abs().sum(dim=0).max(),
    "rowtop1": lambda d: d.abs().sum(dim=1).max(),
    "colnorm": lambda d: d.norm(dim=0).max(),
    "rownorm": lambda d: d.norm(dim=1).max(),
    "sgd": lambda d: d.norm(),
}
SHAPES = [(12, 20), (20, 12), (12, 20)]


def _one_step(rule: str, shapes=SHAPES, **kw):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)
              for s in shapes]
    grads = [torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]
    before = [p.detach().clone() for p in params]
    opt = SteepestDescent([dict(params=params, rule=rule)], lr=1.0, momentum=0.0, **kw)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()
    return grads, [b - p.detach() for p, b in zip(params, before, strict=True)]


@pytest.mark.parametrize("rule", sorted(DUAL))
def test_step_has_rms_02_and_is_the_lmo_direction(rule):
    grads, deltas = _one_step(rule)
    for g, d in zip(grads, deltas, strict=True):
        rms = d.square().mean().sqrt()
        torch.testing.assert_close(rms, torch.tensor(0.2, dtype=torch.float64))
        # <G, D> / ||D|| equals the dual norm of G only when D is the LMO direction
        torch.testing.assert_close((g * d).sum() / NORM[rule](d), DUAL[rule](g), rtol=1e-9, atol=0)


def test_muon_step_rms_is_02_up_to_newton_schulz():
    grads, deltas = _one_step("muon", shapes=[(32, 64), (64, 32), (48, 48)])
    for d in deltas:
        rms = d.square().mean().sqrt().item()
        assert 0.14 <= rms <= 0.24, rms


def test_every_rule_listed_in_the_registry_steps():
    for rule in OPTIMIZERS:
        _, deltas = _one_step(rule)
        assert all(torch.isfinite(d).all() and d.abs().sum() > 0 for d in deltas), rule


def _reference_run(rule, params, grads_per_step, lr, wd, beta=0.9, betas=(0.9, 0.99)):
    """Hand-written per-tensor loops of signSGD, Lion (Chen et al. 2023) and Algorithm 3 SGD."""
    params = [p.clone() for p in params]
    state = [torch.zeros_like(p) for p in params]
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(params, grads, strict=True)):
            m = state[i]
            if rule == "lion":
                c = betas[0] * m + (1 - betas[0]) * g
                step = 0.2 * torch.sign(c)                    # sign has RMS 1: aligned to 0.2
                state[i] = betas[1] * m + (1 - betas[1]) * g
            else:
                m = beta * m + (1 - beta) * g
                state[i] = m
                if rule == "signsgd":
                    step = 0.2 * torch.sign(m)
                else:  # sgd, paper Algorithm 3
                    step = 0.2 * math.sqrt(m.numel()) * m / m.norm()
            params[i] = w - lr * wd * w - lr * step
    return params


@pytest.mark.parametrize("rule", ["signsgd", "lion", "sgd"])
def test_rule_matches_hand_written_reference(rule):
    gen = torch.Generator().manual_seed(5)
    shapes = [(8, 16), (16, 8), (5,)] if rule != "sgd" else [(8, 16), (16, 8)]
    base = [torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]
             for _ in range(4)]
    expected = _reference_run(rule, base, grads, lr=0.01, wd=0.1)
    params = [b.clone().requires_grad_() for b in base]
    opt = SteepestDescent([dict(params=params, rule=rule)], lr=0.01, weight_decay=0.1,
                          momentum=0.9)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)


def test_lion_unaligned_is_plain_lion():
    p = torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)
    opt = SteepestDescent([dict(params=[p], rule="lion", update_rms=None)], lr=0.1)
    p.grad = torch.arange(16, dtype=torch.float64).reshape(4, 4) - 7.5
    opt.step()
    torch.testing.assert_close(p.detach(), -0.1 * torch.sign(p.grad))


def test_all_zero_gradient_leaves_weights_finite():
    for rule in OPTIMIZERS:
        p = torch.ones(4, 6, requires_grad=True)
        opt = SteepestDescent([dict(params=[p], rule=rule)], lr=0.1)
        p.grad = torch.zeros(4, 6)
        opt.step()
        assert torch.isfinite(p).all(), rule
