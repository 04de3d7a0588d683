"""The optimizer family: one record per member, the single source of these facts.

Every member is steepest descent under a norm on the weight matrix W (d_out, d_in), y = W x:

    W <- W - lr * s * lmo(M),    lmo(M) = argmax_{||D||_{p->q} <= 1} <M, D>,

with M the momentum of the gradient and s the scale that sets the update RMS to 0.2 (Moonlight's
"update RMS alignment"). Since ||dW x||_q <= ||dW||_{p->q} ||x||_p, the norm p is the one the
optimizer implicitly places on the layer's input activations and q the one on its outputs.
Two optimizers belong to the same family when they share (p, q).

A record holds both what a member *is* (norm, family, reference: read by the CLI, the recommender
and the report) and how it *steps* (its LMO function and the few ways rules differ: read by
`functional`, which writes the update once for all of them). Adding a rule is one `register(...)`
call, here or in user code; nothing else should restate these facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from . import lmo as _lmo

_MUON_REF = (
    "Jordan et al. 2024, 'Muon: an optimizer for hidden layers in neural networks'; "
    "Liu et al. 2025, 'Muon is scalable for LLM training' (Moonlight, update RMS alignment)"
)
_A3_REF = (
    "Optimizer-model consistency paper, appendix A.3 (Algorithms 1 and 2); "
    "Pethick et al. 2025 (steepest descent under matrix operator norms)"
)

# How a rule's direction is computed on FSDP2 shards (see `sharded`):
WHOLE = "whole"          # needs whole matrices: each matrix goes to one owner rank
ENTRYWISE = "entrywise"  # lmo_fn entry by entry on the local shard; the RMS scale needs one sum
FROBENIUS = "frobenius"  # U / ||U||_F: local up to the global norm, one sum per matrix
MOMENTUM_KINDS = ("ema", "lion")
SCALINGS = ("rms", "moonlight")


@dataclass(frozen=True)
class OptimizerInfo:
    """What one member of the family is, and how it steps.

    p, q: the operator norm ||W||_{p->q} the member descends under ("1", "2", "inf"; "F" for
    Frobenius). family: the (p, q) pair as text; members sharing it are the same family.
    lmo: the LMO in words. element_wise: the rule acts entry by entry (any tensor shape);
    otherwise it needs 2-D matrices.
    regularises_*: the norm placed on the layer's inputs (p) and outputs (q). For sgd it is "l2,
    loosely" because ||dW x||_2 <= ||dW||_2 ||x||_2 <= ||dW||_F ||x||_2.

    How it steps (see `functional` for the update they plug into):
    lmo_fn: lmo(M) of a stack of matrices (B, d_out, d_in), called as
        lmo_fn(M, **{k: group[k] for k in lmo_options}); None means AdamW (torch's arithmetic).
    on_shards: WHOLE, ENTRYWISE or FROBENIUS (how `sharded` computes it on FSDP2 shards).
    momentum_kind: "ema" (M <- beta M + (1 - beta) G, optionally Nesterov) or "lion" (Chen et al.:
        lmo of beta1 M + (1 - beta1) G, then M <- beta2 M + (1 - beta2) G).
    scaling: "rms" (s = update_rms / RMS(lmo), per matrix) or "moonlight" (s = update_rms
        sqrt(max(d_out, d_in)), fixed: Muon). orientation_free: lmo(M^T) = lmo(M)^T, so (m, n) and
        (n, m) matrices share a batch and a transposed group needs no flip (Muon).
    defaults: param-group defaults that differ from the optimizer's (e.g. nesterov for Muon).
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
    lmo_fn: Callable[..., Tensor] | None = field(default=None, repr=False, compare=False)
    lmo_options: tuple[str, ...] = ()
    on_shards: str = WHOLE
    momentum_kind: str = "ema"
    scaling: str = "rms"
    orientation_free: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def norm_symbol(self) -> str:
        return "||W||_F" if self.p == "F" else f"||W||_{{{self.p}->{self.q}}}"

    @property
    def regularises(self) -> str:
        return f"inputs in {self.regularises_input}; outputs in {self.regularises_output}"

    def to_dict(self) -> dict[str, object]:
        """The descriptive facts, as JSON-ready values (the step's functions are left out)."""
        out: dict[str, object] = {k: getattr(self, k) for k in (
            "name", "family", "p", "q", "norm", "lmo", "regularises_input", "regularises_output",
            "reference", "element_wise", "on_shards")}
        return {**out, "regularises": self.regularises, "norm_symbol": self.norm_symbol}


OPTIMIZERS: dict[str, OptimizerInfo] = {}


def _choice(field_name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field_name} {value!r} is unknown; allowed values: {', '.join(allowed)}")


def register(name: str, p: str, q: str, lmo_fn: Callable[..., Tensor] | None, *,
             norm: str = "", lmo: str = "", regularises_input: str = "",
             regularises_output: str = "", reference: str = "", element_wise: bool = False,
             on_shards: str | None = None, **step: Any) -> OptimizerInfo:
    """Add rule `name` to `OPTIMIZERS` (and so to `SteepestDescent`, `build`, the CLI, sharded
    training). `step` takes the other `OptimizerInfo` fields (lmo_options, momentum_kind, scaling,
    orientation_free, defaults). on_shards defaults to ENTRYWISE for an element-wise rule, else
    WHOLE. Returns the record; `unregister(name)` removes it again."""
    if not isinstance(name, str) or not name or name in OPTIMIZERS:
        raise ValueError(f"name {name!r} is empty or taken; taken: {', '.join(OPTIMIZERS)}")
    if lmo_fn is not None and not callable(lmo_fn):
        raise ValueError(f"lmo_fn of {name!r} must be callable or None, got {lmo_fn!r}")
    on_shards = on_shards or (ENTRYWISE if element_wise else WHOLE)
    _choice("on_shards", on_shards, (WHOLE, ENTRYWISE, FROBENIUS))
    _choice("momentum_kind", step.get("momentum_kind", "ema"), MOMENTUM_KINDS)
    _choice("scaling", step.get("scaling", "rms"), SCALINGS)
    if step.get("scaling") == "moonlight" and on_shards != WHOLE:
        raise ValueError(f"scaling 'moonlight' of {name!r} needs the whole matrix's shape; "
                         f"allowed on_shards with it: {WHOLE!r}")
    family = "frobenius" if p == "F" else f"l{p}->l{q}"
    info = OptimizerInfo(name, family, p, q, norm, lmo, regularises_input, regularises_output,
                         reference, element_wise, lmo_fn, on_shards=on_shards, **step)
    OPTIMIZERS[name] = info
    return info


def unregister(name: str) -> None:
    """Remove a rule added by `register` (for tests and experiments)."""
    _check(name)
    del OPTIMIZERS[name]


_SPARSE_IN = "l1 (sparser)"
_DENSE_IN = "l2 (dense)"
_L1_OUT = "l1 (sparser)"
_L2_OUT = "l2 (dense)"
_LINF_OUT = "linf (bounded largest entry)"
_ROWCOL_REF = "Pethick et al. 2025; Xu et al. 2026 (row/column normalisation)"
_MAX = "largest absolute entry"

register("adamw", "1", "inf", None, norm=_MAX, element_wise=True,
         lmo="adaptive relative of sign(M): m_hat / (sqrt(v_hat) + eps), torch's AdamW",
         regularises_input=_SPARSE_IN, regularises_output=_LINF_OUT,
         reference="Kingma & Ba 2015; Loshchilov & Hutter 2019 (decoupled weight decay)")
register("signsgd", "1", "inf", _lmo.sign, norm=_MAX, element_wise=True,
         lmo="sign(M), scaled to update RMS 0.2",
         regularises_input=_SPARSE_IN, regularises_output=_LINF_OUT,
         reference="Bernstein et al. 2018, 'signSGD: compressed optimisation for non-convex "
                   "problems'")
register("lion", "1", "inf", _lmo.sign, norm=_MAX, element_wise=True,
         lmo="sign(beta1 m + (1 - beta1) g), scaled to update RMS 0.2",
         regularises_input=_SPARSE_IN, regularises_output=_LINF_OUT,
         reference="Chen et al. 2023, 'Symbolic discovery of optimization algorithms'",
         momentum_kind="lion", defaults={"betas": (0.9, 0.99)})
register("muon", "2", "2", _lmo.orthogonalise, norm="spectral norm (largest singular value)",
         lmo="U V^T of M = U S V^T by Newton-Schulz (5 quintic steps), "
             "Moonlight scale 0.2 sqrt(max(d_out, d_in))",
         regularises_input=_DENSE_IN, regularises_output=_L2_OUT, reference=_MUON_REF,
         lmo_options=("ns_steps", "ns_coefficients", "ns_dtype"), scaling="moonlight",
         orientation_free=True, defaults={"nesterov": True})
register("coltop1", "1", "1", _lmo.coltop1, norm="largest column l1 norm",
         lmo="per column, sign(M) on the entries of largest |M| (ties share 1 evenly), "
             "scaled to update RMS 0.2",
         regularises_input=_SPARSE_IN, regularises_output=_L1_OUT, reference=_A3_REF)
register("rowtop1", "inf", "inf", _lmo.rowtop1, norm="largest row l1 norm",
         lmo="per row, sign(M) on the entries of largest |M| (ties share 1 evenly), "
             "scaled to update RMS 0.2",
         regularises_input=_LINF_OUT, regularises_output=_LINF_OUT, reference=_A3_REF)
register("colnorm", "1", "2", _lmo.colnorm, norm="largest column l2 norm",
         lmo="each column of M divided by its l2 norm, scaled to update RMS 0.2",
         regularises_input=_SPARSE_IN, regularises_output=_L2_OUT, reference=_ROWCOL_REF)
register("rownorm", "2", "inf", _lmo.rownorm, norm="largest row l2 norm",
         lmo="each row of M divided by its l2 norm, scaled to update RMS 0.2",
         regularises_input=_DENSE_IN, regularises_output=_LINF_OUT, reference=_ROWCOL_REF)
register("sgd", "F", "F", _lmo.frobenius, norm="Frobenius norm", on_shards=FROBENIUS,
         lmo="M / ||M||_F scaled to update RMS 0.2, i.e. 0.2 sqrt(numel) M / ||M||_F",
         regularises_input="l2 (dense, loosely)", regularises_output="l2 (dense, loosely)",
         reference="Optimizer-model consistency paper, appendix A.3 (Algorithm 3: RMS-aligned "
                   "SGD)")


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
