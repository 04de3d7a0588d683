"""The finetune's default forgetting sample is sized to the error the verdicts need, and the console
says before the run what one evaluation reads (issue 23 §4)."""

from __future__ import annotations

import re

import pytest

from forgetless.train import FinetuneConfig, finetune
from forgetless.train.sample_size import expected_delta_se


def test_default_sample_keeps_the_paired_error_within_a_quarter_of_the_margin():
    """0.02 nats is the verdicts' margin (report.verdicts.FRONTIER_MARGIN); at the nano bases'
    128-token windows the default sample must keep Δ's expected paired error within a quarter of it
    up to 0.14 nats of forgetting (about the largest change the rule was measured at)."""
    from forgetless.report.verdicts import FRONTIER_MARGIN

    tokens = FinetuneConfig.model_fields["eval_tokens"].default
    assert expected_delta_se(tokens // 128, 128, delta=0.14) <= FRONTIER_MARGIN / 4
    # and the old default's quarter of the sample would not have kept it
    assert expected_delta_se(4096 // 128, 128, delta=0.14) > FRONTIER_MARGIN / 4


def test_long_windows_need_the_presets_sample_for_the_quarter_margin():
    """On 1024-token windows the tokens of a window change together (measured exponent 0.22, not
    the 0.5 of independent tokens): by hand, 0.38 · 0.14 · (1/8)^0.2 / √16 = 0.0088, within half
    the margin but not a quarter; 65536 tokens (what the gpt2 preset's finetunes set) give
    0.38 · 0.14 · (1/8)^0.2 / √64 = 0.0044, within a quarter."""
    from forgetless.report.verdicts import FRONTIER_MARGIN

    tokens = FinetuneConfig.model_fields["eval_tokens"].default
    assert expected_delta_se(tokens // 1024, 1024, delta=0.14) == pytest.approx(0.0088, abs=5e-5)
    assert FRONTIER_MARGIN / 4 < expected_delta_se(tokens // 1024, 1024, delta=0.14) <= FRONTIER_MARGIN / 2
    assert expected_delta_se(65536 // 1024, 1024, delta=0.14) == pytest.approx(0.0044, abs=5e-5)
    assert expected_delta_se(65536 // 1024, 1024, delta=0.14) <= FRONTIER_MARGIN / 4
    # not the independent-token rule, which promised 0.38 · 0.14 · (1/8)^0.5 / 4 = 0.0047 (8^0.3 = 1.87× less)
    assert expected_delta_se(tokens // 1024, 1024, delta=0.14) > 1.8 * 0.0047


def test_the_announced_evaluation_reads_what_the_evaluation_reads(base_run, tmp_path, capsys):
    """The line before the run counts the tokens one evaluation puts through the model; the cost line
    after the step-0 evaluation reports what the evaluation's own forwards counted. They agree."""
    cfg = FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", task="arith", steps=2, eval_every=2,
                         batch_size=4, seq_len=64, eval_n=8, train_n=16, eval_tokens=512, progress=False, threads=1)
    finetune(cfg)
    err = capsys.readouterr().err
    announced = re.search(r"each evaluation: ([\d,]+) tokens through the model", err)
    measured = re.search(r"evaluation cost: ([\d,]+) tokens in", err)
    assert announced and measured, err
    assert announced.group(1) == measured.group(1)
    # 512 tokens in windows of the base's 64: 8 windows, and its expected error at 0.1 nats
    assert f"expected ± {expected_delta_se(8, 64):.4f} at 0.1 nats (8 windows of 64, paired" in err


def test_cost_line_estimates_training_from_the_padded_batches(base_run, tmp_path, monkeypatch):
    """SFT records are padded to the longest in their batch, not to seq_len: the share printed
    before training estimates a step's tokens from the first steps' real batches (arith records of
    ~60 tokens at seq_len 512 trained on far fewer than batch x seq_len tokens)."""
    from forgetless.data import SFTCollator, load_task
    from forgetless.models import load_model
    from forgetless.train import progress
    from forgetless.train.evaluate import shift_sft_batch
    from forgetless.train.finetune import sft_order

    seen = {}
    real = progress.cost_line
    monkeypatch.setattr(progress, "cost_line", lambda *a: seen.setdefault("args", a) and real(*a))
    cfg = FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", task="arith", steps=4, eval_every=4,
                         batch_size=4, seq_len=512, eval_n=8, train_n=16, eval_tokens=512, progress=False,
                         console=True, threads=1)
    finetune(cfg)
    # by hand: the records of steps 0..3 in the run's order, collated as a batch each
    _, tok = load_model(base_run.final_checkpoint)
    records = load_task("arith", "train", n=16, seed=0)
    widths = [shift_sft_batch(SFTCollator(tok, 512)([records[j] for j in sft_order(16, 0, 4 * k, 4)]))[0].numel()
              for k in range(4)]
    assert seen["args"][5] == sum(widths) // 4 < 4 * 512 / 2
