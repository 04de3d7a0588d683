"""Our adamw and muon against torch's own implementations, step for step."""

import pytest
import torch

from forgetless.optim import SteepestDescent, build, functional


def _params(seed: int, shapes):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen) for s in shapes]


def _run(opts_params, n_steps: int, seed: int = 1):
    """Feed the same random gradients to every (optimizer, params) pair."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [p.shape for p in opts_params[0][1]]
    for _ in range(n_steps):
        grads = [torch.randn(*s, generator=gen) for s in shapes]
        for opt, params in opts_params:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()


SHAPES = [(16, 32), (32, 16), (16, 32), (24, 24), (7,)]


def test_adamw_matches_torch_adamw():
    base = _params(0, SHAPES)
    ref = [p.clone().requires_grad_() for p in base]
    ours = [p.clone().requires_grad_() for p in base]
    opt_ref = torch.optim.AdamW(ref, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt_ours = SteepestDescent([dict(params=ours, rule="adamw")], lr=3e-3, betas=(0.9, 0.95),
                               weight_decay=0.1)
    _run([(opt_ref, ref), (opt_ours, ours)], n_steps=6)
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-7)
    assert not torch.equal(ref[0], base[0])  # it moved


def test_build_adamw_matches_torch_adamw_with_foreach():
    base = _params(0, SHAPES)
    ref = [p.clone().requires_grad_() for p in base]
    ours = [p.clone().requires_grad_() for p in base]
    opt_ref = torch.optim.AdamW(ref, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05, foreach=True)
    opt_ours = build([(f"p{i}", p) for i, p in enumerate(ours)], "adamw", lr=1e-2,
                     weight_decay=0.05, decay_1d=True, foreach=True)
    _run([(opt_ref, ref), (opt_ours, ours)], n_steps=5)
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-7)


MUON_SHAPES = [(16, 32), (32, 16), (16, 32), (24, 24), (40, 8)]


def _muon_pair(ns_dtype: str):
    base = _params(2, MUON_SHAPES)
    ref = [p.clone().requires_grad_() for p in base]
    ours = [p.clone().requires_grad_() for p in base]
    opt_ref = torch.optim.Muon(ref, lr=0.02, weight_decay=0.1, momentum=0.95,
                               adjust_lr_fn="match_rms_adamw")
    opt_ours = SteepestDescent([dict(params=ours, rule="muon", ns_dtype=ns_dtype)], lr=0.02,
                               weight_decay=0.1, momentum=0.95)
    return base, ref, ours, opt_ref, opt_ours


@pytest.mark.parametrize("max_batch", [None, 600])
def test_muon_matches_torch_muon_same_precision(max_batch, monkeypatch):
    # torch.optim.Muon runs Newton-Schulz in bf16 on every device; in bf16 ours is bit-identical,
    # also when same-shape matrices are split into several batches (max_batch elements).
    if max_batch is not None:
        monkeypatch.setattr(functional, "MAX_BATCH_NUMEL", max_batch)
    base, ref, ours, opt_ref, opt_ours = _muon_pair("bfloat16")
    _run([(opt_ref, ref), (opt_ours, ours)], n_steps=5)
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_muon_fp32_matches_torch_muon_within_bf16_error():
    # Our CPU default is fp32 Newton-Schulz; the difference to torch's bf16 one is bf16 rounding
    # (relative 2^-8 per operation), small against the total displacement of the weights.
    base, ref, ours, opt_ref, opt_ours = _muon_pair("auto")
    _run([(opt_ref, ref), (opt_ours, ours)], n_steps=5)
    for a, b, w0 in zip(ref, ours, base, strict=True):
        moved = (a - w0).norm()
        assert (b - a).norm() <= 0.02 * moved, ((b - a).norm(), moved)


def test_muon_transposed_group_equals_plain_group():
    # Muon's step does not depend on storage orientation: (d_in, d_out) storage, transposed group.
    base = _params(3, [(16, 32), (48, 24)])
    plain = [p.clone().requires_grad_() for p in base]
    stored_t = [p.t().clone().requires_grad_() for p in base]
    opt_plain = SteepestDescent([dict(params=plain, rule="muon")], lr=0.02, weight_decay=0.1)
    opt_t = SteepestDescent([dict(params=stored_t, rule="muon", transposed=True)], lr=0.02,
                            weight_decay=0.1)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        grads = [torch.randn(*p.shape, generator=gen) for p in base]
        for p, q, g in zip(plain, stored_t, grads, strict=True):
            p.grad, q.grad = g.clone(), g.t().clone()
        opt_plain.step()
        opt_t.step()
    for p, q in zip(plain, stored_t, strict=True):
        torch.testing.assert_close(q.t(), p, rtol=0, atol=1e-6)
