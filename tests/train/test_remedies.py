"""Remedies against independent references: replay's batch mix counted row by row, L2-SP's gradient
against autograd of the written-out penalty and its closed form coef·(θ − θ₀), WiSE at 0 and 1 equal
to the base and the finetune bit for bit and at 0.5 to the hand-computed average; then a finetune
with all three, whose WiSE points at 0 and 1 repeat the base's and the finetune's eval points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from forgetless.train import remedies
from forgetless.train.loop import cosine_schedule, train_step

TRAIN = np.arange(1000, 2000, dtype=np.uint16)  # a "training split": every window is consecutive ids
VAL = np.arange(2000, 3000, dtype=np.uint16)    # the held-out split: ids no replay row may contain


@pytest.mark.parametrize(("fraction", "batch"), [(0.01, 16), (0.05, 16), (0.25, 8), (0.3, 7)])
def test_replay_counts_every_batch(fraction, batch):
    # Reference: integer arithmetic on the fraction written as p/100 (no Fraction, no float floor).
    pct = round(fraction * 100)
    mixer = remedies.Replay(TRAIN, fraction, batch, seed=3)
    width, total = 11, 0
    for j in range(250):
        x = torch.zeros(batch, width, dtype=torch.long)
        y = torch.full((batch, width), -100, dtype=torch.long)
        (mx, my), n = mixer((x, y), j)
        expected = (j + 1) * batch * pct // 100 - j * batch * pct // 100
        assert n == expected
        sft = (mx == 0).all(1)
        assert int((~sft).sum()) == expected  # exactly n rows replaced ...
        assert bool(sft[: batch - n].all())   # ... the last n, the SFT rows before them untouched
        for row_x, row_y in zip(mx[batch - n:], my[batch - n:], strict=True):
            assert bool(((row_x >= 1000) & (row_x < 2000)).all())  # from the training split
            assert not bool(((row_x >= 2000) & (row_x < 3000)).any())  # never the held-out split
            assert torch.equal(row_x[1:], row_x[:-1] + 1) and torch.equal(row_y, row_x + 1)  # a window, all targets
        total += n
    assert total == 250 * batch * pct // 100 == remedies.replay_total(fraction, batch, 250)


def test_replay_is_a_function_of_the_batch_index():
    mixer = remedies.Replay(TRAIN, 0.5, 4, seed=0)
    x, y = torch.zeros(4, 9, dtype=torch.long), torch.zeros(4, 9, dtype=torch.long)
    a, _ = mixer((x, y), 17)
    b, _ = mixer((x, y), 17)
    c, _ = mixer((x, y), 18)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0][2:], c[0][2:])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


def test_l2sp_gradient_matches_autograd_and_closed_form():
    model = _model()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # move away from θ₀ so the penalty has a gradient
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    coef, x = 0.7, torch.randn(6, 5)
    # autograd on task loss + (coef/2)·Σ‖θ − θ₀‖² written out
    loss = model(x).pow(2).mean() + coef / 2 * sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters())
    want = torch.autograd.grad(loss, list(model.parameters()))
    # the remedy: task-loss backward, then the penalty's gradient added
    model.zero_grad()
    model(x).pow(2).mean().backward()
    pull = remedies.L2SP(model, coef, anchor)
    pull.add_gradient()
    for g, p in zip(want, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7)
    # closed form with no task loss: grad = coef·(θ − θ₀), penalty = coef/2·Σ(θ − θ₀)²
    model.zero_grad(set_to_none=True)
    pull.add_gradient()
    hand = 0.0
    for n, p in model.named_parameters():
        diff = p.detach().numpy().astype(np.float64) - anchor[n].numpy().astype(np.float64)
        np.testing.assert_allclose(p.grad.numpy(), coef * diff, rtol=1e-6, atol=1e-7)
        hand += float((diff ** 2).sum())
    assert math.isclose(pull.penalty(), coef / 2 * hand, rel_tol=1e-6)


def test_l2sp_in_train_step_is_the_gradient_of_loss_plus_penalty_with_accumulation():
    # train_step over two micro-batches with the penalty hook, SGD lr 1 and no clipping: the step
    # moved θ by exactly −∇(token-mean loss over both micro-batches + penalty), from autograd.
    model = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7))
    torch.manual_seed(1)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    coef = 0.3
    micro = [(torch.randint(0, 7, (2, 5)), torch.randint(0, 7, (2, 5))), (torch.randint(0, 7, (3, 5)), torch.randint(0, 7, (3, 5)))]
    micro[1][1][0, :2] = -100  # ignored targets count in neither sum nor mean

    def loss_fn(m, x, y):
        logits = m(x)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"), None

    params = list(model.parameters())
    n = sum(int((y != -100).sum()) for _, y in micro)
    total = sum(loss_fn(model, x, y)[0] for x, y in micro) / n
    total = total + coef / 2 * sum(((p - anchor[k]) ** 2).sum() for k, p in model.named_parameters())
    grads = torch.autograd.grad(total, params)
    want = [p.detach() - g for p, g in zip(params, grads, strict=True)]
    opt = torch.optim.SGD(params, lr=1.0)
    sched = cosine_schedule(opt, 10, 0.0, 1.0)  # min ratio 1: lr stays 1
    pull = remedies.L2SP(model, coef, anchor)
    train_step(model, loss_fn, micro, opt, sched, params, None, lambda: torch.autocast("cpu", enabled=False),
               torch.device("cpu"), after_backward=pull.add_gradient)
    for p, w in zip(params, want, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-6)


def test_wise_ends_are_bit_for_bit_and_the_middle_is_the_average():
    torch.manual_seed(2)
    base = {"w": torch.randn(5, 3), "b": torch.randn(3), "count": torch.tensor([4])}
    ft = {"w": torch.randn(5, 3) * 1e3, "b": torch.randn(3) * 1e-5, "count": torch.tensor([9])}
    zero, one = remedies.interpolate(base, ft, 0.0), remedies.interpolate(base, ft, 1.0)
    for k in base:
        assert torch.equal(zero[k], base[k]) and torch.equal(one[k], ft[k])
    half = remedies.interpolate(base, ft, 0.5)
    for k in ("w", "b"):  # (b + f)/2 by hand in float64 (halving is exact, so float32 agrees)
        hand = (base[k].double() + ft[k].double()) / 2
        assert torch.equal(half[k], hand.float())
    quarter = remedies.interpolate(base, ft, 0.25)
    np.testing.assert_allclose(quarter["w"].numpy(), 0.75 * base["w"].numpy().astype(np.float64)
                               + 0.25 * ft["w"].numpy().astype(np.float64), rtol=1e-6)
    assert torch.equal(half["count"], ft["count"])  # integers are not blended
    with pytest.raises(ValueError, match="alpha"):
        remedies.interpolate(base, ft, 1.5)
    with pytest.raises(ValueError, match="keys"):
        remedies.interpolate(base, {"w": ft["w"]}, 0.5)


def test_wise_points_restore_the_finetune():
    model = _model()
    base = remedies.anchor_of(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    finetuned = remedies.anchor_of(model)
    seen = []
    got = remedies.wise_points(model, base, [0.0, 0.5, 1.0],
                               lambda: seen.append(remedies.anchor_of(model)) or {"n": len(seen)}, done=[0.5])
    assert [a for a, _ in got] == [0.0, 1.0]  # 0.5 was measured before (a resumed run)
    for k in base:
        assert torch.equal(seen[0][k], base[k]) and torch.equal(seen[1][k], finetuned[k])
    for k, p in model.named_parameters():
        assert torch.equal(p.detach(), finetuned[k])


def test_lora_base_state_zeroes_b_only():
    state = {"x.lora_A.default.weight": torch.ones(2, 3), "x.lora_B.default.weight": torch.ones(3, 2)}
    out = remedies.lora_base_state(state)
    assert torch.equal(out["x.lora_A.default.weight"], state["x.lora_A.default.weight"])
    assert not out["x.lora_B.default.weight"].any()


# ------------------------------------------------------------------ end to end, in `finetune`
FT = dict(task="arith", steps=8, eval_every=4, batch_size=8, seq_len=96, eval_n=16, train_n=64,
          eval_tokens=1024, progress=False, threads=1)
STRIP = ("wall_time",)


def _config(**kw):
    from forgetless.train import FinetuneConfig

    return FinetuneConfig(**kw)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetune_with_every_remedy(base_run, tmp_path, method):
    from forgetless.train import finetune

    result = finetune(_config(base=str(base_run.out_dir), out_dir=tmp_path / method, method=method, replay=0.25,
                              l2sp=0.5, wise=[0.0, 0.5, 1.0], **FT))
    trajectory = [p for p in result.points if "wise" not in p]
    wise = {p["wise"]: p for p in result.points if "wise" in p}
    assert [p["step"] for p in trajectory] == [0, 4, 8] and sorted(p["step"] for p in wise.values()) == [-3, -2, -1]
    keys = ("forgetting", "learning", "forgetting_by_source")
    for k in keys:  # the same weights, measured on the same batches: equal, not close
        assert wise[0.0].get(k) == trajectory[0].get(k) and wise[1.0].get(k) == trajectory[-1].get(k)
    assert wise[0.5]["forgetting"] not in (trajectory[0]["forgetting"], trajectory[-1]["forgetting"])
    assert all(p["wise_evaluations"] == 3 and p["finetune_step"] == 8 for p in wise.values())
    # replay: ⌊8 steps · 8 rows · 0.25⌋ = 16 sequences, 2 per batch, each as wide as its batch
    assert [p["replay_sequences"] for p in trajectory] == [0, 8, 16]
    assert trajectory[-1]["replay_tokens"] > 16 * 8
    assert trajectory[0]["l2sp_sq_distance"] == 0 and trajectory[-1]["l2sp_sq_distance"] > 0


def test_l2sp_and_replay_resume_bit_identical(base_run, tmp_path):
    # A full finetune resumed from its own checkpoint pulls towards the *base* weights (reloaded),
    # and replays the same rows: the resumed run repeats the uninterrupted one.
    from forgetless.train import finetune

    cfg = dict(base=str(base_run.out_dir), replay=0.25, l2sp=2.0, wise=[0.5], save_every=4, **FT)
    whole = finetune(_config(**cfg, out_dir=tmp_path / "a"))

    class Killed(Exception):
        pass

    def kill(point):
        if point["step"] == 8:
            raise Killed

    with pytest.raises(Killed):  # measured step 8, no checkpoint of it yet: resumes from step 4
        finetune(_config(**cfg, out_dir=tmp_path / "b"), on_eval=kill)
    resumed = finetune(_config(**cfg, out_dir=tmp_path / "b", resume=True))
    strip = lambda pts: [{k: v for k, v in p.items() if k not in STRIP} for p in pts]  # noqa: E731
    assert strip(resumed.points) == strip(whole.points)
    again = finetune(_config(**cfg, out_dir=tmp_path / "b", resume=True))  # WiSE already measured: not repeated
    assert strip(again.points) == strip(whole.points)


def test_replay_refuses_a_reference_without_its_own_training_split(base_run, tmp_path):
    from forgetless.train import finetune

    with pytest.raises(ValueError, match="forget_balance"):
        finetune(_config(base=str(base_run.out_dir), out_dir=tmp_path / "x", replay=0.1, forget_balance=True, **FT))


def test_replay_rows_are_training_windows_never_the_forgetting_sample(base_run, corpus_dir, tiny):
    # On the real corpus: every replayed row is a window of the training split's tokens, and shares
    # no window with the held-out sample forgetting is measured on (the sample finetune draws).
    from forgetless.data import prepare_pretraining_data
    from forgetless.train.evaluate import forgetting_batches

    data = prepare_pretraining_data(str(corpus_dir), vocab_size=tiny["vocab_size"], progress=False)
    train = data.train.tolist()
    sample = {tuple(row) for x, _ in forgetting_batches(data.val, 64, 1024, 8) for row in x.tolist()}
    mixer = remedies.Replay(data.train, 0.25, 8, seed=0)
    starts = {tuple(train[i:i + 16]): i for i in range(len(train) - 15)}
    seen = 0
    for j in range(20):
        x = torch.zeros(8, 64, dtype=torch.long)
        (mx, my), n = mixer((x, x.clone()), j)
        for row, target in zip(mx[8 - n:].tolist(), my[8 - n:].tolist(), strict=True):
            i = starts[tuple(row[:16])]  # found in the training split ...
            assert train[i:i + 64] == row and train[i + 1:i + 65] == target  # ... as a whole window
            assert tuple(row) not in sample
            seen += 1
    assert seen == 20 * 2
