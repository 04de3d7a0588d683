"""`forgetless pretrain` and `forgetless finetune`.

Every option defaults to "not given": the config is built from `--config FILE` (or, with `--resume`,
the run's own config.yaml), then the options given on the command line replace its fields, then
model-dependent defaults fill the rest (echoed fully resolved in OUT/config.yaml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from forgetless.errors import UserError
from forgetless.optim import OPTIMIZERS
from forgetless.train.config import FinetuneConfig, PretrainConfig, format_validation_error

_err = Console(stderr=True)


def _fail(message: str) -> None:
    """A user error: the root command prints it as one line, exit code 2 (see forgetless.cli)."""
    raise UserError(message)


def _build(cls, given: dict[str, Any], config_file: Path | None):
    """cls from the YAML file (or the resumed run's config.yaml) overlaid with the given options."""
    data: dict[str, Any] = {}
    source = config_file
    if source is None and given.get("resume") and given.get("out_dir"):
        saved = Path(given["out_dir"]) / "config.yaml"
        source = saved if saved.is_file() else None
    if source is not None:
        if not Path(source).is_file():
            _fail(f"--config {source}: no such file")
        try:
            loaded = yaml.safe_load(Path(source).read_text()) or {}
        except UnicodeDecodeError as err:
            _fail(f"--config {source} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8")
        except yaml.YAMLError as err:
            _fail(f"--config {source} is not valid YAML: {err}")
        if not isinstance(loaded, dict):
            _fail(f"--config {source} must hold a mapping of config fields")
        data.update(loaded)
    data.update({k: v for k, v in given.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = format_validation_error(err).replace("out_dir: Field required", "out_dir (--out): Field required")
        _fail("invalid configuration\n  " + lines.replace("\n", "\n  "))


def _run(fn, cfg) -> None:
    from forgetless.train.runtime import OutOfMemory, is_oom

    try:
        result = fn(cfg)
    except OutOfMemory as err:  # the run is marked failed; the message names the setting to lower
        _fail(str(err))
    except (ValueError, OSError) as err:  # bad values, paths, names: user errors
        _fail(str(err))
    except Exception as err:
        if not is_oom(err):
            raise
        _fail(f"out of memory before training started ({type(err).__name__}); lower batch_size (--batch-size), "
              "micro_batch (--micro-batch), eval_batch_size (--eval-batch-size) or seq_len (--seq-len)")
    except KeyboardInterrupt:
        _err.print(f"interrupted; continue with the same command and --resume (run dir {cfg.out_dir})")
        raise typer.Exit(130) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 speaks for the job
        return
    last = result.points[-1] if result.points else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("forgetting", "learning", "accuracy")
                        if isinstance(last.get(k), float))
    if result.status == "diverged":
        status = (result.out_dir / "status.json").read_text() if (result.out_dir / "status.json").exists() else ""
        _err.print(f"[yellow]run diverged[/yellow]; last good checkpoint: {result.final_checkpoint}\n"
                   + escape(status), highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    typer.echo(f"done: {result.out_dir} (step {last.get('step')}: {summary}); checkpoint {result.final_checkpoint}")


def _common(d: dict[str, Any], *, optimizer, lr, adamw_lr, weight_decay, momentum, warmup, steps,
            batch_size, seq_len, grad_accum, dropout, seed, eval_every, eval_tokens, save_every,
            device, precision, compile_, track, progress, resume, out, parallel=None,
            micro_batch=None, eval_batch_size=None, checkpointing=None) -> dict[str, Any]:
    d.update(micro_batch=micro_batch, eval_batch_size=eval_batch_size, gradient_checkpointing=checkpointing)
    d.update(optimizer=optimizer, lr=lr, adamw_lr=adamw_lr, weight_decay=weight_decay, momentum=momentum,
             warmup=warmup, steps=steps, batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum,
             dropout=dropout, seed=seed, eval_every=eval_every, eval_tokens=eval_tokens, save_every=save_every,
             device=device, precision=precision, compile=compile_, trackers=track or None,
             progress=None if progress else False, resume=resume or None, out_dir=out, parallel=parallel)
    return d


def relaunch(nproc: int | None) -> None:
    """`--nproc N`: run this same command under torchrun with N processes on this machine, and
    exit with its status (a no-op when already under torchrun or N is 1)."""
    import subprocess

    if not nproc or nproc == 1 or "WORLD_SIZE" in os.environ:
        return
    if nproc < 1:
        _fail(f"--nproc must be >= 1, got {nproc}")
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "forgetless", *args]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # torchrun's warning otherwise
    raise typer.Exit(subprocess.call(cmd, env=env))


# Options shared by both commands (typer needs them spelled out per command; these are the specs).
def _o(default, *names, **kw):
    return typer.Option(default, *names, **kw)


NPROC = ("Processes on this machine, one per GPU (runs the command under torchrun; "
         "or start it with torchrun --nproc-per-node N -m forgetless ...). (default: 1)")
PARALLEL = "Under torchrun: ddp (a replica per process), fsdp (FSDP2 shards), auto. (default: auto)"
MICRO = ("Sequences per forward/backward; each batch is cut into pieces this size, the step's gradient "
         "is the same. (default: sized from the model and free memory)")
EVAL_BATCH = "Sequences per evaluation batch. (default: --batch-size)"
CHECKPOINTING = "Recompute activations in the backward to save memory. (default: on from 100M parameters)"
OPTIMIZER = dict(help=f"Optimizer (see `forgetless optimizers`): {', '.join(OPTIMIZERS)}.")


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain_cmd(
        model: str = _o(None, "--model", help="Model preset: nano, micro, small, gpt2-small. (default: micro)"),
        optimizer: str = _o(None, "--optimizer", **OPTIMIZER),
        corpus: str = _o(None, "--corpus", help="Corpus: stdlib, a folder, file.txt, file.jsonl[:field], hf:NAME. (default: stdlib)"),
        tokenizer: str = _o(None, "--tokenizer", help="HF tokenizer path/name (default: train a BPE on the corpus)."),
        vocab_size: int = _o(None, "--vocab-size", help="BPE vocabulary size. (default: 4096 nano/micro, 8192 otherwise)"),
        tokens: str = _o(None, "--tokens", help="Training tokens, e.g. 5M or 200k (sets --steps). (default: 1.5M micro, 5M small)"),
        steps: str = _o(None, "--steps", help="Optimizer steps (instead of --tokens)."),
        lr: float = _o(None, "--lr", help="Peak learning rate. (default: 3e-3)"),
        adamw_lr: float = _o(None, "--adamw-lr", help="Learning rate of the AdamW side (embeddings, norms). (default: --lr)"),
        weight_decay: float = _o(None, "--weight-decay", help="Decoupled weight decay. (default: 0.1)"),
        momentum: float = _o(None, "--momentum", help="Momentum of the optimizer's rule. (default: 0.95)"),
        warmup: float = _o(None, "--warmup", help="Warm-up fraction of the steps. (default: 0.1)"),
        batch_size: int = _o(None, "--batch-size", help="Sequences per batch. (default: 32; 240 for gpt2-small)"),
        seq_len: int = _o(None, "--seq-len", help="Tokens per sequence. (default: 128; 1024 for gpt2-small)"),
        grad_accum: int = _o(None, "--grad-accum", help="Batches per optimizer step. (default: 1)"),
        micro_batch: int = _o(None, "--micro-batch", help=MICRO),
        eval_batch_size: int = _o(None, "--eval-batch-size", help=EVAL_BATCH),
        checkpointing: bool = _o(None, "--gradient-checkpointing/--no-gradient-checkpointing", help=CHECKPOINTING),
        dropout: float = _o(None, "--dropout", help="Dropout probability. (default: 0)"),
        seed: int = _o(None, "--seed", help="Seed of initialisation, data order and dropout. (default: 0)"),
        eval_every: int = _o(None, "--eval-every", help="Steps between validation-loss evaluations. (default: 100)"),
        eval_tokens: int = _o(None, "--eval-tokens", help="Held-out tokens per evaluation. (default: 65536)"),
        save_every: int = _o(None, "--save-every", help="Steps between checkpoints. (default: --eval-every)"),
        device: str = _o(None, "--device", help="auto, cpu, cuda, cuda:N, mps. (default: auto)"),
        precision: str = _o(None, "--precision", help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32."),
        compile_: bool = _o(None, "--compile/--no-compile", help="torch.compile the model (pays off on long runs)."),
        track: list[str] = _o(None, "--track", help="Also log to tensorboard, wandb or mlflow (repeatable)."),
        progress: bool = _o(True, "--progress/--no-progress", help="Progress bar (off anyway when not a terminal)."),
        resume: bool = _o(False, "--resume", help="Continue the run in --out from its newest checkpoint."),
        out: Path = _o(None, "--out", help="Run directory (config.yaml, metrics.jsonl, status.json, checkpoints/)."),
        config: Path = _o(None, "--config", help="YAML file of PretrainConfig fields; options given here override it."),
        nproc: int = _o(None, "--nproc", help=NPROC),
        parallel: str = _o(None, "--parallel", help=PARALLEL),
    ) -> None:
        """Pretrain a model preset from scratch with any optimizer, tracking validation loss.

        Example: forgetless pretrain --model small --optimizer muon --corpus stdlib --tokens 5M --lr 3e-3 --out runs/muon-small
        """
        given = _common(dict(model=model, corpus=corpus, tokenizer=tokenizer, vocab_size=vocab_size, tokens=tokens),
                        optimizer=optimizer, lr=lr, adamw_lr=adamw_lr, weight_decay=weight_decay, momentum=momentum,
                        warmup=warmup, steps=steps, batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum,
                        dropout=dropout, seed=seed, eval_every=eval_every, eval_tokens=eval_tokens,
                        save_every=save_every, device=device, precision=precision, compile_=compile_, track=track,
                        progress=progress and sys.stderr.isatty(), resume=resume, out=out, parallel=parallel,
                        micro_batch=micro_batch, eval_batch_size=eval_batch_size, checkpointing=checkpointing)
        cfg = _build(PretrainConfig, given, config)
        relaunch(nproc)
        from forgetless.train.pretrain import pretrain

        _run(pretrain, cfg)

    @app.command("finetune")
    def finetune_cmd(
        base: str = typer.Argument(None, help="Base model: a forgetless run dir, an HF checkpoint dir or a hub name."),
        task: str = _o(None, "--task", help="SFT task: arith, instruct, code, metamathqa, alpaca, magicoder, a data file (.jsonl .json .parquet .csv: messages, prompt/completion, instruction/input/output or text columns) or hf:NAME (see docs/data.md)."),
        columns: list[str] = _o(None, "--columns", help="Rename data columns DATA=FORMAT, comma-separated or repeated (e.g. question=prompt,reply=completion)."),
        method: str = _o(None, "--method", help="full or lora. (default: full)"),
        rank: int = _o(None, "--rank", help="LoRA rank. (default: 16)"),
        alpha: float = _o(None, "--alpha", help="LoRA alpha. (default: 2 x rank)"),
        lora_dropout: float = _o(None, "--lora-dropout", help="Dropout on LoRA's input. (default: 0)"),
        lora_targets: str = _o(None, "--lora-targets", help="Comma-separated module names. (default: every linear layer but the head)"),
        merge: bool = _o(None, "--merge/--no-merge", help="Save LoRA checkpoints merged into the base weights. (default: merge)"),
        optimizer: str = _o(None, "--optimizer", **OPTIMIZER),
        lr: float = _o(None, "--lr", help="Peak learning rate. (default: 1e-4 full, 1e-3 LoRA)"),
        adamw_lr: float = _o(None, "--adamw-lr", help="Learning rate of the AdamW side. (default: --lr)"),
        weight_decay: float = _o(None, "--weight-decay", help="Decoupled weight decay. (default: 0)"),
        momentum: float = _o(None, "--momentum", help="Momentum of the optimizer's rule. (default: 0.95)"),
        warmup: float = _o(None, "--warmup", help="Warm-up fraction of the steps. (default: 0.1)"),
        steps: str = _o(None, "--steps", help="Optimizer steps. (default: 300 small bases, 800 otherwise)"),
        batch_size: int = _o(None, "--batch-size", help="Records per batch. (default: 32 small bases, 128 otherwise)"),
        seq_len: int = _o(None, "--seq-len", help="Longest record in tokens. (default: 128 small bases, 1024 otherwise)"),
        grad_accum: int = _o(None, "--grad-accum", help="Batches per optimizer step. (default: 1)"),
        micro_batch: int = _o(None, "--micro-batch", help=MICRO),
        eval_batch_size: int = _o(None, "--eval-batch-size", help=EVAL_BATCH),
        checkpointing: bool = _o(None, "--gradient-checkpointing/--no-gradient-checkpointing", help=CHECKPOINTING),
        dropout: float = _o(None, "--dropout", help="Dropout probability. (default: 0.1)"),
        seed: int = _o(None, "--seed", help="Seed of data order and dropout. (default: 0)"),
        eval_every: int = _o(None, "--eval-every", help="Steps between forgetting/learning points. (default: 50 small bases, 200 otherwise)"),
        eval_tokens: int = _o(None, "--eval-tokens", help="Held-out pretraining tokens per forgetting point. (default: 65536)"),
        eval_n: int = _o(None, "--eval-n", help="Held-out task records for the learning loss. (default: 256)"),
        train_n: int = _o(None, "--train-n", help="Training records used. (default: all)"),
        accuracy: bool = _o(None, "--accuracy/--no-accuracy", help="Also measure exact-match accuracy of greedy answers."),
        accuracy_n: int = _o(None, "--accuracy-n", help="Held-out records generated for accuracy. (default: 64)"),
        forget_corpus: str = _o(None, "--forget-corpus", help="Reference text of forgetting, tokenised with the model's tokenizer. (default: the base run's corpus; for other models stdlib, half prose, half code)"),
        save_every: int = _o(None, "--save-every", help="Steps between checkpoints. (default: --eval-every)"),
        device: str = _o(None, "--device", help="auto, cpu, cuda, cuda:N, mps. (default: auto)"),
        precision: str = _o(None, "--precision", help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32."),
        compile_: bool = _o(None, "--compile/--no-compile", help="torch.compile the model."),
        track: list[str] = _o(None, "--track", help="Also log to tensorboard, wandb or mlflow (repeatable)."),
        progress: bool = _o(True, "--progress/--no-progress", help="Progress bar (off anyway when not a terminal)."),
        resume: bool = _o(False, "--resume", help="Continue the run in --out from its newest checkpoint."),
        out: Path = _o(None, "--out", help="Run directory (config.yaml, metrics.jsonl, status.json, checkpoints/)."),
        config: Path = _o(None, "--config", help="YAML file of FinetuneConfig fields; options given here override it."),
        nproc: int = _o(None, "--nproc", help=NPROC),
        parallel: str = _o(None, "--parallel", help=PARALLEL),
    ) -> None:
        """Finetune a base model (full or LoRA) on a task, measuring forgetting and learning as it goes.

        Example: forgetless finetune runs/muon-small --task arith --method full --optimizer muon --lr 1e-4 --steps 400 --eval-every 50 --out runs/muon-small-ft
        """
        targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
        given = _common(dict(base=base, task=task, columns=columns, method=method, lora_rank=rank, lora_alpha=alpha,
                             lora_dropout=lora_dropout, lora_targets=targets, merge=merge, eval_n=eval_n,
                             train_n=train_n, accuracy=accuracy, accuracy_n=accuracy_n, forget_corpus=forget_corpus),
                        optimizer=optimizer, lr=lr, adamw_lr=adamw_lr, weight_decay=weight_decay, momentum=momentum,
                        warmup=warmup, steps=steps, batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum,
                        dropout=dropout, seed=seed, eval_every=eval_every, eval_tokens=eval_tokens,
                        save_every=save_every, device=device, precision=precision, compile_=compile_, track=track,
                        progress=progress and sys.stderr.isatty(), resume=resume, out=out, parallel=parallel,
                        micro_batch=micro_batch, eval_batch_size=eval_batch_size, checkpointing=checkpointing)
        cfg = _build(FinetuneConfig, given, config)
        relaunch(nproc)
        from forgetless.train.finetune import finetune

        _run(finetune, cfg)

    @app.command("consolidate")
    def consolidate_cmd(
        checkpoint: Path = typer.Argument(..., help="A checkpoint of a run with --parallel fsdp (checkpoints/step-N), or its run directory."),
        out: Path = _o(None, "--out", help="Write the whole model here (default: into the checkpoint)."),
    ) -> None:
        """Join a sharded (FSDP2) checkpoint into a plain Hugging Face checkpoint (model.safetensors).

        Example: forgetless consolidate runs/big/checkpoints/step-000400 --out runs/big-hf
        """
        from forgetless.models import resolve_checkpoint
        from forgetless.train.distributed import consolidate

        try:
            dst = consolidate(resolve_checkpoint(checkpoint), out)
        except (ValueError, OSError) as err:
            _fail(str(err))
        typer.echo(f"consolidated: {dst}")
