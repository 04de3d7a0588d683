"""`finetune`: supervised finetuning (full or LoRA) of a base model, measuring forgetting and learning.

At step 0 (the base) and every eval interval:
    forgetting = mean token loss on a fixed sample of the base's pretraining held-out split
                 (for an outside checkpoint: `forget_corpus`, tokenised by the model's tokenizer);
    learning   = mean loss over response tokens of the task's held-out records;
    accuracy   = exact match of greedy answers (when asked: generation costs more).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import peft
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer

from forgetless.data import SFTCollator, check_answer, load_task, prepare_pretraining_data
from forgetless.data.tokenizer import tokenizer_hash
from forgetless.models import apply_lora, load_model, merge_lora, resolve_checkpoint, set_dropout
from forgetless.models.loading import DROPOUT_KEYS
from forgetless.train import budget, distributed, remedies, runtime
from forgetless.train.config import FinetuneConfig
from forgetless.train.evaluate import (
    BaseReference,
    autocast_for,
    balanced_batches,
    forgetting_batches,
    forgetting_stats,
    greedy_answers,
    mean_loss,
    prompt_ids,
    shift_sft_batch,
    source_batches,
)
from forgetless.train.loop import Job, run_job
from forgetless.train.rundir import RunResult
from forgetless.train.sample_size import evaluation_line


def describe_base(base: str) -> dict[str, Any]:
    """What is known of a base: its checkpoint, and for a forgetless run its preset, optimizer,
    pretraining corpus and tokenizer settings and sequence length (a finetune run's base is
    followed back to its pretraining)."""
    config = Path(base) / "config.yaml"
    if config.is_file():
        from forgetless.errors import BadFile
        from forgetless.untrusted import load_yaml  # a run folder from anywhere: bounded

        try:
            saved = load_yaml(config.read_text(errors="replace")) or {}
        except yaml.YAMLError as err:
            saved = err
        if not isinstance(saved, dict):
            raise BadFile(f"{config}: not a readable run config ({str(saved)[:200]}); give the checkpoint folder instead")
        if "base" in saved:  # a finetune run: its pretraining facts are its base's
            info = describe_base(saved["base"])
        else:
            info = {k: saved.get(k) for k in ("model", "optimizer", "corpus", "tokenizer", "vocab_size", "seq_len")}
        info["checkpoint"] = resolve_checkpoint(base)
        return info
    checkpoint = resolve_checkpoint(base)
    return {"model": None, "optimizer": None, "corpus": None, "tokenizer": checkpoint,
            "vocab_size": None, "seq_len": None, "checkpoint": checkpoint}


def sft_order(n_records: int, seed: int, start: int, count: int) -> list[int]:
    """Record indices at positions start..start+count−1 of an endless stream of epochs, each
    epoch a permutation drawn from default_rng((seed, epoch)): a pure function of the position,
    so a resumed run reads the same records."""
    out = []
    for j in range(start, start + count):
        epoch, pos = divmod(j, n_records)
        out.append(int(_permutation(n_records, seed, epoch)[pos]))
    return out


_PERMS: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    if key not in _PERMS:
        _PERMS.clear()  # only the current epoch is needed
        _PERMS[key] = np.random.default_rng((seed, epoch)).permutation(n)
    return _PERMS[key]


def forgetting_reference(cfg: FinetuneConfig, tokenizer, model_vocab: int):
    """The reference text of forgetting, always in the model's own tokens: (data, its batches,
    the batches per source, a description). For a base forgetless did not pretrain (balanced)
    the sample takes equal tokens of prose and code from both splits of the corpus, since none
    of it was held out from that model by forgetless."""
    forget = prepare_pretraining_data(cfg.forget_corpus, cfg.forget_tokenizer, cfg.forget_vocab_size,
                                      progress=cfg.progress)
    same = len(forget.tokenizer) == len(tokenizer)
    try:
        same = same and tokenizer_hash(forget.tokenizer) == tokenizer_hash(tokenizer)
    except AttributeError:  # a slow model tokenizer: compare what it makes of a sentence
        text = "Forgetting is measured in the model's own tokens.\n    def f(x): return x"
        same = same and forget.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    if not same or len(forget.tokenizer) > model_vocab:
        raise ValueError(f"forget_tokenizer {cfg.forget_tokenizer!r} is not the model's tokenizer; forgetting "
                         "must be measured in the model's own tokens: leave forget_tokenizer unset")
    splits = ("val", "train") if cfg.forget_balance else ("val",)
    batches = balanced_batches(forget, cfg.forget_seq_len, cfg.eval_tokens, cfg.eval_batch_size, splits) \
        if cfg.forget_balance else None
    batches = batches or forgetting_batches(forget.val, cfg.forget_seq_len, cfg.eval_tokens, cfg.eval_batch_size)
    # A finer view beside the one number: forgetting per source, on a quarter of the sample
    # each, so it adds little to the evaluation time.
    by_source = source_batches(forget, cfg.forget_seq_len, max(cfg.forget_seq_len, cfg.eval_tokens // 4),
                               cfg.eval_batch_size, splits)
    mix = f"equal tokens per source ({', '.join(by_source)}), both splits" if cfg.forget_balance and len(by_source) > 1 \
        else "held-out split as it comes"
    n_tokens = sum(int(x.numel()) for x, _ in batches)
    about = {"corpus": cfg.forget_corpus, "sample_tokens": n_tokens, "windows": sum(len(x) for x, _ in batches),
             "seq_len": cfg.forget_seq_len, "mix": mix, "splits": list(splits) if by_source else ["val"], "corpus_val_tokens": len(forget.val),
             "tokenizer": str(cfg.forget_tokenizer), "tokenizer_hash": forget.meta.get("tokenizer_hash")}
    return forget, batches, by_source, about


def choose_optimizer(cfg: FinetuneConfig) -> tuple[FinetuneConfig, str | None]:
    """`cfg` with its optimizer set, and the resolver's one-line answer when it chose (None when
    `cfg.optimizer` was given). Without an optimizer, the one resolver of `forgetless recommend`
    and `create_optimizer(family="auto")` picks it: a forgetless run config, the provenance
    registry, the weight fingerprint's headline, else AdamW with a `PretrainingUnknown` warning
    (issue 23 §3). Both `finetune(cfg)` and `forgetless finetune` come through here, so the four
    never disagree. train's one import of a box further down the list (docs/ARCHITECTURE.md)."""
    if cfg.optimizer is not None:
        return cfg, None
    from forgetless.recommend.resolve import resolve

    found = resolve(cfg.base)
    return cfg.model_copy(update={"optimizer": found.optimizer}), found.summary()


def finetune(cfg: FinetuneConfig, on_eval: Callable[[dict[str, Any]], None] | None = None,
             harness: Callable[[Any, Any], dict[str, Any]] | None = None) -> RunResult:
    """Finetune `cfg.base` on `cfg.task`; returns the run's status and its eval points. `harness`
    (model, tokenizer) -> numbers added to each eval point: the lm-evaluation-harness tasks of
    cfg.harness (forgetless.integrations.harness.harness_measure; the training box does not import
    the integrations above it)."""
    from forgetless.train.rundir import claim_ends_with_the_call

    with runtime.torch_threads(cfg.threads), claim_ends_with_the_call(cfg.out_dir):  # the run dir's lock
        return _finetune(cfg, on_eval, harness)


def _finetune(cfg: FinetuneConfig, on_eval: Callable[[dict[str, Any]], None] | None,
              harness: Callable[[Any, Any], dict[str, Any]] | None) -> RunResult:
    if cfg.harness and harness is None:
        raise ValueError(f"harness {cfg.harness}: benchmark tasks are measured by forgetless.integrations.harness; "
                         "run `forgetless finetune --harness TASK`, or from Python pass finetune(cfg, harness="
                         "forgetless.integrations.harness.harness_measure(cfg.harness))")
    info = describe_base(cfg.base)  # a missing or damaged base: its one line before any optimizer warning
    cfg, chosen = choose_optimizer(cfg)
    cfg = cfg.resolved(info)
    device, run = runtime.start(cfg)
    train_records = load_task(cfg.task, "train", n=cfg.train_n, seed=cfg.task_seed, columns=cfg.columns)
    eval_records = load_task(cfg.task, "validation", n=cfg.eval_n, seed=cfg.task_seed, columns=cfg.columns)
    acc_records = [r for r in eval_records if r.answer is not None][: cfg.accuracy_n]
    if cfg.accuracy and not acc_records:
        raise ValueError(f"accuracy: task {cfg.task!r} has no records with a checkable answer; "
                         "turn accuracy off")
    resume_from = runtime.open_run(run, cfg)
    lora = cfg.method == "lora"
    runtime.seed_everything(cfg.seed)
    source = resume_from if resume_from is not None and not lora else info["checkpoint"]
    if distributed.shards_only(source):  # a sharded checkpoint: weights filled once sharded, below
        model, tokenizer = distributed.empty_model(source), AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    else:
        model, tokenizer = load_model(source)
    runtime.set_token_ids(model, tokenizer)
    kept = {k: v for k, v in vars(model.config).items() if k in DROPOUT_KEYS and isinstance(v, float)}
    set_dropout(model, cfg.dropout)
    # Training uses cfg.dropout (in config.yaml); the exported config.json keeps the base's values,
    # so a model pretrained without dropout is not handed on with attention_dropout 0.1.
    for key, value in kept.items():
        setattr(model.config, key, value)
    if lora:
        model = apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    anchor = _anchor(cfg, model, info, resumed=resume_from is not None, device=device)
    if lora:
        if resume_from is not None:
            adapter = resume_from / "adapter" if (resume_from / "adapter").is_dir() else resume_from
            peft.set_peft_model_state_dict(model, load_file(str(adapter / "adapter_model.safetensors")))
    model.to(device)
    autocast = autocast_for(device, cfg.precision)
    d, trained = distributed.spread(model, cfg.parallel, device, cfg.precision, lora=lora, shards=source)
    optimizer = runtime.make_optimizer(model, cfg, sharded=d.active)
    if anchor is not None and d.strategy == "fsdp":
        raise ValueError("l2sp / wise: not available with parallel 'fsdp' (sharded weights); use parallel 'ddp' "
                         "or one process")
    if cfg.forgetting_budget is not None and d.strategy == "fsdp":
        raise ValueError("forgetting_budget: not available with parallel 'fsdp' (sharded weights); use parallel "
                         "'ddp' or one process")
    l2sp = remedies.L2SP(model, cfg.l2sp, anchor) if cfg.l2sp > 0 else None
    plan = runtime.plan_memory(model, cfg, device)

    vocab = model.get_input_embeddings().num_embeddings
    forget, forget_batches, by_source, reference = forgetting_reference(cfg, tokenizer, vocab)
    replay = _replay(cfg, forget, both_splits="train" in reference["splits"])
    intro = [f"forgetting reference: {reference['corpus']} ({reference['mix']}), {reference['sample_tokens']:,} "
             f"tokens in {reference['windows']} windows of {reference['seq_len']}, in the model's own tokenizer "
             f"({reference['corpus_val_tokens']:,} held-out tokens in the corpus)",
             *([f"optimizer: {chosen}"] if chosen else []),
             f"task {cfg.task}: {len(train_records):,} training records; {len(eval_records):,} held out measure "
             "learning" + (f", {len(acc_records):,} of them accuracy" if cfg.accuracy else "")]
    collator = SFTCollator(tokenizer, cfg.seq_len)
    step_b = cfg.eval_batch_size
    learn_batches = [shift_sft_batch(collator(eval_records[i:i + step_b])) for i in range(0, len(eval_records), step_b)]
    prompts = [p for i in range(0, len(acc_records), step_b) for p in prompt_ids(collator(acc_records[i:i + step_b]))]
    forward_tokens = sum(int(x.numel()) for x, _ in [*forget_batches, *learn_batches,
                                                       *(b for v in by_source.values() for b in v)])
    intro.append(evaluation_line(reference, forward_tokens))  # after the task line, before memory

    replay_widths: dict[int, list[int]] = {}  # step -> width of each micro-batch (replay cost)

    def batches(step: int):
        first = step * cfg.grad_accum * cfg.batch_size
        out = []
        for i in range(cfg.grad_accum):
            idx = sft_order(len(train_records), cfg.seed, first + i * cfg.batch_size, cfg.batch_size)
            batch = shift_sft_batch(collator([train_records[j] for j in idx]))
            if replay is not None:
                batch, _ = replay(batch, step * cfg.grad_accum + i)
            out.append(batch)
        replay_widths[step] = [x.shape[1] for x, _ in out]
        return out

    def replay_cost() -> dict[str, int]:
        """Replay sequences and tokens so far (steps of a resumed run's earlier life rebuilt)."""
        done = max(replay_widths) + 1 if replay_widths else 0
        for k in range(done):
            if k not in replay_widths:
                batches(k)
        tokens = sum(remedies.replay_count(cfg.replay, cfg.batch_size, k * cfg.grad_accum + i) * w
                     for k in range(done) for i, w in enumerate(replay_widths[k]))
        return {"replay_sequences": remedies.replay_total(cfg.replay, cfg.batch_size, done * cfg.grad_accum),
                "replay_tokens": tokens}

    base_ref = BaseReference(run.path / "base_reference.safetensors", fresh=resume_from is None)  # kl_to_base

    def evaluate() -> dict[str, Any]:
        point = {**forgetting_stats(model, forget_batches, device, autocast, d, plan.eval_tokens, base_ref),
                 "learning": mean_loss(model, learn_batches, device, autocast, d, plan.eval_tokens), "accuracy": None}
        if by_source:
            point["forgetting_by_source"] = {name: mean_loss(model, b, device, autocast, d, plan.eval_tokens)
                                             for name, b in by_source.items()}
        if cfg.accuracy:  # every rank answers every prompt (generation is not split over ranks)
            texts = greedy_answers(model, tokenizer, prompts, cfg.max_new_tokens, device, step_b,
                                   synced=d.strategy == "fsdp")
            point["accuracy"] = sum(check_answer(cfg.task, r, t) for r, t in zip(acc_records, texts, strict=True)) / len(texts)
        if replay is not None:
            point.update(replay_cost())
        if l2sp is not None:
            point["l2sp_sq_distance"] = l2sp.sq_distance()
        if cfg.harness:
            point.update(harness(model, tokenizer))
        return point

    def write_model(path: Path) -> None:
        if d.strategy == "fsdp":
            distributed.write_config(model, path)
        elif lora and cfg.merge:
            merge_lora(model).save_pretrained(path)
            model.save_pretrained(path / "adapter")
        else:
            model.save_pretrained(path)  # full model, or the adapter files alone
        tokenizer.save_pretrained(path)

    # Records are padded to the longest in their batch, not to seq_len: the cost line estimates
    # training time from the first steps' real batches (chat records of ~300 tokens at seq_len 1024
    # made it predict 21% of the wall time for evaluations where 52% was measured).
    first = range(min(cfg.steps, 4))
    step_tokens = sum(int(x.numel()) for k in first for x, _ in batches(k)) // max(len(first), 1)
    replay_widths.clear()  # replay_cost counts the steps trained, not these
    tracker = budget.BudgetTracker(cfg.forgetting_budget, cfg.budget_patience) \
        if cfg.forgetting_budget is not None else None
    if tracker is not None and resume_from is not None:
        tracker.replay(run.points())
    job = Job(cfg=cfg, run=run, model=trained, optimizer=optimizer, batches=batches, evaluate=evaluate,
              write_model=write_model, device=device, resume_from=resume_from, on_eval=on_eval, dist=d,
              memory=plan, header={"base": cfg.base, "task": cfg.task, "reference": reference}, intro=intro,
              step_tokens=step_tokens,
              after_backward=l2sp.add_gradient if l2sp is not None else None,
              after_eval=budget.hook(tracker, run.path, write_model, d.main, lambda: distributed.barrier(d))
              if tracker is not None else None)
    if tracker is not None and tracker.stopped:  # resumed after the budget stopped it: nothing to train
        result = RunResult(run.path, "done", run.points(), resume_from)
    else:
        result = run_job(job)
    if cfg.wise and result.status == "done":
        result = _wise(cfg, model, anchor, evaluate, run if d.main else run.follower(), on_eval, result,
                       say=cfg.console and d.main)
    if tracker is not None and result.status == "done":
        def base_state() -> dict:  # θ₀ of the WiSE rollback, as _wise takes it
            if lora:
                return remedies.lora_base_state(remedies.anchor_of(model))
            if anchor is not None:
                return anchor
            base, _ = load_model(info["checkpoint"])
            names = {n for n, _ in remedies.trainable(model)}
            return {n: p.detach() for n, p in base.named_parameters() if n in names}

        result = budget.finish(tracker, result, run if d.main else run.follower(), model, base_state, evaluate,
                               write_model, d.main, lambda: distributed.barrier(d), cfg.console)
    base_ref.close(d)
    return result


def _anchor(cfg: FinetuneConfig, model, info: dict[str, Any], resumed: bool, device):
    """θ₀ of the trainable parameters, when L2-SP or (full) WiSE needs it: the pretrained weights
    (reloaded from the base when a full finetune resumes from its own checkpoint), or LoRA's
    initial adapters (made from the seed, before a resumed run loads its adapters). On the
    training device for L2-SP, which reads it every step; on the CPU for WiSE alone."""
    lora = cfg.method == "lora"
    if not cfg.l2sp > 0 and not (cfg.wise and not lora):
        return None
    where = device if cfg.l2sp > 0 else "cpu"
    if resumed and not lora:
        base, _ = load_model(info["checkpoint"])
        names = {n for n, _ in remedies.trainable(model)}
        return {n: p.detach().to(where) for n, p in base.named_parameters() if n in names}
    return remedies.anchor_of(model, where)


def _replay(cfg: FinetuneConfig, forget, both_splits: bool):
    """The replay mixer on the training split of replay_corpus (in the model's tokens, as the
    reference's), else of the reference; None when replay is 0. The forgetting sample is built
    before and apart from it, so replay never changes what forgetting is measured on; text the
    sample takes (`both_splits`: the reference's training split too) is never replayed."""
    if not cfg.replay > 0:
        return None
    if cfg.replay_corpus and both_splits and cfg.replay_corpus == cfg.forget_corpus:
        raise ValueError(f"replay_corpus {cfg.replay_corpus!r} is the reference text itself, whose both splits the "
                         "forgetting sample takes; replay other text, or --no-forget-balance")
    if cfg.replay_corpus:
        text = prepare_pretraining_data(cfg.replay_corpus, cfg.forget_tokenizer, cfg.forget_vocab_size,
                                        progress=cfg.progress)
        return remedies.Replay(text.train, cfg.replay, cfg.batch_size, cfg.seed)
    if both_splits:
        raise ValueError(f"replay: the forgetting sample of this base takes windows from both splits of "
                         f"{cfg.forget_corpus} (forget_balance), so no training split is left to replay from "
                         "without replaying measured text; give the text to replay with --replay-corpus PATH "
                         "(the sample stays as it is), or --no-forget-balance (forgetting on the held-out split "
                         "alone, replay from the training split)")
    return remedies.Replay(forget.train, cfg.replay, cfg.batch_size, cfg.seed)


def _wise(cfg: FinetuneConfig, model, anchor, evaluate, run, on_eval, result: RunResult,
          say: bool = False) -> RunResult:
    """WiSE-FT points of a finished finetune, one per α of cfg.wise (those already in
    metrics.jsonl, from a run cut during this stage, are not measured again). The result's points
    are sorted by step, so the WiSE points (negative steps) come first and the last point is
    still the finetune's last."""
    trajectory = [p for p in result.points if "wise" not in p]
    last = trajectory[-1] if trajectory else {"step": cfg.steps, "tokens": None}
    base_f = trajectory[0].get("forgetting") if trajectory and trajectory[0]["step"] == 0 else None
    if cfg.method == "lora":
        anchor = remedies.lora_base_state(remedies.anchor_of(model))
    done = [p["wise"] for p in result.points if "wise" in p]
    for alpha, measured in remedies.wise_points(model, anchor, cfg.wise, evaluate, done):
        point = {"kind": "eval", "step": remedies.wise_step(cfg.wise.index(alpha)), "wise": alpha,
                 "finetune_step": last["step"], "tokens": last.get("tokens"), **measured,
                 "wise_evaluations": len(cfg.wise)}
        if isinstance(point.get("forgetting"), float) and base_f is not None:
            point["forgetting_delta"] = point["forgetting"] - base_f
        run.append_metrics(point)
        if say:
            delta = f" (Δ {point['forgetting_delta']:+.4f} from base)" if "forgetting_delta" in point else ""
            print(f"WiSE α {alpha:g}: forgetting {point['forgetting']:.4f}{delta}, learning {point['learning']:.4f}",
                  file=sys.stderr, flush=True)
        if on_eval is not None:
            on_eval(point)
    return RunResult(result.out_dir, result.status, sorted(run.points(), key=lambda p: p["step"]),
                     result.final_checkpoint)
