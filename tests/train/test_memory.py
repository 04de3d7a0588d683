"""Memory safety: chunked evaluation equals the plain full-logits loss (Llama, LoRA, GPT-2); a step
cut into pieces equals the whole batch; the plan turns checkpointing on for big models and shrinks
forwards when memory is short; an out-of-memory becomes one line and a failed status."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from typer.testing import CliRunner

from forgetless.train import FinetuneConfig, finetune, runtime
from forgetless.train.evaluate import IGNORE, chunked_loss_sum, chunked_train_loss_sum, mean_loss
from forgetless.train.loop import cosine_schedule, pieces, train_step

VOCAB = 301


def _llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _lora(model):
    import peft

    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"],
                                                         init_lora_weights=False))
    return wrapped.eval()


def _batches():
    g = torch.Generator().manual_seed(1)
    out = []
    for rows in (5, 3):
        x = torch.randint(0, VOCAB, (rows, 24), generator=g)
        y = torch.randint(0, VOCAB, (rows, 24), generator=g)
        y[0, :7] = IGNORE  # a prompt that is not scored
        y[-1, -5:] = IGNORE  # padding
        out.append((x, y))
    return out


def _plain(model, batches) -> float:
    """The reference: full logits of the whole batch, one cross-entropy over every position."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            logits = model(input_ids=x).logits.float()
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"))
            count += int((y != IGNORE).sum())
    return total / count


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
@pytest.mark.parametrize("make", [_llama, _gpt2, lambda: _lora(_llama())], ids=["llama", "gpt2", "lora"])
def test_chunked_eval_equals_full_logits(make) -> None:
    model, batches = make(), _batches()
    want = _plain(model, batches)
    # 7 tokens per forward (1 row of 24 is the floor) and 5 positions per head chunk
    got = mean_loss(model, batches, torch.device("cpu"), max_tokens=7)
    assert got == pytest.approx(want, abs=1e-5)
    x, y = batches[0]
    with torch.no_grad():
        loss, n = chunked_loss_sum(model, x, y, chunk_bytes=5 * 4 * VOCAB)
    assert int(n) == int((y != IGNORE).sum())
    assert float(loss) / int(n) == pytest.approx(_plain(model, [(x, y)]), abs=1e-5)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
@pytest.mark.parametrize("make", [_llama, _gpt2, lambda: _lora(_llama())], ids=["llama", "gpt2", "lora"])
def test_chunked_training_loss_has_the_plain_gradient(make) -> None:
    """The checkpointed chunked loss gives the full-logits loss and the same gradient."""
    model = make().train()
    for m in model.modules():  # dropout off: both passes must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x, y = _batches()[0]
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(input_ids=x).logits.float()
    want = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
    want_grads = torch.autograd.grad(want, params)
    got, n = chunked_train_loss_sum(model, x, y, chunk_bytes=5 * 4 * VOCAB)
    got_grads = torch.autograd.grad(got, params)
    assert int(n) == int((y != IGNORE).sum()) and float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(got_grads, want_grads, strict=True))


def test_pieces_give_the_whole_batch_gradient() -> None:
    """One optimizer step over 1-row pieces moves the weights as one step over the whole batch."""
    from forgetless.train.evaluate import lm_loss_sum

    batches = _batches()
    after = []
    for rows in (None, 1):
        model = _llama().train()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sched = cosine_schedule(opt, 10, 0.0, 1.0)
        plan = runtime.MemoryPlan(train_tokens=None, micro_batch=rows, eval_tokens=1, checkpointing=False,
                                  parameters=0, budget=0)
        micro = pieces(batches, plan)
        assert len(micro) == (2 if rows is None else 8)
        params = list(model.parameters())
        train_step(model, lm_loss_sum, micro, opt, sched, params, None, contextlib.nullcontext, torch.device("cpu"))
        after.append([p.detach().clone() for p in params])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*after, strict=True))


def test_plan_checkpointing_and_small_memory(monkeypatch, tmp_path) -> None:
    cfg = FinetuneConfig(out_dir=tmp_path, base="b", task="arith", seq_len=1024)
    with torch.device("meta"):  # a SmolLM-135M-shaped model, no memory allocated
        big = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True))
    monkeypatch.setattr(runtime, "free_memory", lambda device: 16 * 2**30)
    plan = runtime.plan_memory(big, cfg, torch.device("cpu"))
    assert plan.parameters > runtime.CHECKPOINTING_FROM and plan.checkpointing
    assert plan.budget == runtime.CPU_ACTIVATION_CAP and plan.train_rows(1024) >= 1
    # the checkpointed layer inputs alone (30 layers x 576 fp32 per token) stay inside the budget
    assert plan.train_rows(1024) * 1024 * 30 * 576 * 4 <= plan.budget
    assert not runtime.plan_memory(big, cfg.model_copy(update={"gradient_checkpointing": False}),
                                   torch.device("cpu")).checkpointing
    small = _llama()
    assert not runtime.plan_memory(small, cfg, torch.device("cpu")).checkpointing
    monkeypatch.setattr(runtime, "free_memory", lambda device: 40 * 2**20)  # 40 MB free
    tight = runtime.plan_memory(big, cfg, torch.device("cpu"))
    assert tight.train_rows(1024) == 1 and tight.eval_tokens < 1024 * 8
    assert runtime.plan_memory(big, cfg.model_copy(update={"micro_batch": 3}), torch.device("cpu")).train_rows(1024) == 3


def test_gradient_checkpointing_same_numbers(base_run, tmp_path) -> None:
    common = dict(base=str(base_run.out_dir), task="arith", steps=2, eval_every=2, batch_size=4, seq_len=64,
                  eval_n=8, train_n=16, eval_tokens=256, progress=False, console=False, threads=1, dropout=0.0)
    plain = finetune(FinetuneConfig(out_dir=tmp_path / "a", **common))
    ckpt = finetune(FinetuneConfig(out_dir=tmp_path / "b", gradient_checkpointing=True, micro_batch=1, **common))
    header = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    assert header["kind"] == "header" and header["memory"]["gradient_checkpointing"] is True
    assert header["memory"]["micro_batch"] == 1
    for a, b in zip(plain.points, ckpt.points, strict=True):
        assert a["learning"] == pytest.approx(b["learning"], abs=1e-5)
        assert a["forgetting"] == pytest.approx(b["forgetting"], abs=1e-5)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 13 GB"),
                                   MemoryError()])
def test_out_of_memory_is_one_line_and_failed_status(base_run, tmp_path, monkeypatch, error) -> None:
    from forgetless.cli import app
    from forgetless.train import loop

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(loop, "train_step", boom)
    out = tmp_path / "oom"
    result = CliRunner().invoke(app, ["finetune", str(base_run.out_dir), "--task", "arith", "--steps", "2",
                                      "--batch-size", "4", "--seq-len", "64", "--eval-n", "8", "--train-n", "16",
                                      "--eval-tokens", "256", "--no-progress", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if "out of memory" in line]
    assert len(error_lines) == 1 and "lower micro_batch (--micro-batch" in error_lines[0]
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("out of memory in training at step 0")
