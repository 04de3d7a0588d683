"""Activation figures against hand-computed values; the probe must not change the model."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from forgetless.analysis.activations import (
    ActivationProbe,
    probe_activations,
    token_stats,
    token_windows,
)


def test_token_stats_hand_worked():
    # x = (3, -0.02, 0, 1): peak 3, τ·peak = 0.03 → two entries below; ‖x‖₁ = 4.02, ‖x‖₂ = √10.0004.
    x = torch.tensor([[3.0, -0.02, 0.0, 1.0]])
    values, valid = token_stats(x, threshold=0.01)
    l2 = math.sqrt(10.0004)
    assert values[0, 0].item() == pytest.approx(0.5)
    assert values[0, 1].item() == pytest.approx(4.02 / (2 * l2), rel=1e-6)
    assert values[0, 2].item() == pytest.approx((2 - 4.02 / l2) / (2 - 1), rel=1e-5)
    assert valid.tolist() == [True]


def test_token_stats_extremes_and_zero_vector():
    x = torch.tensor([[0.0, 0.0, 5.0, 0.0], [1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    values, valid = token_stats(x)
    assert values[0].tolist() == pytest.approx([0.75, 0.5, 1.0])  # one-hot: l1_l2 = 1/√4, Hoyer 1
    assert values[1].tolist() == pytest.approx([0.0, 1.0, 0.0])  # flat: Hoyer 0
    assert valid.tolist() == [True, True, False]


class Identity(nn.Module):
    """q_proj = identity, so its input and output statistics are those of the fed vectors."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Module()])
        self.layers[0].q_proj = nn.Linear(4, 4, bias=False)
        self.layers[0].q_proj.weight.data = torch.eye(4)

    def forward(self, x):
        return self.layers[0].q_proj(x)


def test_streaming_mean_and_std_match_brute_force():
    torch.manual_seed(0)
    model = Identity()
    chunks = [torch.randn(3, 5, 4) * torch.rand(3, 5, 4).lt(0.5) for _ in range(4)]
    with ActivationProbe(model, threshold=0.2) as probe:
        for c in chunks:
            model(c)
    row = probe.report().by_kind()["q"]
    # Brute force in numpy over every token at once.
    a = np.abs(torch.cat(chunks).reshape(-1, 4).numpy().astype(np.float64))
    a = a[a.sum(1) > 0]
    sparsity = (a < 0.2 * a.max(1, keepdims=True)).mean(1)
    hoyer = (2 - a.sum(1) / np.sqrt((a**2).sum(1))) / (2 - 1)
    for side in ("input", "output"):
        assert row[f"{side}_n"] == len(a)
        assert row[f"{side}_sparsity"] == pytest.approx(sparsity.mean(), rel=1e-6)
        assert row[f"{side}_sparsity_std"] == pytest.approx(sparsity.std(), rel=1e-5)
        assert row[f"{side}_hoyer"] == pytest.approx(hoyer.mean(), rel=1e-5)
        assert row[f"{side}_hoyer_std"] == pytest.approx(hoyer.std(), rel=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_probe_leaves_outputs_unchanged_and_removes_hooks(arch, llama, gpt2):
    model = llama if arch == "llama" else gpt2
    ids = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    report = probe_activations(model, ids, batch_size=2)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks for m in model.modules())
    assert report.n_tokens == 48
    kinds = report.by_kind()
    expected = {"q", "k", "v", "o", "up", "down", "head", "hidden"} | ({"gate"} if arch == "llama" else set())
    assert set(kinds) == expected
    assert kinds["q"]["input_n"] == 48 * 2  # every token, in each of the two layers


def test_gpt2_fused_attention_split_matches_manual_hook(gpt2):
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(2))
    seen = {}
    handle = gpt2.transformer.h[0].attn.c_attn.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    with torch.no_grad():
        gpt2(input_ids=ids)
    handle.remove()
    rows = {r["name"]: r for r in probe_activations(gpt2, ids).per_module()}
    v_out = seen["y"][..., 64:96].reshape(-1, 32).abs().numpy()
    expected = (v_out < 0.01 * v_out.max(1, keepdims=True)).mean(1).mean()
    assert rows["transformer.h.0.attn.c_attn.v"]["output_sparsity"] == pytest.approx(expected, rel=1e-6)
    x = seen["x"].reshape(-1, 32).abs().numpy()
    ratio = (x.sum(1) / (np.sqrt(32) * np.sqrt((x**2).sum(1)))).mean()
    for part in "qkv":
        assert rows[f"transformer.h.0.attn.c_attn.{part}"]["input_l1_l2"] == pytest.approx(ratio, rel=1e-5)


def test_token_windows_fixed_and_validated():
    tokens = np.arange(1000)
    w = token_windows(tokens, n_tokens=300, seq_len=100)
    assert w.shape == (3, 100)
    assert w[0, 0] == 0 and w[-1, -1] == 999
    with pytest.raises(ValueError, match="seq_len"):
        token_windows(tokens[:10], n_tokens=300, seq_len=100)


def test_bad_threshold_is_named():
    with pytest.raises(ValueError, match="threshold"):
        ActivationProbe(Identity(), threshold=1.5)
