"""Each LMO against its norm's definition: ||lmo(M)|| <= 1 and <M, lmo(M)> = dual norm of M."""

import pytest
import torch

from forgetless.optim import lmo

# Independent references, straight from the definitions, for D and M of shape (d_out, d_in).
# ||D||_{p->q} = max_x ||D x||_q / ||x||_p; the closed forms are the textbook ones and are
# cross-checked below by sampling x.
NORM = {
    "1->inf": lambda d: d.abs().max(),
    "2->2": lambda d: torch.linalg.svdvals(d)[0],
    "1->1": lambda d: d.abs().sum(dim=0).max(),       # largest column abs-sum
    "inf->inf": lambda d: d.abs().sum(dim=1).max(),   # largest row abs-sum
    "1->2": lambda d: d.norm(dim=0).max(),             # largest column l2 norm
    "2->inf": lambda d: d.norm(dim=1).max(),           # largest row l2 norm
    "F": lambda d: d.norm(),
}
DUAL = {
    "1->inf": lambda m: m.abs().sum(),
    "2->2": lambda m: torch.linalg.svdvals(m).sum(),   # nuclear norm
    "1->1": lambda m: m.abs().max(dim=0).values.sum(),
    "inf->inf": lambda m: m.abs().max(dim=1).values.sum(),
    "1->2": lambda m: m.norm(dim=0).sum(),
    "2->inf": lambda m: m.norm(dim=1).sum(),
    "F": lambda m: m.norm(),
}
_P = {"1": 1.0, "2": 2.0, "inf": float("inf")}


def _exact_polar(m):
    # Classic cubic Newton-Schulz converges to U V^T; 100 steps in float64 reach it.
    return lmo.newton_schulz(m, steps=100, coefficients=(1.5, -0.5, 0.0))


CASES = [
    ("sign", lmo.sign, "1->inf"),
    ("polar", _exact_polar, "2->2"),
    ("coltop1", lmo.coltop1, "1->1"),
    ("rowtop1", lmo.rowtop1, "inf->inf"),
    ("colnorm", lmo.colnorm, "1->2"),
    ("rownorm", lmo.rownorm, "2->inf"),
    ("frobenius", lmo.frobenius, "F"),
]


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    # a stacked group of three same-shape matrices, float64 for tight tolerances
    return torch.randn(3, 12, 20, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 12, 20), (2, 20, 12)])
@pytest.mark.parametrize("label,fn,norm", CASES, ids=[c[0] for c in CASES])
def test_lmo_is_unit_norm_maximiser(label, fn, norm, shape):
    gen = torch.Generator().manual_seed(len(label))
    m = torch.randn(*shape, generator=gen, dtype=torch.float64)
    d = fn(m)
    assert d.shape == m.shape and d.dtype == m.dtype
    for mi, di in zip(m, d, strict=True):
        assert NORM[norm](di) <= 1 + 1e-6
        assert NORM[norm](di) >= 1 - 1e-6  # on the boundary of the ball
        torch.testing.assert_close((mi * di).sum(), DUAL[norm](mi), rtol=1e-6, atol=0)


@pytest.mark.parametrize("norm", ["1->1", "inf->inf", "1->2", "2->inf", "2->2", "1->inf"])
def test_closed_form_norms_bound_sampled_ratios(norm):
    # ||D x||_q / ||x||_p over many x (random, signs, basis vectors) never beats the closed form
    p, q = (_P[s] for s in norm.split("->"))
    gen = torch.Generator().manual_seed(1)
    d = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    xs = torch.cat([torch.randn(2000, 5, generator=gen, dtype=torch.float64),
                    torch.randint(0, 2, (200, 5), generator=gen).double() * 2 - 1,
                    torch.eye(5, dtype=torch.float64)])
    ratios = torch.linalg.vector_norm(xs @ d.T, ord=q, dim=1) / torch.linalg.vector_norm(
        xs, ord=p, dim=1)
    assert ratios.max() <= NORM[norm](d) + 1e-9
    assert ratios.max() >= 0.9 * NORM[norm](d)  # and the bound is nearly reached


def test_exact_polar_matches_svd():
    m = _batch()
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    torch.testing.assert_close(_exact_polar(m), u @ vh, rtol=0, atol=1e-8)


def test_quintic_newton_schulz_within_its_approximation():
    # Jordan's quintic maps singular values into about [0.7, 1.2] in 5 steps, not exactly to 1.
    m = _batch().float()
    d = lmo.newton_schulz(m)
    for mi, di in zip(m, d, strict=True):
        s = torch.linalg.svdvals(di)
        assert 0.6 <= s.min() and s.max() <= 1.25, s
        ratio = (mi * di).sum() / torch.linalg.svdvals(mi).sum()
        assert 0.6 <= ratio <= 1.25


def test_newton_schulz_dtype_is_working_precision_only():
    m = _batch().float()
    out = lmo.newton_schulz(m, dtype=torch.bfloat16)
    assert out.dtype == torch.float32
    assert (out - lmo.newton_schulz(m)).abs().max() < 0.05


def test_ties_split_evenly_on_hand_made_matrix():
    m = torch.tensor([[3.0, -3.0, 1.0],
                      [-3.0, 2.0, 1.0],
                      [0.0, 3.0, -1.0]])
    # columns: col 0 ties rows 0,1; col 1 ties rows 0,2; col 2 ties all three
    expected_col = torch.tensor([[0.5, -0.5, 1 / 3],
                                 [-0.5, 0.0, 1 / 3],
                                 [0.0, 0.5, -1 / 3]])
    # rows: row 0 ties cols 0,1; rows 1 and 2 have a single largest entry
    expected_row = torch.tensor([[0.5, -0.5, 0.0],
                                 [-1.0, 0.0, 0.0],
                                 [0.0, 1.0, 0.0]])
    torch.testing.assert_close(lmo.coltop1(m[None])[0], expected_col)
    torch.testing.assert_close(lmo.rowtop1(m[None])[0], expected_row)


def test_zero_matrix_gives_zero_direction():
    z = torch.zeros(2, 4, 6)
    for fn in (lmo.sign, lmo.newton_schulz, lmo.coltop1, lmo.rowtop1, lmo.colnorm, lmo.rownorm,
               lmo.frobenius):
        out = fn(z)
        assert torch.isfinite(out).all() and out.abs().sum() == 0, fn.__name__
