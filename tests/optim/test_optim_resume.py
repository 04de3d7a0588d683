"""A state_dict saved mid-run continues bit for bit; lr schedulers drive every group."""

import io

import pytest
import torch
from torch import nn

from forgetless.optim import OPTIMIZERS, build


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.LayerNorm(16),
                         nn.Linear(16, 4))


def _train(model, opt, sched, steps, start):
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + step)
        x, y = torch.randn(32, 8, generator=gen), torch.randn(32, 4, generator=gen)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()


def _make(name, seed=0):
    model = _model(seed)
    opt = build(model, name, lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                total_steps=10)
    return model, opt, sched


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_is_bit_for_bit(name):
    model, opt, sched = _make(name)
    _train(model, opt, sched, steps=6, start=0)

    model_a, opt_a, sched_a = _make(name)
    _train(model_a, opt_a, sched_a, steps=3, start=0)
    buffer = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict(),
                "sched": sched_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    model_b, opt_b, sched_b = _make(name, seed=1)  # different init: everything must come from disk
    model_b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    sched_b.load_state_dict(saved["sched"])
    _train(model_b, opt_b, sched_b, steps=3, start=3)

    for (n, p), q in zip(model.named_parameters(), model_b.parameters(), strict=True):
        assert torch.equal(p, q), n
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt_b.param_groups]


def test_scheduler_lr_is_the_lr_every_group_steps_with():
    model = _model()
    opt = build(model, "muon", lr=1e-2, weight_decay=0.1, adamw_lr=3e-3)
    base = [g["lr"] for g in opt.param_groups]
    assert sorted(base) == [3e-3, 1e-2]  # matrices; biases and norm gains
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 if s == 1 else 0.0 if s else 1)
    _train(model, opt, sched, steps=1, start=0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr / 2 for lr in base])
    _train(model, opt, sched, steps=1, start=1)
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    frozen = [p.detach().clone() for p in model.parameters()]
    _train(model, opt, sched, steps=1, start=2)  # lr 0: no group may move (nor decay)
    for p, q in zip(model.parameters(), frozen, strict=True):
        assert torch.equal(p, q)
