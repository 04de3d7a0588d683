"""`forgetless pretrain` and `forgetless finetune`: their options are generated from the fields of
`PretrainConfig` / `FinetuneConfig` (train/options.py), so a setting is declared once, in the config.

Every option defaults to "not given": the config is built from `--config FILE` (or, with `--resume`,
the run's own config.yaml), then the options given on the command line replace its fields, then
model-dependent defaults fill the rest (echoed fully resolved in OUT/config.yaml).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from forgetless.errors import UserError, format_validation_error
from forgetless.train.config import FinetuneConfig, PretrainConfig
from forgetless.train.options import config_parameters, flag_of, given_fields

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
        from forgetless.untrusted import load_yaml  # bounded: no alias bomb, no duplicate key

        try:
            loaded = load_yaml(Path(source).read_text()) or {}
        except UnicodeDecodeError as err:
            _fail(f"--config {source} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8")
        except yaml.YAMLError as err:
            _fail(f"--config {source} is not valid YAML: {err}")
        if not isinstance(loaded, dict):
            _fail(f"--config {source} must hold a mapping of config fields")
        kind, wanted = ("finetune" if "base" in loaded else "pretrain"), cls.__name__.removesuffix("Config").lower()
        if config_file is None and kind != wanted:  # the run's own config.yaml, of the other command
            _fail(f"--resume: {given['out_dir']} holds a {kind} run; continue it with `forgetless {kind} "
                  f"--resume --out {given['out_dir']}`")
        data.update(loaded)
    data.update(given)  # given_fields left out what was not given; a None here is 'none' on purpose
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = []
        for line in format_validation_error(err, cls).splitlines():
            name, sep, rest = line.partition(": ")
            if name == "(top level)":  # a rule between fields (config.check_*): its message starts 'field: '
                name, sep, rest = rest.partition(": ")
            lines.append(f"{flag_of(cls, name)}{sep}{rest}")  # 'out_dir (--out): Field required'
        _fail("invalid configuration\n  " + "\n  ".join(lines))


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
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (loop.Stopped: status.json says "stopped")
        stopped = type(err).__name__ == "Stopped"
        _err.print(f"{'stopped' if stopped else 'interrupted'}; continue with the same command and --resume "
                   f"(run dir {cfg.out_dir})")
        raise typer.Exit(143 if stopped else 130) from None
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


def relaunch(nproc: int | None) -> None:
    """`--nproc N`: run this same command under torchrun with N processes on this machine, and
    exit with its status (a no-op when already under torchrun or N is 1)."""
    import subprocess

    if nproc is not None and nproc < 1:  # 0 used to be taken as "not given"
        _fail(f"--nproc must be >= 1, got {nproc}")
    if not nproc or nproc == 1 or "WORLD_SIZE" in os.environ:
        return
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


NPROC = ("Processes on this machine, one per GPU (runs the command under torchrun; "
         "or start it with torchrun --nproc-per-node N -m forgetless ...). (default: 1)")


def config_command(cls, doc: str, run: Callable[[Any], None], own_panel: str) -> Callable[..., None]:
    """A typer command whose options are the fields of `cls`, plus --config FILE and --nproc N."""
    params = [
        *config_parameters(cls, panels=(own_panel, "Training")),
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, "--config", help=f"YAML file of {cls.__name__} fields; options given here override it.",
            rich_help_panel="Run")),
        inspect.Parameter("nproc", inspect.Parameter.KEYWORD_ONLY, annotation=int | None, default=typer.Option(
            None, "--nproc", help=NPROC, rich_help_panel="Run")),
    ]

    def command(**values: Any) -> None:
        config, nproc = values.pop("config"), values.pop("nproc")
        try:
            given = given_fields(cls, values)
        except ValueError as err:
            _fail(str(err))
        # Not a terminal (a log file, nohup): the bars turn themselves off and plain progress
        # lines take their place (forgetless.train.progress), so progress is left as given.
        cfg = _build(cls, given, config)
        relaunch(nproc)
        run(cfg)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command


def _pretrain(cfg: PretrainConfig) -> None:
    from forgetless.train.pretrain import pretrain

    _run(pretrain, cfg)


def _finetune(cfg: FinetuneConfig) -> None:
    from forgetless.train.finetune import finetune

    harness = None
    if cfg.harness:  # lm_eval tasks: the integrations box measures them (tests/test_imports.py)
        from forgetless.integrations.harness import harness_measure

        try:
            harness = harness_measure(cfg.harness, cfg.harness_limit, cfg.harness_tasks_dir)
        except (ImportError, ValueError) as err:  # not installed (how to install it), unknown task
            _fail(f"harness: {err}")
    _run(lambda c: finetune(c, harness=harness), _with_optimizer(cfg))


def _with_optimizer(cfg: FinetuneConfig) -> FinetuneConfig:
    """Without --optimizer, the one resolver `recommend` and `create_optimizer(family="auto")` use
    picks it (a run config, the provenance registry, the fingerprint's headline, else AdamW with a
    warning): the three never disagree (issue 23). The same choice as `finetune(cfg)` from Python
    (train.finetune.choose_optimizer), printed before the run."""
    if cfg.optimizer is not None:
        return cfg
    from forgetless.train.finetune import choose_optimizer, describe_base

    describe_base(cfg.base)  # a missing or damaged base: its one line, not a warning about it first
    cfg, chosen = choose_optimizer(cfg)
    typer.echo(f"optimizer: {chosen}")
    return cfg


PRETRAIN_DOC = """Pretrain a model preset from scratch with any optimizer, tracking validation loss.

Example: forgetless pretrain --model small --optimizer muon --corpus stdlib --tokens 5M --lr 3e-3 --out runs/muon-small
"""
FINETUNE_DOC = """Finetune a base model (full or LoRA) on a task, measuring forgetting and learning as it goes.

Defaults that depend on the model follow the base's preset (nano/micro/small, or larger).

Example: forgetless finetune runs/muon-small --task arith --method full --optimizer muon --lr 1e-4 --steps 400 --eval-every 50 --out runs/muon-small-ft
"""


def register(app: typer.Typer) -> None:
    app.command("pretrain")(config_command(PretrainConfig, PRETRAIN_DOC, _pretrain, "Pretraining"))
    app.command("finetune")(config_command(FinetuneConfig, FINETUNE_DOC, _finetune, "Finetuning"))

    @app.command("consolidate")
    def consolidate_cmd(
        checkpoint: Path = typer.Argument(..., help="A checkpoint of a run with --parallel fsdp (checkpoints/step-N), or its run directory."),
        out: Path = typer.Option(None, "--out", help="Write the whole model here (default: into the checkpoint)."),
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
