"""Loop parts against hand computations: schedule, response-only loss mask, token weighting, state files."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from forgetless.data import SFTCollator, SFTRecord
from forgetless.models import build_model
from forgetless.train.checkpoint import load_trainer_state, save_trainer_state
from forgetless.train.evaluate import mean_loss, prompt_ids, shift_sft_batch
from forgetless.train.loop import cosine_schedule


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "a": 2, "b": 3, "c": 4, "d": 5, "e": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def test_cosine_schedule_matches_formula() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = cosine_schedule(opt, steps=20, warmup=0.1, min_ratio=0.1)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # Hand formula: warm-up over 2 steps to 2.0, then 0.2 + 1.8 * (1 + cos(pi * (k - 2) / 18)) / 2.
    expected = [1.0, 2.0] + [0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * (k - 2) / 18)) for k in range(2, 20)]
    assert seen == pytest.approx(expected, rel=1e-12)


def test_response_only_mask_and_token_weighting() -> None:
    tok = _tokenizer()
    collated = SFTCollator(tok, seq_len=16)([SFTRecord("a b", "c d"), SFTRecord("a", "e")])
    x, y = shift_sft_batch(collated)
    # Row 0: a b c d <eos>; row 1: a e <eos> <pad> <pad>. Targets are the next token on response
    # positions only (prompt and padding -100), written out by hand.
    assert x.tolist() == [[2, 3, 4, 5], [2, 6, 1, 0]]
    assert y.tolist() == [[-100, 4, 5, 1], [6, 1, -100, -100]]
    assert prompt_ids(collated) == [[2, 3], [2]]

    torch.manual_seed(0)
    model = build_model("nano", vocab_size=7, num_hidden_layers=1).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([[2, 3, 4, 5]])).logits[0], -1)
        row0 = [-logp[1, 4], -logp[2, 5], -logp[3, 1]]
        logp1 = torch.log_softmax(model(torch.tensor([[2, 6, 1]])).logits[0], -1)
        row1 = [-logp1[0, 6], -logp1[1, 1]]
    hand = float(sum(row0) + sum(row1)) / 5
    got = mean_loss(model, [(x[:1], y[:1]), (x[1:], y[1:])], torch.device("cpu"))
    assert got == pytest.approx(hand, abs=1e-6)
    # Token-weighted (3 + 2 tokens), not the mean of the two batch means.
    assert abs(got - (float(sum(row0)) / 3 + float(sum(row1)) / 2) / 2) > 1e-4


def test_trainer_state_round_trip_without_pickle(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"step": 7, "optimizer": opt.state_dict(), "first_loss": None, "rng": torch.get_rng_state()}
    save_trainer_state(tmp_path, state)
    back = load_trainer_state(tmp_path)
    assert back["step"] == 7 and back["first_loss"] is None
    assert torch.equal(back["rng"], state["rng"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert isinstance(back["optimizer"]["param_groups"][0]["betas"], tuple)
    for idx, entry in state["optimizer"]["state"].items():
        for key, value in entry.items():
            assert torch.equal(back["optimizer"]["state"][idx][key], value)
    raw = (tmp_path / "trainer_state.safetensors").read_bytes()
    assert raw[8:9] == b"{"  # safetensors: 8-byte length, then a JSON header (no pickle)


def test_batched_greedy_generation_equals_one_by_one() -> None:
    """Left-padded batches (with the attention mask) must not change any prompt's greedy answer."""
    from forgetless.train.evaluate import greedy_answers

    tok = _tokenizer()
    torch.manual_seed(1)
    model = build_model("nano", vocab_size=7, num_hidden_layers=1, eos_token_id=1, pad_token_id=0)
    prompts = [[2, 3, 4], [5], [6, 2]]
    batched = greedy_answers(model, tok, prompts, max_new_tokens=5, device=torch.device("cpu"), batch_size=3)
    alone = [greedy_answers(model, tok, [p], max_new_tokens=5, device=torch.device("cpu"))[0] for p in prompts]
    assert batched == alone and any(batched)


def test_missing_tracker_package_is_a_clear_error(monkeypatch) -> None:
    import importlib.util

    from forgetless.train.trackers import check_trackers

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="tracker 'wandb' needs the wandb package: pip install wandb"):
        check_trackers(["wandb"])


def test_tracker_values_flatten_nested_eval_entries() -> None:
    from forgetless.train.loop import _numbers

    point = {"kind": "eval", "step": 3, "forgetting": 1.5, "accuracy": None, "ok": True,
             "forgetting_by_source": {"code": 2.0, "prose": 1.25}}
    # forgetting under ForgettingCallback's tags (issue 23 §6: one chart for both kinds of run)
    assert _numbers(point, "eval") == {"eval/step": 3, "eval/forgetting_loss": 1.5,
                                       "eval/forgetting_loss_code": 2.0,
                                       "eval/forgetting_loss_prose": 1.25}
