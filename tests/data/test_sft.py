"""SFTCollator: masking, truncation, padding and packing, checked token by token."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from forgetless.data import IGNORE_INDEX, SFTCollator, SFTRecord

RECORDS = [SFTRecord("Question: the model has 3 tokens.\nAnswer:", " 3 + 4 = 7. The answer is: 7", "7"),
           SFTRecord("Reverse the word.\n", " drow", "drow"),
           SFTRecord("Count.\n", " 12", "12")]


def test_labels_mask_prompt_and_padding_and_end_with_eos(small_tokenizer):
    tok = small_tokenizer
    batch = SFTCollator(tok, seq_len=128)(RECORDS)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.dtype == labels.dtype == mask.dtype == torch.long
    for i, rec in enumerate(RECORDS):
        n = int(mask[i].sum())
        row, lab = ids[i, :n].tolist(), labels[i, :n].tolist()
        # The prompt occupies the masked prefix; decoding it gives the prompt back.
        n_prompt = next(j for j, v in enumerate(lab) if v != IGNORE_INDEX)
        assert tok.decode(row[:n_prompt]) == rec.prompt
        assert lab[n_prompt:] == row[n_prompt:]
        assert row[-1] == tok.eos_token_id
        assert tok.decode(row[n_prompt:-1]) == rec.response
        assert (labels[i, n:] == IGNORE_INDEX).all() and (ids[i, n:] == tok.pad_token_id).all()
    assert ids.shape[1] == int(mask.sum(1).max())


def test_loss_is_mean_over_response_tokens(small_tokenizer):
    batch = SFTCollator(small_tokenizer, seq_len=64)(RECORDS)
    ids, labels = batch["input_ids"], batch["labels"]
    logits = torch.randn(*ids.shape, len(small_tokenizer), generator=torch.Generator().manual_seed(0))
    # Hugging Face convention: the model predicts labels[t + 1] from position t.
    got = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    total, count = 0.0, 0
    for b in range(ids.shape[0]):  # brute force over the response positions only
        for t in range(1, ids.shape[1]):
            if labels[b, t] != IGNORE_INDEX:
                total += -torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]].item()
                count += 1
    assert count == sum(len(small_tokenizer(r.response)["input_ids"]) + 1 for r in RECORDS)
    assert got.item() == pytest.approx(total / count, rel=1e-5)


def test_truncation_and_fixed_width(small_tokenizer):
    tok = small_tokenizer
    n_prompt = len(tok(RECORDS[0].prompt)["input_ids"])
    batch = SFTCollator(tok, seq_len=n_prompt + 3, pad_to_seq_len=True)(RECORDS)
    assert batch["input_ids"].shape == (3, n_prompt + 3)
    assert (batch["labels"][0] != IGNORE_INDEX).sum() == 3  # three response tokens survive
    assert batch["input_ids"][0, -1] != tok.eos_token_id  # the cut removed the EOS


def test_seq_len_shorter_than_every_prompt_is_an_error(small_tokenizer):
    with pytest.raises(ValueError, match="seq_len=3"):
        SFTCollator(small_tokenizer, seq_len=3)(RECORDS)


def test_packing_keeps_every_example_whole(small_tokenizer):
    plain = SFTCollator(small_tokenizer, seq_len=64)(RECORDS)
    packed = SFTCollator(small_tokenizer, seq_len=64, packing=True)(RECORDS)
    assert packed["input_ids"].shape[0] < len(RECORDS)
    real = plain["attention_mask"].bool()
    # Same tokens and labels in the same order, just without the padding between them.
    assert torch.equal(packed["input_ids"][packed["attention_mask"].bool()], plain["input_ids"][real])
    assert torch.equal(packed["labels"][packed["attention_mask"].bool()], plain["labels"][real])
