"""Memorisation measures against hand-made continuations, and KV-cache generation against a full
recomputation."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from forgetless.analysis.memorization import (
    block_view,
    evaluate_blocks,
    exact_match,
    greedy_generate,
    teacher_forced_correct,
)
from forgetless.analysis.memorization_run import matched_loss_points, table3


class Successor(nn.Module):
    """A 'language model' whose greedy next token is always (last token + 1) mod V."""

    def __init__(self, vocab: int = 10):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, input_ids, past_key_values=None, use_cache=False):
        self.calls.append(input_ids.shape[1])
        logits = nn.functional.one_hot((input_ids + 1) % self.vocab, self.vocab).float()
        return SimpleNamespace(logits=logits, past_key_values="cache" if use_cache else None)


def test_exact_match_and_token_accuracy_hand_made():
    model = Successor()
    # Block 0 continues as the successor rule says; block 1 breaks it at its last token;
    # block 2 breaks it right after the prompt.
    blocks = torch.tensor([[1, 2, 3, 4, 5, 6], [4, 5, 6, 7, 8, 0], [7, 8, 9, 9, 1, 2]])
    generated = greedy_generate(model, blocks[:, :3], 3)
    assert generated.tolist() == [[4, 5, 6], [7, 8, 9], [0, 1, 2]]
    assert exact_match(generated, blocks[:, 3:]).tolist() == [True, False, False]
    res = evaluate_blocks(model, blocks, [(3, 3), (2, 1)])
    assert res["exact_3_3"] == pytest.approx(1 / 3)
    # token accuracy on positions 3..5: block 0: 3/3; block 1: 7, 8 right, 0 wrong (2/3);
    # block 2: after 9 comes 0, not 9 nor 1 (two wrong), 2 after 1 right (1/3).
    assert res["token_3_3"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)
    assert res["exact_2_1"] == pytest.approx(1.0)  # 3, 6 and 9 all follow their prompts
    # KV-cached generation feeds one new token per step after the prompt.
    model.calls.clear()
    greedy_generate(model, blocks[:, :3], 3, use_cache=True)
    assert model.calls == [3, 1, 1]


def test_kv_cache_generation_matches_recomputation_and_teacher_forcing(llama):
    blocks = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(0))
    prompt, n = 5, 7
    cached = greedy_generate(llama, blocks[:, :prompt], n, use_cache=True)
    full = greedy_generate(llama, blocks[:, :prompt], n, use_cache=False)
    assert torch.equal(cached, full)
    # Exact match of the greedy continuation = teacher-forced argmax right at every position.
    made = torch.cat([blocks[:, :prompt], cached], 1)
    made[3:, prompt + 2] = (made[3:, prompt + 2] + 1) % 64  # rows 3.. no longer the continuation
    correct = teacher_forced_correct(llama, made)[:, prompt - 1 :]
    assert exact_match(cached, made[:, prompt:]).tolist() == correct.all(1).tolist()
    assert correct.all(1).tolist() == [True] * 3 + [False] * 3


def test_block_view_per_token_and_per_block_masks():
    tokens = np.arange(10)
    per_token = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 1], dtype=bool)
    blocks, flags = block_view(tokens, per_token, 3)
    assert blocks.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert flags.tolist() == [False, True, False]
    _, flags2 = block_view(tokens, np.array([True, False, True]), 3)
    assert flags2.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="mask"):
        block_view(tokens, np.array([True]), 3)


def test_bad_pair_is_named():
    with pytest.raises(ValueError, match="prompt"):
        evaluate_blocks(Successor(), torch.zeros(2, 4, dtype=torch.long), [(3, 3)])


def _point(opt, step, loss, value):
    keys = {f"{s}_{m}_2_2": value for s in ("clean", "corrupted") for m in ("exact", "token")}
    return {"optimizer": opt, "lr": 1e-3, "step": step, "train_loss": loss, **keys}


def test_matched_loss_and_table_layout():
    selected = {
        "fast": [_point("fast", 0, 5.0, 0.0), _point("fast", 10, 2.0, 0.1), _point("fast", 20, 1.0, 0.5)],
        "slow": [_point("slow", 0, 5.0, 0.0), _point("slow", 10, 3.0, 0.1), _point("slow", 20, 2.5, 0.2)],
    }
    target, points = matched_loss_points(selected)
    assert target == 2.5  # lowest loss that both reached
    # fast crosses 2.5 between (0, 5.0, 0.0) and (10, 2.0, 0.1): w = (5 - 2.5) / (5 - 2) = 5/6
    assert points["fast"]["step"] == pytest.approx(50 / 6)
    assert points["fast"]["clean_exact_2_2"] == pytest.approx(0.1 * 5 / 6)
    assert points["fast"]["train_loss"] == pytest.approx(2.5)
    assert points["slow"]["step"] == 20 and points["slow"]["clean_exact_2_2"] == 0.2
    text = table3(selected, [(2, 2)])
    assert "| fast (lr 0.001) | 20 | 50.0% | 50.0% | 1.000 |" in text
    assert "| fast (lr 0.001) | 8 | 8.3% | 8.3% | 2.500 |" in text


def test_config_names_bad_fields():
    from pydantic import ValidationError

    from forgetless.analysis.memorization_run import MemorizationConfig

    with pytest.raises(ValidationError, match="block_len"):
        MemorizationConfig(block_len=16, pairs=[(8, 16)])
    with pytest.raises(ValidationError, match="p must be"):
        MemorizationConfig(p=1.0)


def test_training_loop_tracks_the_corpus(tmp_path):
    from forgetless.analysis.memorization_config import MemorizationConfig
    from forgetless.data import corrupt_blocks
    from forgetless.experiments.memorization import train_one

    rng = np.random.default_rng(0)
    raw = np.tile(rng.integers(0, 32, 16), 64)  # a 16-token phrase repeated: quickly learnable
    tokens, mask = corrupt_blocks(raw, 16, 0.5, seed=0)
    blocks, flags = block_view(tokens, mask, 16)
    corpus = {"blocks": blocks, "corrupted": flags, "vocab_size": 32,
              "eval_clean": blocks[~flags][:8], "eval_corrupted": blocks[flags][:8]}
    cfg = MemorizationConfig(preset="nano", block_len=16, pairs=[(4, 4)], steps=30, eval_every=15,
                             batch_size=8, n_eval=8)
    history = train_one(cfg, corpus, "adamw", 3e-3)
    assert [p["step"] for p in history] == [0, 15, 30]
    assert history[-1]["clean_loss"] < history[0]["clean_loss"] - 1.0
    assert history[-1]["clean_token_4_4"] > 0.5  # every clean block is the same phrase
    for p in history:
        # an exact continuation has every token right, so per split exact match <= token accuracy
        assert p["clean_exact_4_4"] <= p["clean_token_4_4"] + 1e-9
        assert p["corrupted_exact_4_4"] <= p["corrupted_token_4_4"] + 1e-9
        assert set(p) >= {"train_loss", "corrupted_loss", "corrupted_exact_4_4", "corrupted_token_4_4"}
    # What claim 7 reads (forgetless.report.tables.memorization_rows): the run's own curve, one
    # entry per eval point, with the training loss and both measures of both splits.
    from forgetless.report.tables import memorization_rows

    (row,) = memorization_rows([{"config": cfg.model_dump(), "selected": {"adamw": history}}])
    assert [c["step"] for c in row["curve"]] == [0, 15, 30]
    for c, p in zip(row["curve"], history, strict=True):
        assert c == {"step": p["step"], "train_loss": p["train_loss"],
                     **{f"{s}_{m}": p[f"{s}_{m}_4_4"] for s in ("clean", "corrupted") for m in ("exact", "token")}}
