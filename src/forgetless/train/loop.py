"""The one training loop of pretraining and finetuning (nanoGPT's shape, Hugging Face models).

Per optimizer step k (0-based) over the micro-batches b = 1..A of that step:
    loss_k = Σ_b Σ_t ℓ_bt / Σ_b n_b            (token-weighted over the whole step, so gradient
                                                accumulation equals one big batch exactly)
    g ← clip(∇ loss_k, grad_clip)              (global-norm clipping)
    lr_k = lr · s(k),  s(k) = (k+1)/W for k < W, else r + (1−r)·½(1 + cos(π (k−W)/(K−W)))
                                               (linear warm-up over W = warmup·K steps, cosine to
                                                r = min_lr_ratio; a LambdaLR on every param group)
    schedule "wsd" (warm-up / stable / decay): s(k) = 1 for W ≤ k < D, then linear from 1 down to
        r over the last K−D = round(decay·K) steps; "constant": s(k) = 1 after the warm-up (a WSD
        trunk). A trunk checkpointed at step D and continued under "wsd" with K steps (a decay
        branch) repeats the uninterrupted WSD run of K steps bit for bit on CPU: s(k) is the same
        up to D, and the scheduler only stores its position.
Everything a step draws from is a function of (seed, k) or saved in checkpoints, so a resumed run
repeats an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from forgetless.models import quiet
from forgetless.train import distributed, progress
from forgetless.train.checkpoint import (
    load_trainer_state,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from forgetless.train.config import TrainConfig
from forgetless.train.distributed import Dist
from forgetless.train.evaluate import (
    IGNORE,
    Batch,
    autocast_for,
    chunked_train_loss_sum,
    lm_loss_sum,
)
from forgetless.train.progress import eval_line
from forgetless.train.rundir import RunDir, RunResult
from forgetless.train.runtime import (
    MemoryPlan,
    OutOfMemory,
    Stopped,
    enable_checkpointing,
    is_oom,
    oom_message,
    plan_memory,
    setup_compile_cache,
    stop_on_sigterm,
)
from forgetless.train.stop import StopRun
from forgetless.train.trackers import open_trackers
from forgetless.train.trackers import tags as _numbers

SCHEDULES = ("cosine", "wsd", "constant")


def decay_start(steps: int, decay: float) -> int:
    """The first step of a WSD run's decay: its last round(decay·steps) steps decay (at least one)."""
    return steps - max(1, round(decay * steps))


def lr_factor(kind: str, steps: int, warm: int, min_ratio: float, decay: float = 0.2) -> Callable[[int], float]:
    """s(k) of the module docstring for schedule `kind` over `steps`, warm-up `warm` steps."""
    start = decay_start(steps, decay)

    def factor(k: int) -> float:
        if k < warm:
            return (k + 1) / warm
        if kind == "constant":
            return 1.0
        if kind == "wsd":
            if k < start:
                return 1.0
            return 1.0 - (1 - min_ratio) * min(1.0, (k + 1 - start) / (steps - start))
        progress = min(1.0, (k - warm) / max(1, steps - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: float,
                    min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to min_ratio·lr (see the module docstring)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor("cosine", steps, round(warmup * steps), min_ratio))


def schedule_for(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's scheduler: cfg.schedule (pretraining may choose; finetunes are cosine), with
    cfg.warmup_steps replacing warmup·steps when set (a WSD trunk and its branches share it)."""
    warm = getattr(cfg, "warmup_steps", None)
    warm = round(cfg.warmup * steps) if warm is None else warm
    kind = getattr(cfg, "schedule", "cosine")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(kind, steps, warm, cfg.min_lr_ratio, getattr(cfg, "decay", 0.2)))


def eval_due(step: int, steps: int, cfg: TrainConfig) -> bool:
    """Evaluate after this step: every eval_every steps and at the end; with `eval_early` (a
    finetune option) also at steps 1, 2, 4, 8, ... below eval_every, so the low-forgetting start
    of each trajectory is measured rather than interpolated (issue 21)."""
    if step % cfg.eval_every == 0 or step == steps:
        return True
    return bool(getattr(cfg, "eval_early", False)) and step < cfg.eval_every and step & (step - 1) == 0


def train_step(model: torch.nn.Module, loss_fn: Callable, micro: list[Batch], opt: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, params: list[torch.Tensor],
               grad_clip: float | None, autocast: Callable, device: torch.device,
               d: Dist = Dist(), after_backward: Callable[[], None] | None = None) -> tuple[torch.Tensor, int, int]:
    """One optimizer step over the global micro-batches `micro` (see the module docstring); under
    torchrun each rank trains on its rows (see `distributed`).

    Returns (Σ token losses over all ranks as a device tensor, number of target tokens, number of
    input tokens); the loss is not read here, so a GPU is not synchronised."""
    n_total = sum(int((y != IGNORE).sum()) for _, y in micro)
    loss_sum = torch.zeros((), device=device)
    n_tokens = 0
    for i, (x, y) in enumerate(micro):
        n_tokens += x.numel()
        x, y = distributed.local_rows(x, y, d)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with distributed.gradient_sync(model, d, sync=i == len(micro) - 1):
            with autocast():
                loss, _ = loss_fn(model, x, y)
            # ranks' gradients are averaged, so each contributes world x its share of the sum
            (loss * (d.world / max(n_total, 1))).backward()
        loss_sum += loss.detach()
    if after_backward is not None:  # a gradient term of the whole step (L2-SP), before clipping
        after_backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    scheduler.step()
    return distributed.all_sum(loss_sum, d), n_total, n_tokens


@dataclass
class Job:
    """One run of the loop; `pretrain` and `finetune` fill it in."""

    cfg: TrainConfig
    run: RunDir
    model: torch.nn.Module                       # what is trained (a PEFT model for LoRA)
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], list[Batch]]        # the micro-batches of optimizer step k
    evaluate: Callable[[], dict[str, Any]]       # forgetting / learning / accuracy of the weights now
    write_model: Callable[[Path], None]          # the Hugging Face files of a checkpoint
    device: torch.device
    resume_from: Path | None = None
    on_eval: Callable[[dict[str, Any]], None] | None = None  # may raise stop.StopRun: the run ends there
    dist: Dist = Dist()                          # this process's place in a torchrun job
    memory: MemoryPlan | None = None             # how forwards fit in memory (default: plan_memory)
    header: dict[str, Any] | None = None         # what the run measures on (metrics.jsonl "header")
    intro: list[str] | None = None               # first console lines (e.g. the reference text)
    step_tokens: int | None = None               # tokens a step trains on, for the cost line (None: batch x seq_len)
    after_backward: Callable[[], None] | None = None  # adds a penalty's gradient once per step (L2-SP)
    # called with each eval point once recorded; a text returned stops the run there, saying why
    # (the forgetting budget, forgetless.train.budget)
    after_eval: Callable[[dict[str, Any]], str | None] | None = None


class TrainLossDiverged(Exception):
    """The *training* loss passed `diverge_factor` x its first logged value (or is not finite);
    a sweep watches the eval loss with its own factor (sweep.cell.EvalLossDiverged)."""


def pieces(batches: list[Batch], plan: MemoryPlan, world: int = 1) -> list[Batch]:
    """The micro-batches of a step cut into forward/backward pieces that fit (plan.train_rows
    rows per rank). The step's loss is token-weighted over all pieces, so the gradient is that of
    the whole batches: only memory changes."""
    out = []
    for x, y in batches:
        rows = plan.train_rows(x.shape[1]) * world
        out += [(x[i:i + rows], y[i:i + rows]) for i in range(0, x.shape[0], rows)]
    return out


def best_line(points: list[dict[str, Any]], checkpoint: Path | None) -> str:
    """The summary: the point with the lowest learning loss (lowest forgetting for pretraining)."""
    key = "learning" if any(p.get("learning") is not None for p in points) else "forgetting"
    scored = [p for p in points if isinstance(p.get(key), (int, float)) and math.isfinite(p[key])]
    if not scored:
        return f"done; checkpoint {checkpoint}"
    best = min(scored, key=lambda p: p[key])
    where = (checkpoint.parent / f"step-{best['step']:06d}") if checkpoint is not None else None
    kept = f"checkpoint {where}" if where is not None and where.is_dir() else f"final checkpoint {checkpoint}"
    return f"best: step {best['step']} ({key} {best[key]:.4f}" + (
        f", forgetting Δ {best['forgetting_delta']:+.4f}" if best.get("forgetting_delta") is not None else "") + f"); {kept}"


def run_job(job: Job) -> RunResult:
    cfg, run, model, opt = job.cfg, job.run, job.model, job.optimizer
    d = job.dist
    if not d.main:
        run = run.follower()
    steps = int(cfg.steps)
    scheduler = schedule_for(opt, cfg, steps)
    autocast = autocast_for(job.device, cfg.precision)
    step, tokens, wall_before, first_loss = 0, 0, 0.0, None
    if job.resume_from is not None:
        state = load_trainer_state(job.resume_from)
        if "optimizer_groups" in state:  # sharded: tensors from every rank's shards
            if d.strategy != "fsdp":
                raise ValueError(f"{job.resume_from} is a sharded checkpoint (parallel 'fsdp'); "
                                 "resume it under torchrun with parallel 'fsdp'")
            distributed.load_sharded_optimizer(job.resume_from, model, opt)
            for group, saved in zip(opt.param_groups, state["optimizer_groups"], strict=True):
                group.update({k: v for k, v in saved.items() if k != "params"})
        else:
            opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The optimizer's lr is the one the saved run set for this step; a decay branch off a
        # constant trunk sets its own schedule's (on a plain resume the two are the same number).
        for group, base_lr, f in zip(opt.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["lr"] = base_lr * f(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in opt.param_groups]
        set_rng_state(state["rng"])
        step, tokens, wall_before, first_loss = state["step"], state["tokens"], state["wall_time"], state["first_loss"]
        if step > steps:  # a branch started from a checkpoint past its own end
            raise ValueError(f"{job.resume_from} is at step {step}, past this run's {steps} steps")
    plan = job.memory or plan_memory(model, cfg, job.device)
    if plan.checkpointing:
        enable_checkpointing(model)
    # one process: the loss in checkpointed chunks (no full logits); torchrun: through the wrapper
    loss_fn = lm_loss_sum if d.active else chunked_train_loss_sum
    if cfg.compile:  # forward and loss together, so inductor fuses the softmax into the head
        setup_compile_cache()
        loss_fn = torch.compile(lm_loss_sum)
    params = [p for p in model.parameters() if p.requires_grad]
    # Rank 0 alone writes metrics, status and trackers; every rank computes the same values.
    trackers = open_trackers(cfg.trackers, run.path, cfg.model_dump(mode="json")) if d.main else []
    t_start = time.perf_counter()
    wall = lambda: round(wall_before + time.perf_counter() - t_start, 3)  # noqa: E731
    last_ckpt = job.resume_from
    say = (lambda text: tqdm.write(text, file=sys.stderr)) if cfg.console and d.main else (lambda text: None)
    earlier = run.points() if step > 0 else []
    base = {"forgetting": earlier[0].get("forgetting") if earlier and earlier[0]["step"] == 0 else None}
    stop: dict[str, str | None] = {"why": None, "status": None}  # a decision that ends the run early
    console = progress.Console(say, steps, cfg.progress, d.main, earlier=run.read_metrics() if step > 0 else [])

    def eval_point(k: int) -> None:
        with console.evaluation(k) as watch:  # a bar with an ETA, or start/end lines without a terminal
            measured = job.evaluate()
        point = {"kind": "eval", "step": k, "tokens": tokens, **measured,
                 "lr": scheduler.get_last_lr()[0], "wall_time": wall()}
        if k == 0:
            base["forgetting"] = point.get("forgetting")
        if isinstance(point.get("forgetting"), float) and base["forgetting"] is not None:
            # the change from the base model's own loss on the reference: comparable across references
            point["forgetting_delta"] = point["forgetting"] - base["forgetting"]
        point.update(console.delta_se(k, watch, run))  # Δ's paired error (the base's windows kept)
        run.append_metrics(point)
        say(eval_line(point, steps))
        if console.evaluations == 1 and k < steps:  # before training: what evaluations will cost
            say(progress.cost_line(watch.tokens, watch.seconds, sum(eval_due(j, steps, cfg) for j in range(k + 1, steps + 1)),
                                   cfg.eval_every, steps - k, job.step_tokens or cfg.batch_size * cfg.grad_accum * cfg.seq_len, plan.checkpointing))
        for tracker in trackers:
            tracker.log(_numbers(point, "eval"), k)
        if job.on_eval is not None:
            try:
                job.on_eval(point)
            except StopRun as err:  # the caller's decision (sweep --prune): ends the run, not an error
                if k < steps:  # at the last evaluation there is nothing left to stop: the run is done
                    stop.update(why=str(err), status=err.status)
        if job.after_eval is not None and (why := job.after_eval(point)) and not stop["why"]:
            stop["why"] = why  # the forgetting budget: the run is done, having kept what was within

    def save(k: int) -> Path:
        state = {"step": k, "tokens": tokens, "wall_time": wall(), "first_loss": first_loss,
                 "scheduler": scheduler.state_dict(), "rng": rng_state()}
        if d.strategy == "fsdp":
            state["optimizer_groups"] = opt.state_dict()["param_groups"]
            return write_checkpoint(run.checkpoints, k, job.write_model, state, cfg.keep_checkpoints,
                                    sharded=lambda tmp: distributed.save_sharded(tmp, model, opt, cfg.consolidate or k == steps),
                                    main=d.main, barrier=lambda: distributed.barrier(d))
        state["optimizer"] = opt.state_dict()
        path = None
        if d.main:  # DDP replicas are identical: one writer
            with quiet():
                path = write_checkpoint(run.checkpoints, k, job.write_model, state, cfg.keep_checkpoints)
        distributed.barrier(d)
        return path or run.checkpoints / f"step-{k:06d}"

    run.write_status("running", step=step, steps=steps)
    for line in job.intro or []:
        say(line)
    say("memory: " + ", ".join(f"{k} {v}" for k, v in plan.record(cfg.seq_len).items()))
    if step == 0:
        run.append_metrics({"kind": "header", **(job.header or {}), "memory": plan.record(cfg.seq_len)})
    bar = None
    phase, width = "evaluation", None
    term = {"asked": False}
    previous = stop_on_sigterm(term, graceful=not d.active)
    try:
        if step == 0:
            eval_point(0)  # before the bar: the bar's rate is of training steps only
        bar = tqdm(total=steps, initial=step, disable=None if cfg.progress and d.main else True, dynamic_ncols=True,
                   desc=run.path.name, unit="step")
        model.train()
        window_tokens, window_start = 0, time.perf_counter()
        while step < steps and not stop["why"]:  # (a run stopped at its step-0 evaluation trains nothing)
            phase, micro = "training", job.batches(step)
            width = max(x.shape[1] for x, _ in micro)
            loss_sum, n_total, n_tokens = train_step(model, loss_fn, pieces(micro, plan, d.world), opt, scheduler,
                                                     params, cfg.grad_clip, autocast, job.device, d,
                                                     job.after_backward)
            window_tokens += n_tokens
            tokens += n_tokens
            step += 1
            # Reading the loss syncs the device: every step on CPU (free); on GPU every log_every
            # steps and before every eval and checkpoint, so no diverged weights are saved.
            due = eval_due(step, steps, cfg)
            boundary = due or step % cfg.save_every == 0
            if job.device.type == "cpu" or step == 1 or step % cfg.log_every == 0 or boundary:
                value = float(loss_sum) / max(n_total, 1)
                first_loss = value if first_loss is None else first_loss
                if not math.isfinite(value) or (cfg.diverge_factor and value > cfg.diverge_factor * first_loss):
                    raise TrainLossDiverged(f"training loss {value:.4g} at step {step} (first loss {first_loss:.4g})")
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                if step % cfg.log_every == 0 or step == steps:
                    rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                    line = {"kind": "train", "step": step, "tokens": tokens, "loss": value,
                            "lr": scheduler.get_last_lr()[0], "tokens_per_s": round(rate, 1), "wall_time": wall()}
                    run.append_metrics(line)
                    for tracker in trackers:
                        tracker.log({"train/loss": value, "train/lr": line["lr"], "train/tokens_per_s": rate}, step)
                    bar.set_postfix(loss=f"{value:.3f}", lr=f"{line['lr']:.2e}", tok_s=f"{rate:,.0f}")
                    console.train_line(step, value, line["lr"], rate)
                    window_tokens, window_start = 0, time.perf_counter()
            bar.update(1)
            if due:
                phase, width = "evaluation", None
                eval_point(step)
            if step % cfg.save_every == 0 or step == steps or stop["why"] or term["asked"]:  # a stopped run resumes here
                last_ckpt = save(step)
                if step < steps and not stop["why"] and not term["asked"]:  # a run killed later says how far it got
                    run.write_status("running", step=step, steps=steps, final_checkpoint=last_ckpt)
            if boundary:
                window_tokens, window_start = 0, time.perf_counter()  # the next rate excludes evaluation and saving
            if stop["why"]:
                break
            if term["asked"]:
                raise Stopped("SIGTERM")
    except TrainLossDiverged as why:
        run.append_metrics({"kind": "status", "status": "diverged", "step": step, "reason": str(why)})
        for tracker in trackers:  # the trackers close as finished: say that it diverged
            tracker.log({"train/diverged": 1.0}, step)
        run.write_status("diverged", step=step, reason=str(why), final_checkpoint=last_ckpt)
        return RunResult(run.path, "diverged", run.points(), last_ckpt)
    except KeyboardInterrupt as err:  # Ctrl-C: "interrupted"; SIGTERM: "stopped" (both resume)
        run.write_status("stopped" if isinstance(err, Stopped) else "interrupted", step=step,
                         final_checkpoint=last_ckpt)
        raise
    except Exception as err:
        if is_oom(err):  # one line naming the setting to lower, not a traceback
            message = oom_message(phase, step, cfg, plan, width)
            run.write_status("failed", step=step, error=message, final_checkpoint=last_ckpt)
            raise OutOfMemory(message) from err
        run.write_status("failed", step=step, error=f"{type(err).__name__}: {err}", final_checkpoint=last_ckpt)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if bar is not None:
            bar.close()
        for tracker in trackers:
            tracker.finish()
    status = stop["status"] or "done"  # "pruned" (sweep.prune), or done (the budget's stop included)
    run.write_status(status, step=step, steps=steps, final_checkpoint=last_ckpt, wall_time=wall(),
                     eval_time=round(console.eval_seconds, 3),  # this process's evaluations (the share)
                     **({"stopped": stop["why"]} if stop["why"] else {}))
    if stop["why"]:
        say(f"stopped at step {step}/{steps}: {stop['why']}")
    say(progress.share_line(console.eval_seconds, console.evaluations, time.perf_counter() - t_start))
    if job.after_eval is None:  # a budget's own summary names the checkpoint it kept
        say(best_line(run.points(), last_ckpt))
    return RunResult(run.path, status, run.points(), last_ckpt)
