"""The optimizer family: one record per member, the single source of these facts.

Every member is steepest descent under a norm on the weight matrix W (d_out, d_in), y = W x:

    W <- W - lr * s * lmo(M),    lmo(M) = argmax_{||D||_{p->q} <= 1} <M, D>,

with M the momentum of the gradient and s the scale that sets the update RMS to 0.2 (Moonlight's
"update RMS alignment"). Since ||dW x||_q <= ||dW||_{p->q} ||x||_p, the norm p is the one the
optimizer implicitly places on the layer's input activations and q the one on its outputs.
Two optimizers belong to the same family when they share (p, q).

The CLI, the recommender and the report read these records; nothing else should restate them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

_MUON_REF = (
    "Jordan et al. 2024, 'Muon: an optimizer for hidden layers in neural networks'; "
    "Liu et al. 2025, 'Muon is scalable for LLM training' (Moonlight, update RMS alignment)"
)
_A3_REF = (
    "Optimizer-model consistency paper, appendix A.3 (Algorithms 1 and 2); "
    "Pethick et al. 2025 (steepest descent under matrix operator norms)"
)


@dataclass(frozen=True)
class OptimizerInfo:
    """What one member of the family is.

    p, q: the operator norm ||W||_{p->q} the member descends under ("1", "2", "inf"; "F" for
    Frobenius). family: the (p, q) pair as text; members sharing it are the same family.
    element_wise: the rule acts entry by entry (any tensor shape); otherwise it needs 2-D matrices.
    regularises_*: the norm placed on the layer's inputs (p) and outputs (q). For sgd it is "l2,
    loosely" because ||dW x||_2 <= ||dW||_2 ||x||_2 <= ||dW||_F ||x||_2.
    """

    name: str
    family: str
    p: str
    q: str
    norm: str
    lmo: str
    regularises_input: str
    regularises_output: str
    reference: str
    element_wise: bool

    @property
    def norm_symbol(self) -> str:
        return "||W||_F" if self.p == "F" else f"||W||_{{{self.p}->{self.q}}}"

    @property
    def regularises(self) -> str:
        return f"inputs in {self.regularises_input}; outputs in {self.regularises_output}"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "regularises": self.regularises, "norm_symbol": self.norm_symbol}


def _family(p: str, q: str) -> str:
    return "frobenius" if p == "F" else f"l{p}->l{q}"


def _info(name: str, p: str, q: str, norm: str, lmo: str, inp: str, out: str, ref: str,
          element_wise: bool = False) -> OptimizerInfo:
    return OptimizerInfo(name, _family(p, q), p, q, norm, lmo, inp, out, ref, element_wise)


_SPARSE_IN = "l1 (sparser)"
_DENSE_IN = "l2 (dense)"
_L1_OUT = "l1 (sparser)"
_L2_OUT = "l2 (dense)"
_LINF_OUT = "linf (bounded largest entry)"

OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in [
        _info("adamw", "1", "inf", "largest absolute entry",
              "adaptive relative of sign(M): m_hat / (sqrt(v_hat) + eps), torch's AdamW",
              _SPARSE_IN, _LINF_OUT,
              "Kingma & Ba 2015; Loshchilov & Hutter 2019 (decoupled weight decay)",
              element_wise=True),
        _info("signsgd", "1", "inf", "largest absolute entry",
              "sign(M), scaled to update RMS 0.2", _SPARSE_IN, _LINF_OUT,
              "Bernstein et al. 2018, 'signSGD: compressed optimisation for non-convex problems'",
              element_wise=True),
        _info("lion", "1", "inf", "largest absolute entry",
              "sign(beta1 m + (1 - beta1) g), scaled to update RMS 0.2", _SPARSE_IN, _LINF_OUT,
              "Chen et al. 2023, 'Symbolic discovery of optimization algorithms'",
              element_wise=True),
        _info("muon", "2", "2", "spectral norm (largest singular value)",
              "U V^T of M = U S V^T by Newton-Schulz (5 quintic steps), "
              "Moonlight scale 0.2 sqrt(max(d_out, d_in))", _DENSE_IN, _L2_OUT, _MUON_REF),
        _info("coltop1", "1", "1", "largest column l1 norm",
              "per column, sign(M) on the entries of largest |M| (ties share 1 evenly), "
              "scaled to update RMS 0.2", _SPARSE_IN, _L1_OUT, _A3_REF),
        _info("rowtop1", "inf", "inf", "largest row l1 norm",
              "per row, sign(M) on the entries of largest |M| (ties share 1 evenly), "
              "scaled to update RMS 0.2",
              _LINF_OUT, _LINF_OUT, _A3_REF),
        _info("colnorm", "1", "2", "largest column l2 norm",
              "each column of M divided by its l2 norm, scaled to update RMS 0.2",
              _SPARSE_IN, _L2_OUT, "Pethick et al. 2025; Xu et al. 2026 (row/column normalisation)"),
        _info("rownorm", "2", "inf", "largest row l2 norm",
              "each row of M divided by its l2 norm, scaled to update RMS 0.2",
              _DENSE_IN, _LINF_OUT, "Pethick et al. 2025; Xu et al. 2026 (row/column normalisation)"),
        _info("sgd", "F", "F", "Frobenius norm",
              "M / ||M||_F scaled to update RMS 0.2, i.e. 0.2 sqrt(numel) M / ||M||_F",
              "l2 (dense, loosely)", "l2 (dense, loosely)",
              "Optimizer-model consistency paper, appendix A.3 (Algorithm 3: RMS-aligned SGD)"),
    ]
}


def _check(name: str) -> OptimizerInfo:
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer name {name!r} is unknown; allowed values: {', '.join(OPTIMIZERS)}"
        )
    return OPTIMIZERS[name]


def describe(name: str) -> OptimizerInfo:
    """The registry record of optimizer `name` (ValueError naming the allowed values if unknown)."""
    return _check(name)


def same_family(a: str, b: str) -> bool:
    """True when optimizers `a` and `b` descend under the same norm (p, q)."""
    return _check(a).family == _check(b).family


def family_members(family: str) -> list[str]:
    """Names of the members of `family` (e.g. 'l1->linf'), in registry order."""
    names = [info.name for info in OPTIMIZERS.values() if info.family == family]
    if not names:
        allowed = sorted({info.family for info in OPTIMIZERS.values()})
        raise ValueError(f"family {family!r} is unknown; allowed values: {', '.join(allowed)}")
    return names
