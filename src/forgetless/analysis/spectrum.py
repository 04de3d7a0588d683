"""Weight spectra: how many directions each matrix really uses (the paper's Table 2).

For W of shape (d_out, d_in) with singular values s_1 >= ... >= s_r, r = min(d_out, d_in):

- stable rank       ‖W‖²_F / ‖W‖²₂ = Σ s_i² / s_1²                      (1 <= . <= r)
- effective rank    exp(H(p)), p_i = s_i / Σ_j s_j, H(p) = -Σ p_i log p_i  (Roy & Vetterli 2007)
- singular density  ‖s‖₁ / (√r ‖s‖₂)                                       (1/√r <= . <= 1)

All three are larger for a flatter spectrum; Muon's full-rank updates give flatter spectra than
AdamW's. The `_ratio` variants divide the ranks by r so that widths can be compared.

Singular values come from `torch.linalg.svdvals`, batched over stacks of same-shape matrices
(all q_proj of a model, all up_proj, ...), chunked so a stack stays under `max_batch_elems`.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .modules import HIDDEN_KINDS, MatrixRef, iter_matrices

METRICS = ("stable_rank", "effective_rank", "density", "stable_rank_ratio", "effective_rank_ratio")


@dataclass
class MatrixSpectrum:
    name: str
    kind: str
    layer: int | None
    d_out: int
    d_in: int
    stable_rank: float
    effective_rank: float
    density: float
    s_max: float
    frobenius: float

    @property
    def rank_bound(self) -> int:
        return min(self.d_out, self.d_in)

    @property
    def stable_rank_ratio(self) -> float:
        return self.stable_rank / self.rank_bound

    @property
    def effective_rank_ratio(self) -> float:
        return self.effective_rank / self.rank_bound

    def to_dict(self) -> dict:
        out = asdict(self)
        out["stable_rank_ratio"] = self.stable_rank_ratio
        out["effective_rank_ratio"] = self.effective_rank_ratio
        return out


def spectral_stats(s: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stable rank, effective rank and density from singular values `s` of shape (..., r).

    A zero matrix has no spectrum: its figures are NaN.
    """
    s = s.double().clamp_min(0)
    r = s.shape[-1]
    total = s.sum(-1)
    fro2 = (s * s).sum(-1)
    s_max = s.amax(-1)
    p = s / total.unsqueeze(-1)
    plogp = torch.where(p > 0, p * p.log(), torch.zeros_like(p))  # 0 log 0 = 0
    nan = torch.full_like(total, math.nan)
    ok = total > 0
    return {
        "stable_rank": torch.where(ok, fro2 / s_max.square(), nan),
        "effective_rank": torch.where(ok, torch.exp(-plogp.sum(-1)), nan),
        "density": torch.where(ok, total / (math.sqrt(r) * fro2.sqrt()), nan),
        "s_max": s_max,
        "frobenius": fro2.sqrt(),
    }


def _chunks(refs: list[MatrixRef], max_elems: int) -> list[list[MatrixRef]]:
    d_out, d_in = refs[0].weight().shape
    per = max(1, max_elems // (d_out * d_in))
    return [refs[i : i + per] for i in range(0, len(refs), per)]


@torch.no_grad()
def weight_spectra(
    model: nn.Module,
    device: str | torch.device | None = None,
    hidden_only: bool = True,
    kinds: tuple[str, ...] | None = None,
    max_batch_elems: int = 1 << 26,
) -> list[MatrixSpectrum]:
    """Spectrum figures of every matrix of `model`: hidden ones, plus head and embeddings unless
    `hidden_only`. Linear layers of unknown role are kept as kind "other".

    `device` is where the SVDs run (default: where the weights are); weights are cast to float32.
    `kinds` restricts to some module kinds (e.g. ("q", "up")). Unknown linear layers are "other".
    """
    groups: dict[tuple[int, int], list[MatrixRef]] = defaultdict(list)
    for ref in iter_matrices(model, include_embed=not hidden_only):
        if hidden_only and ref.kind in ("head", "embed"):
            continue
        if kinds is not None and ref.kind not in kinds:
            continue
        groups[tuple(ref.weight().shape)].append(ref)
    out: list[MatrixSpectrum] = []
    for (d_out, d_in), refs in groups.items():
        for chunk in _chunks(refs, max_batch_elems):
            dev = device if device is not None else chunk[0].module.weight.device
            stack = torch.stack([finite(r.weight(), r.name).to(dev, torch.float32) for r in chunk])
            stats = spectral_stats(torch.linalg.svdvals(stack))
            for i, ref in enumerate(chunk):
                figures = {k: float(v[i]) for k, v in stats.items()}
                out.append(MatrixSpectrum(ref.name, ref.kind, ref.layer, d_out, d_in, **figures))
    order = {ref.name: i for i, ref in enumerate(iter_matrices(model, include_embed=True))}
    out.sort(key=lambda m: order.get(m.name, 0))
    return out


def summarize_spectra(spectra: list[MatrixSpectrum]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each figure per module kind, plus "hidden" (all of q..down).

    Returns {kind: {"n": count, metric: mean, metric + "_std": std}}.
    """
    by_kind: dict[str, list[MatrixSpectrum]] = defaultdict(list)
    for m in spectra:
        by_kind[m.kind].append(m)
        if m.kind in HIDDEN_KINDS:
            by_kind["hidden"].append(m)
    summary: dict[str, dict[str, float]] = {}
    for kind, items in by_kind.items():
        row: dict[str, float] = {"n": len(items)}
        for metric in METRICS:
            values = torch.tensor([getattr(m, metric) for m in items], dtype=torch.float64)
            values = values[~values.isnan()]
            row[metric] = float(values.mean()) if len(values) else math.nan
            row[metric + "_std"] = float(values.std(unbiased=False)) if len(values) else math.nan
        summary[kind] = row
    return summary


# --- Fast, scale-free weight figures for the optimizer fingerprint ----------------------------------
#
# The fingerprint must answer for a 135M-parameter model in well under a minute on two cores, so
# it never takes a full SVD of every matrix:
# - the stable rank needs only σ_max, from `torch.svd_lowrank` (a few power iterations on a rank-8
#   sketch), on every hidden matrix;
# - the normalised spectrum s/σ_max comes from the eigenvalues of the small Gram matrix (r × r),
#   on at most `spectrum_layers` evenly spaced blocks;
# - row/column norms and the entry kurtosis are one pass over the weights.
# Every figure is a ratio, so it does not move with the weights' scale, the width or the depth.
FAST_METRICS = ("srank", "sv10", "sv50", "mpdev", "colcv", "rowcv", "kurt")
_QS = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)


@functools.lru_cache(maxsize=32)
def _gaussian_quantiles(d_out: int, d_in: int) -> torch.Tensor:
    """Quantiles of s/σ_max of a Gaussian matrix of this shape (a fixed draw): what an untrained,
    randomly initialised matrix looks like (the Marchenko-Pastur law at this aspect ratio)."""
    g = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(0))
    return torch.quantile(normalised_spectrum(g), _QS)


def _sigma_max(w: torch.Tensor) -> float:
    q = min(8, *w.shape)
    return float(torch.svd_lowrank(w, q=q, niter=4)[1][0])


def normalised_spectrum(w: torch.Tensor) -> torch.Tensor:
    """All singular values of `w` divided by the largest, ascending, from the Gram matrix's
    eigenvalues (float32 product, float64 eigensolver: exact to ~1e-3 of σ_max, enough for
    quantiles)."""
    g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    s = torch.linalg.eigvalsh(g.double()).clamp_min(0).sqrt()
    return s / s[-1].clamp_min(1e-30)


@torch.no_grad()
def fast_matrix_figures(w: torch.Tensor, spectrum: bool = True) -> dict[str, float]:
    """srank: ‖W‖²_F / σ_max² / r;  sv10, sv50: quantiles (10%, 50%) of s/σ_max (NaN unless
    `spectrum`);  mpdev: mean |difference| between the quantiles of s/σ_max and those of a Gaussian
    matrix of the same shape (≈ 0.01 for a random init: how far training moved the spectrum);  colcv, rowcv: coefficient of variation of column (input) and row (output) norms;
    kurt: E[(w−μ)⁴] / E[(w−μ)²]² of the entries (3 for a Gaussian)."""
    w = w.detach().float()  # bf16 / fp16 / dequantised weights alike
    r = min(w.shape)
    fro2 = float(w.square().sum())
    if fro2 == 0:
        return dict.fromkeys(FAST_METRICS, math.nan)
    out = {"srank": fro2 / _sigma_max(w) ** 2 / r, "sv10": math.nan, "sv50": math.nan, "mpdev": math.nan}
    if spectrum:
        s = normalised_spectrum(w)
        out["sv10"], out["sv50"] = (float(torch.quantile(s, q)) for q in (0.1, 0.5))
        out["mpdev"] = float((torch.quantile(s, _QS) - _gaussian_quantiles(*w.shape)).abs().mean())
    cols, rows = w.norm(dim=0), w.norm(dim=1)
    out["colcv"] = float(cols.std() / cols.mean().clamp_min(1e-30))
    out["rowcv"] = float(rows.std() / rows.mean().clamp_min(1e-30))
    c = w - w.mean()
    m2 = c.square().mean()
    out["kurt"] = float(c.pow(4).mean() / m2.square().clamp_min(1e-30))
    return out


def finite(w: torch.Tensor, name: str) -> torch.Tensor:
    """`w`, when every entry is finite: an SVD of NaN fails deep in LAPACK (a diverged run's
    checkpoint is a user's input, named in one line)."""
    if not bool(torch.isfinite(w).all()):
        from forgetless.errors import CorruptCheckpoint

        raise CorruptCheckpoint(f"{name} holds NaN or infinite weights (a diverged run?); no spectrum "
                                "can be taken of it: use an earlier checkpoint")
    return w


def fast_weight_figures(model: nn.Module, spectrum_layers: int = 8) -> list[tuple[str, int | None, dict]]:
    """(kind, layer, figures) of every hidden matrix; the Gram spectrum on at most
    `spectrum_layers` evenly spaced blocks (first and last included), the rest on all."""
    refs = [r for r in iter_matrices(model, include_embed=False) if r.kind in HIDDEN_KINDS]
    layers = sorted({r.layer for r in refs if r.layer is not None})
    if len(layers) > spectrum_layers:
        picks = {layers[round(i * (len(layers) - 1) / (spectrum_layers - 1))] for i in range(spectrum_layers)}
    else:
        picks = set(layers)
    # One thread: these matrices are small, and on a shared machine a second thread mostly waits
    # (measured: a 576 x 1536 Gram spectrum took 40 ms on one thread, seconds on two under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [(r.kind, r.layer, fast_matrix_figures(finite(r.weight(), r.name),
                                                      spectrum=r.layer in picks or r.layer is None))
                for r in refs]
    finally:
        torch.set_num_threads(threads)
