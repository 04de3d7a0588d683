"""Evaluations a practitioner can afford and see (issue 23 §4): the forgetting loss's standard
error over the sample's windows, checked against per-window losses computed with the Hugging Face
model directly; the cost of one evaluation printed before training; plain progress lines when the
console is not a terminal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from forgetless.train.evaluate import IGNORE, loss_stats

VOCAB = 211


def _llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    return transformers.LlamaForCausalLM(cfg).eval()


def _windows(rows: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (rows, width), generator=g), torch.randint(0, VOCAB, (rows, width), generator=g)


def _per_row(model, batches) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: each row's own forward (full logits), its mean loss over scored positions."""
    means, counts = [], []
    with torch.no_grad():
        for x, y in batches:
            for i in range(len(x)):
                logits = model(input_ids=x[i:i + 1]).logits[0].float()
                keep = y[i] != IGNORE
                means.append(float(F.cross_entropy(logits[keep], y[i][keep])))
                counts.append(int(keep.sum()))
    return np.array(means), np.array(counts)


@pytest.mark.parametrize("max_tokens", [None, 40])
def test_se_of_equal_windows_is_sd_over_sqrt_n(max_tokens) -> None:
    """Forgetting windows all have seq_len tokens: se = sd(window means, ddof 1) / sqrt(windows),
    whatever the row groups the evaluation runs in (max_tokens 40: 2 rows of 16 per forward)."""
    model = _llama()
    batches = [_windows(5, 16, 1), _windows(4, 16, 2)]
    means, _ = _per_row(model, batches)
    stats = loss_stats(model, batches, torch.device("cpu"), max_tokens=max_tokens)
    assert stats.sequences == 9 and stats.tokens == 9 * 16
    assert stats.loss == pytest.approx(means.mean(), abs=1e-5)
    assert stats.se == pytest.approx(means.std(ddof=1) / math.sqrt(9), rel=1e-4)


def test_se_token_weighted_when_lengths_differ() -> None:
    """Rows with fewer scored tokens (a prompt, padding) weigh by their tokens: μ = Σ w_i m_i and
    se² = n/(n−1) Σ w_i² (m_i − μ)², w_i = n_i / N; a row with no scored token is not a sequence."""
    model = _llama()
    x, y = _windows(6, 20, 3)
    y[0, :9] = IGNORE
    y[2, -6:] = IGNORE
    y[4, 3:] = IGNORE
    y[5, :] = IGNORE  # nothing scored
    means, counts = _per_row(model, [(x[:5], y[:5])])
    w = counts / counts.sum()
    mu = float((w * means).sum())
    se = math.sqrt(5 / 4 * float((w ** 2 * (means - mu) ** 2).sum()))
    stats = loss_stats(model, [(x[:3], y[:3]), (x[3:], y[3:])], torch.device("cpu"))
    assert stats.sequences == 5 and stats.tokens == int(counts.sum())
    assert stats.loss == pytest.approx(mu, abs=1e-5)
    assert stats.se == pytest.approx(se, rel=1e-4)


FT = dict(task="arith", steps=2, eval_every=2, batch_size=4, seq_len=64, eval_n=8, train_n=16,
          eval_tokens=640, threads=1)


def test_finetune_records_and_prints_forgetting_se(base_run, tmp_path, capsys) -> None:
    """The run's step-0 forgetting_se is the brute-force se of the base model's per-window losses
    on the run's forgetting sample (10 windows of 64), and the console prints it beside the loss."""
    from forgetless.models import load_model
    from forgetless.train import FinetuneConfig, finetune
    from forgetless.train.finetune import describe_base, forgetting_reference

    cfg = FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", progress=False, **FT)
    result = finetune(cfg)
    err = capsys.readouterr().err
    model, tokenizer = load_model(describe_base(cfg.base)["checkpoint"])
    _, batches, _, about = forgetting_reference(cfg.resolved(describe_base(cfg.base)), tokenizer, len(tokenizer))
    means, counts = _per_row(model.eval(), batches)
    assert about["windows"] == len(means) == 10 and set(counts) == {64}
    base = result.points[0]
    assert base["forgetting"] == pytest.approx(means.mean(), abs=1e-5)
    assert base["forgetting_se"] == pytest.approx(means.std(ddof=1) / math.sqrt(10), rel=1e-4)
    assert f"forgetting {base['forgetting']:.4f} ± {base['forgetting_se']:.4f} (Δ" in err
    # Δ from the base: the paired error over the same windows, sd(per-window Δ) / sqrt(10)
    final, _ = load_model(result.final_checkpoint)
    after, _ = _per_row(final.eval(), batches)
    last = result.points[-1]
    assert last["forgetting_delta"] == pytest.approx((after - means).mean(), abs=1e-5)
    assert last["forgetting_delta_se"] == pytest.approx((after - means).std(ddof=1) / math.sqrt(10), rel=1e-3)
    assert last["forgetting_delta_se"] < last["forgetting_se"] / 2  # shared difficulty cancels
    assert f"(Δ {last['forgetting_delta']:+.4f} ± {last['forgetting_delta_se']:.4f} from base)" in err


def test_cost_line_by_hand() -> None:
    """1,000 tokens in 2 s: 2 ms per forward token. 50 steps of 100 tokens at 3 forward tokens
    each: 30 s of training; 5 evaluations: 10 s, so 10 / 40 = 25% of the wall time (with
    checkpointing 4 forward tokens: 40 s, 10 / 50 = 20%)."""
    from forgetless.train.progress import cost_line

    line = cost_line(1000, 2.0, 5, 10, 50, 100, checkpointing=False)
    assert line.startswith("evaluation cost: 1,000 tokens in 2.0 s; 5 more at eval_every 10 ≈ 10 s, about 25% ")
    assert "about 20% " in cost_line(1000, 2.0, 5, 10, 50, 100, checkpointing=True)


def test_plain_progress_lines_without_a_terminal(base_run, tmp_path, capsys) -> None:
    """Under capsys stderr is not a terminal: with progress on, no bars but a line per training
    log interval (the losses metrics.jsonl records), a start and an end line per evaluation, the
    cost line before training (2 more evaluations: steps 2 and 4) and the measured share at the end."""
    import json

    from forgetless.train import FinetuneConfig, finetune

    cfg = FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", progress=True, log_every=1,
                         **{**FT, "steps": 4})
    result = finetune(cfg)
    err = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    lines = [line for line in err if " loss " in line and line.startswith("step ")]
    # tok/s within 1: the printed rate and the one metrics.jsonl records can round apart (19,749 vs 19,748 seen in CI)
    assert [line.rsplit(" ", 2)[0] for line in lines] == [
        f"step {r['step']}/4 loss {r['loss']:.4f} lr {r['lr']:.2e}" for r in train]
    assert all(abs(float(line.rsplit(" ", 2)[1].replace(",", "")) - r["tokens_per_s"]) <= 1
               for line, r in zip(lines, train, strict=True))
    for label in ("evaluation (base)", "evaluation at step 2", "evaluation at step 4"):
        assert f"{label}: started" in err
        assert any(line.startswith(f"{label}: done in ") for line in err)
    cost = [line for line in err if line.startswith("evaluation cost: ")]
    assert len(cost) == 1 and "; 2 more at eval_every 2 " in cost[0] and len(result.points) == 3
    # the cost line comes after the base's evaluation and before the first training line
    assert err.index(cost[0]) < err.index(lines[0])
    status = json.loads((tmp_path / "ft" / "status.json").read_text())
    assert 0 < status["eval_time"] < status["wall_time"]
    share = [line for line in err if line.startswith("evaluations: 3 took ")]
    assert len(share) == 1


def test_training_lines_reach_a_pipe(base_run, tmp_path) -> None:
    """`forgetless finetune` with stdout and stderr piped (as under nohup or `> log 2>&1`):
    training-loss lines appear."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("forgetless")
    args = [str(exe), "finetune", str(base_run.out_dir), "--out", str(tmp_path / "ft"), "--log-every", "1"]
    for k, v in {**FT, "steps": 2}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert [line.split(" loss ")[0] for line in done.stdout.splitlines() if " loss " in line] == ["step 1/2", "step 2/2"]
    assert "evaluation (base): started" in done.stdout
