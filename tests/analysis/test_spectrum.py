"""Spectrum figures against matrices of known spectrum and numpy's own SVD."""

import math

import numpy as np
import pytest
import torch

from forgetless.analysis.modules import module_kind
from forgetless.analysis.spectrum import spectral_stats, summarize_spectra, weight_spectra


def with_spectrum(s: list[float], d_out: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """U diag(s) Vᵀ with U, V random orthogonal (QR of Gaussian matrices)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d_out, d_out, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))
    r = min(d_out, d_in)
    sigma = torch.zeros(d_out, d_in, dtype=torch.float64)
    sigma[range(len(s)), range(len(s))] = torch.tensor(s, dtype=torch.float64)
    assert len(s) <= r
    return u @ sigma @ v.T


def test_hand_worked_spectrum():
    # s = (4, 2, 1, 1): ‖s‖₂² = 22, s₁² = 16, p = (1/2, 1/4, 1/8, 1/8), H = 1.75 ln 2, ‖s‖₁ = 8.
    w = with_spectrum([4, 2, 1, 1], 4, 6)
    stats = spectral_stats(torch.linalg.svdvals(w))
    assert float(stats["stable_rank"]) == pytest.approx(22 / 16, rel=1e-9)
    assert float(stats["effective_rank"]) == pytest.approx(2**1.75, rel=1e-9)
    assert float(stats["density"]) == pytest.approx(8 / (2 * math.sqrt(22)), rel=1e-9)


@pytest.mark.parametrize("shape", [(8, 8), (5, 12), (12, 5)])
def test_flat_and_rank_one_extremes(shape):
    r = min(shape)
    flat = spectral_stats(torch.linalg.svdvals(with_spectrum([3.0] * r, *shape)))
    assert float(flat["stable_rank"]) == pytest.approx(r, rel=1e-9)
    assert float(flat["effective_rank"]) == pytest.approx(r, rel=1e-9)
    assert float(flat["density"]) == pytest.approx(1.0, rel=1e-9)
    one = spectral_stats(torch.linalg.svdvals(with_spectrum([2.5], *shape)))
    assert float(one["stable_rank"]) == pytest.approx(1.0, rel=1e-6)
    assert float(one["effective_rank"]) == pytest.approx(1.0, rel=1e-6)
    assert float(one["density"]) == pytest.approx(1 / math.sqrt(r), rel=1e-6)


def test_zero_matrix_is_nan():
    stats = spectral_stats(torch.zeros(1, 4))
    assert math.isnan(float(stats["stable_rank"])) and math.isnan(float(stats["density"]))


def _numpy_figures(w: np.ndarray) -> tuple[float, float, float]:
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return (s**2).sum() / s[0] ** 2, float(np.exp(-(p * np.log(p)).sum())), s.sum() / (
        np.sqrt(len(s)) * np.sqrt((s**2).sum())
    )


def test_llama_matrices_match_numpy(llama):
    spectra = weight_spectra(llama, max_batch_elems=1)  # chunks of one matrix each
    assert [m.kind for m in spectra] == ["q", "k", "v", "o", "gate", "up", "down"] * 2
    assert [m.layer for m in spectra] == [0] * 7 + [1] * 7
    params = dict(llama.named_parameters())
    for m in spectra:
        w = params[m.name + ".weight"].detach().numpy()
        assert (m.d_out, m.d_in) == w.shape
        sr, er, dens = _numpy_figures(w)
        assert m.stable_rank == pytest.approx(sr, rel=1e-4)
        assert m.effective_rank == pytest.approx(er, rel=1e-4)
        assert m.density == pytest.approx(dens, rel=1e-4)


def test_gpt2_conv1d_orientation_and_fused_split(gpt2):
    spectra = weight_spectra(gpt2, hidden_only=False)
    kinds = [m.kind for m in spectra]
    assert kinds.count("embed") == 2  # wte (tied with lm_head, counted once) and wpe
    assert "head" not in kinds
    hidden = [m for m in spectra if m.layer == 0]
    assert [m.kind for m in hidden] == ["q", "k", "v", "o", "up", "down"]
    d = 32
    c_attn = gpt2.transformer.h[0].attn.c_attn.weight.detach().numpy()  # (d_in, 3d)
    for i, m in enumerate(hidden[:3]):
        assert (m.d_out, m.d_in) == (d, d)
        assert m.stable_rank == pytest.approx(_numpy_figures(c_attn[:, i * d : (i + 1) * d])[0], rel=1e-4)
    up = hidden[4]
    assert (up.d_out, up.d_in) == (4 * d, d)  # c_fc stored (d, 4d) by Conv1D


def test_summary_means_per_kind():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
            for i, s in enumerate(([1.0, 1.0], [1.0, 0.0])):
                lin = torch.nn.Linear(2, 2, bias=False)
                lin.weight.data = with_spectrum(s, 2, 2, seed=i).float()
                self.layers[i].q_proj = lin

    summary = summarize_spectra(weight_spectra(Two()))
    assert summary["q"]["n"] == 2
    assert summary["q"]["stable_rank"] == pytest.approx((2 + 1) / 2, rel=1e-5)
    assert summary["q"]["stable_rank_ratio"] == pytest.approx((1 + 0.5) / 2, rel=1e-5)
    assert summary["hidden"]["density"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2, rel=1e-5)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("model.layers.0.self_attn.q_proj", "q"),
        ("base_model.model.model.layers.1.mlp.down_proj.base_layer", "down"),
        ("transformer.h.3.attn.c_proj", "o"),
        ("transformer.h.3.mlp.c_proj", "down"),
        ("transformer.h.3.attn.c_attn", ("q", "k", "v")),
        ("lm_head", "head"),
        ("model.layers.0.foo", "other"),
    ],
)
def test_module_kinds(name, kind):
    assert module_kind(name) == kind
