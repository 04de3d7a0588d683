"""Linear minimisation oracles: lmo(M) = argmax_{||D||_{p->q} <= 1} <M, D>.

Every function takes a batch of stacked matrices M of shape (B, d_out, d_in) (y = W x, so a
column is one input coordinate, a row one output coordinate) and returns D of the same shape and
dtype. Each is the maximiser over the unit ball of its norm, so <M, D> is the dual norm of M:

    norm ||D||_{p->q}            lmo(M)                          <M, lmo(M)> (dual norm)
    1->inf  max |D_ij|           sign(M)                         sum |M_ij|
    2->2    max singular value   U V^T  (M = U S V^T)            nuclear norm sum S
    1->1    max column l1 norm   per column: sign on argmax|M|   sum_j max_i |M_ij|
    inf->inf max row l1 norm     per row: sign on argmax|M|      sum_i max_j |M_ij|
    1->2    max column l2 norm   columns / their l2 norms        sum_j ||M_:j||_2
    2->inf  max row l2 norm      rows / their l2 norms           sum_i ||M_i:||_2
    Frobenius                    M / ||M||_F                     ||M||_F

No Python loop touches an element; the batch dimension lets same-shape matrices share one kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
_EPS = 1e-7  # as torch.optim.Muon: guards the normalisation of an all-zero momentum
# Working precision of Newton-Schulz by name; "auto" is bf16 on CUDA, fp32 elsewhere.
NS_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16}


def sign(m: Tensor) -> Tensor:
    """l1->linf: sign(M) (zero stays zero, which does not change <M, D>)."""
    return torch.sign(m)


def newton_schulz(
    m: Tensor,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    dtype: torch.dtype | None = None,
    eps: float = _EPS,
) -> Tensor:
    """l2->l2: approximately U V^T for M = U S V^T, batched over the first dimension.

    X0 = M / ||M||_F (so every singular value is <= 1), then `steps` times
        A = X X^T,  X <- a X + (b A + c A^2) X,
    i.e. each singular value goes through p(s) = a s + b s^3 + c s^5. With Jordan's quintic
    coefficients (3.4445, -4.7750, 2.0315) five steps take every singular value into roughly
    [0.7, 1.2] rather than exactly 1 (the price of a steep slope at 0); the classic cubic
    (1.5, -0.5, 0) converges to U V^T exactly given enough steps. X is transposed so rows <= columns,
    which makes A the smaller Gram matrix. `dtype` is the working precision (default: M's).
    """
    x = m.to(dtype) if dtype is not None else m
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)
    a, b, c = coefficients
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    if not wide:
        x = x.mT
    return x.to(m.dtype)


def orthogonalise(m: Tensor, ns_steps: int = NS_STEPS,
                  ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                  ns_dtype: str = "auto") -> Tensor:
    """l2->l2 as Muon runs it: `newton_schulz` in the working precision named by `ns_dtype`
    (a key of NS_DTYPES; "auto" is bf16 on CUDA, where it is fast, and fp32 elsewhere)."""
    dtype = NS_DTYPES[ns_dtype]
    if dtype is None:
        dtype = torch.bfloat16 if m.is_cuda else torch.float32
    return newton_schulz(m, ns_steps, ns_coefficients, dtype=dtype)


def _top1(m: Tensor, dim: int) -> Tensor:
    """sign(M) on the entries of largest |M| along `dim`; k tied entries get sign/k each."""
    mag = m.abs()
    top = mag == mag.amax(dim=dim, keepdim=True)
    ties = top.sum(dim=dim, keepdim=True)
    return torch.sign(m) * top / ties


def coltop1(m: Tensor) -> Tensor:
    """l1->l1 (largest column l1 norm): one signed entry of largest |M| per column."""
    return _top1(m, dim=-2)


def rowtop1(m: Tensor) -> Tensor:
    """inf->inf (largest row l1 norm): one signed entry of largest |M| per row."""
    return _top1(m, dim=-1)


def colnorm(m: Tensor, eps: float = _EPS) -> Tensor:
    """l1->l2 (largest column l2 norm): every column scaled to unit l2 norm."""
    return m / m.norm(dim=-2, keepdim=True).clamp_min(eps)


def rownorm(m: Tensor, eps: float = _EPS) -> Tensor:
    """2->inf (largest row l2 norm): every row scaled to unit l2 norm."""
    return m / m.norm(dim=-1, keepdim=True).clamp_min(eps)


def frobenius(m: Tensor, eps: float = _EPS) -> Tensor:
    """Frobenius norm: M / ||M||_F (the direction of plain momentum SGD)."""
    return m / m.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)
