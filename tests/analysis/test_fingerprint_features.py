"""The fast weight figures against independent references: a full SVD, hand-worked matrices,
GPT-2's Conv1D layout, and bf16 storage."""

import math

import pytest
import torch
from analysis_models import tiny_gpt2

from forgetless.analysis.fingerprint import weight_features
from forgetless.analysis.modules import iter_matrices
from forgetless.analysis.spectrum import _sigma_max, fast_matrix_figures, normalised_spectrum


def test_spectrum_and_stable_rank_match_a_full_svd():
    g = torch.Generator().manual_seed(0)
    for shape in ((40, 40), (24, 72), (72, 24)):
        w = torch.randn(*shape, generator=g) @ torch.diag(torch.linspace(0.1, 3, shape[1]))
        s = torch.linalg.svdvals(w.double())
        assert torch.allclose(normalised_spectrum(w), (s / s[0]).flip(0), atol=1e-4)
        assert _sigma_max(w) == pytest.approx(float(s[0]), rel=1e-3)
        figs = fast_matrix_figures(w)
        assert figs["srank"] == pytest.approx(float((s**2).sum() / s[0] ** 2) / min(shape), rel=2e-3)
        assert figs["sv50"] == pytest.approx(float(torch.quantile((s / s[0]).float(), 0.5)), abs=1e-4)


def test_hand_worked_norms_and_kurtosis():
    w = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # columns (and rows) of norm 1 and 3
    figs = fast_matrix_figures(w)
    assert figs["colcv"] == pytest.approx(math.sqrt(2) / 2)  # std (unbiased) sqrt(2) over mean 2
    assert figs["rowcv"] == pytest.approx(math.sqrt(2) / 2)
    # entries 1, 0, 0, 3: mean 1, centred 0, -1, -1, 2 -> m2 = 6/4, m4 = 18/4, kurtosis 18/4 / (6/4)^2 = 2
    assert figs["kurt"] == pytest.approx(2.0)
    assert figs["srank"] == pytest.approx((1 + 9) / 9 / 2)
    assert all(math.isnan(v) for v in fast_matrix_figures(torch.zeros(3, 3)).values())


def test_gaussian_matrix_is_close_to_its_reference_spectrum():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(5))
    figs = fast_matrix_figures(w)
    assert figs["mpdev"] < 0.03 and figs["kurt"] == pytest.approx(3, abs=0.2)
    assert fast_matrix_figures(w @ torch.diag(torch.linspace(0, 4, 128)))["mpdev"] > 0.05


def test_gpt2_conv1d_and_bf16_give_the_features_of_the_plain_weights():
    model = tiny_gpt2(seed=1)
    feats = weight_features(model)
    # Brute force: the oriented (d_out, d_in) weights, averaged per group by hand.
    q_figs = [fast_matrix_figures(r.weight()) for r in iter_matrices(model, include_embed=False) if r.kind == "q"]
    assert q_figs and all(r.weight().shape == (32, 32) for r in iter_matrices(model) if r.kind == "q")
    attn = [fast_matrix_figures(r.weight()) for r in iter_matrices(model, include_embed=False)
            if r.kind in ("q", "k", "v")]
    assert feats["attn_in_colcv"] == pytest.approx(sum(f["colcv"] for f in attn) / len(attn))
    half = weight_features(tiny_gpt2(seed=1).to(torch.bfloat16))
    for k, v in feats.items():
        if k.endswith(("srank", "sv50", "colcv", "rowcv")):
            assert half[k] == pytest.approx(v, rel=0.02), k


def test_reference_after_a_bf16_round_trip_and_weight_decay_names(tmp_path, monkeypatch):
    """calibration's bf16 conversion measures the weights bf16 would store (cast by hand here), and
    a weight decay other than the default is part of the run's name."""
    from analysis_models import tiny_llama

    from forgetless.analysis import calibration
    from forgetless.analysis.calibration import grid, reference_from_checkpoint
    from forgetless.analysis.fingerprint import model_features

    # The checkpoint loader needs a tokenizer this tiny model lacks: the weights alone are the point.
    monkeypatch.setattr(calibration, "load_model", lambda path: (tiny_llama(seed=4, hidden=48), None))
    ref = reference_from_checkpoint(tmp_path / "ckpt", "adamw", conversion="bf16", weight_decay=0.0)
    by_hand = model_features(tiny_llama(seed=4, hidden=48).to(torch.bfloat16).float())
    assert ref.features == pytest.approx(by_hand, nan_ok=True)
    assert (ref.family, ref.conversion, ref.weight_decay) == ("l1->linf", "bf16", 0.0)
    with pytest.raises(ValueError, match="conversion: 'q8'"):
        reference_from_checkpoint(tmp_path / "ckpt", "adamw", conversion="q8")
    names = [s.name for s in grid(["nano"], ["muon"], [240], [0], [3e-3], weight_decays=[0.1, 0.0])]
    assert names == ["nano-muon-s0-lr0.003-240", "nano-muon-s0-lr0.003-240-wd0"]
