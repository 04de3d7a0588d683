"""The `forgetless` command line.

Each box of the pipeline keeps its own commands in `forgetless/<box>/commands.py`, which defines
`register(app)`; this file only assembles them, so boxes can grow without touching each other.

The root command knows each command's name, module and one-line help from `COMMANDS`, and imports
a command's module only when that command runs or its --help is asked: `forgetless --help` lists
every command without importing any box, and `forgetless finetune --help` imports the training
box's commands and configs only, which import no torch (tests/test_cli_light.py checks both, and
that `COMMANDS` matches what the modules register).
"""

from __future__ import annotations

import difflib
import importlib
import sys
import warnings

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from forgetless.errors import UserError, one_line

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as _cx


def _say(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


_python_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """forgetless's own warnings (a study outside the paper's regime, an old field name) as one
    'warning: ...' line; warnings of other libraries as Python prints them."""
    if category.__module__.startswith("forgetless"):
        return f"warning: {one_line(str(message))}\n"
    return _python_format(message, category, filename, lineno, line)


# name -> (the module whose register(app) adds it, its one-line help), in the order
# `forgetless --help` lists them: along the pipeline, as the boxes of docs/ARCHITECTURE.md.
COMMANDS: dict[str, tuple[str, str]] = {
    "optimizers": ("forgetless.optim.commands", "List the optimizer family (norm, LMO, what it "
                   "regularises), or describe one member."),
    "data": ("forgetless.data.commands", "Corpora, tokenizers, token shards and finetuning tasks."),
    "pretrain": ("forgetless.train.commands", "Pretrain a model preset from scratch with any "
                 "optimizer, tracking validation loss."),
    "finetune": ("forgetless.train.commands", "Finetune a base model (full or LoRA) on a task, "
                 "measuring forgetting and learning as it goes."),
    "consolidate": ("forgetless.train.commands", "Join a sharded (FSDP2) checkpoint into a plain "
                    "Hugging Face checkpoint (model.safetensors)."),
    "convert": ("forgetless.models.commands", "Dequantise a GGUF file into a Hugging Face checkpoint "
                "that every other command reads."),
    "sweep": ("forgetless.sweep.commands", "Run (or resume) every cell of a study; safe to "
              "interrupt and to run twice at once."),
    "status": ("forgetless.sweep.commands", "Every cell of a study: done / pruned / running / pending / "
               "diverged / failed, with its error."),
    "frontier": ("forgetless.sweep.commands", "Pareto frontiers per (base, task): tables, and a "
                 "figure like the paper's Figures 2, 3, 6."),
    "export": ("forgetless.sweep.commands", "Every eval point of a study (with its run's method, "
               "lr, base and task) as CSV or parquet."),
    "spectrum": ("forgetless.analysis.commands", "Stable rank, effective rank and singular-value "
                 "density per module kind (paper Table 2)."),
    "activations": ("forgetless.analysis.commands", "Sparsity of every linear layer's input and "
                    "output activations (paper Figs. 4, 5, 10, 11)."),
    "fingerprint": ("forgetless.analysis.fingerprint_cli", "Infer the optimizer family that "
                    "pretrained a checkpoint, from its weights (fast), or also its activations "
                    '(--activations); "unknown" when it is unlike every reference.'),
    "memorization": ("forgetless.analysis.commands", "The memorisation test (paper §4.2): exact "
                     "match on clean vs corrupted blocks over training."),
    "reproduce": ("forgetless.report.commands", "Run the paper's study end to end and write "
                  "report.html / report.md with a verdict per claim."),
    "compare": ("forgetless.report.compare_commands", "Every forgetting remedy (optimizer, LoRA, "
                "lr, replay, L2-SP, WiSE-FT) on one frontier per base and task: figures, the "
                "Δ-view with each remedy's extra cost, pairwise dominance decided over pretraining "
                "seeds (finetuning seeds for run directories), and which remedy to use."),
    "recommend": ("forgetless.recommend.commands", "Which optimizer and learning rates to finetune "
                  "MODEL with, and why."),
}


def _suggest_option(err) -> None:
    """'No such option: --learning_rate' names the option meant (--lr): our flags by their field
    names, with underscores for dashes and Hugging Face Trainer names mapped (errors.nearest)."""
    from forgetless.errors import nearest

    flags = {p.name: p.opts[0] for p in err.ctx.command.params if getattr(p, "opts", None)
             and p.opts[0].startswith("--")}
    near = nearest(err.option_name, flags)
    if near is not None:
        err.message = f"No such option: {err.option_name}; did you mean {flags[near]}?"
        err.possibilities = []  # click would list its own guesses after ours


def load_commands(module: str) -> dict[str, TyperCommand | TyperGroup]:
    """The commands `module`'s register(app) adds, by name (imports the module)."""
    sub = typer.Typer()
    importlib.import_module(module).register(sub)
    return dict(typer.main.get_group(sub).commands)


class _Main(TyperGroup):
    """The root command: a user error (forgetless.errors.UserError, or a usage error) prints one
    line on stderr and exits with code 2; any other exception keeps its traceback, since it is a
    bug. Done here, not in main(), so `forgetless` and typer's CliRunner behave alike.

    Its commands load lazily: listing them (the root --help) reads `COMMANDS`; resolving one
    (to run it, or show its --help) imports its module."""

    _listing = False  # True while the root --help is drawn: commands are listed, not loaded

    def list_commands(self, ctx) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, short_help = COMMANDS[cmd_name]
            if self._listing:  # a stand-in that carries the name and the help line only
                return TyperCommand(cmd_name, short_help=short_help, help=short_help)
            for name, command in load_commands(module).items():
                self.commands.setdefault(name, command)
        return self.commands.get(cmd_name)

    def format_help(self, ctx, formatter) -> None:
        self._listing = True
        try:
            return super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except _cx.UsageError as err:  # typer suggests from loaded commands only: suggest from all
            close = difflib.get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if close and "Did you mean" not in err.message:
                err.message = f"{err.message.rstrip('.')}. Did you mean {', '.join(map(repr, close))}?"
            raise

    def invoke(self, ctx):
        warnings.formatwarning = _format_warning
        try:
            return super().invoke(ctx)
        except UserError as err:
            _say(one_line(err))
            raise typer.Exit(2) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _cx.NoArgsIsHelpError as err:  # `forgetless` alone: the help page
            from typer import rich_utils

            rich_utils.rich_format_error(err)
            sys.exit(err.exit_code)
        except _cx.UsageError as err:  # a bad option or argument: one line, not a usage panel
            where = err.ctx.command_path if err.ctx is not None else "forgetless"
            if isinstance(err, _cx.NoSuchOption) and err.ctx is not None:
                _suggest_option(err)
            _say(f"{where}: {one_line(err.format_message())} (see {where} --help)")
            sys.exit(2)
        except _cx.ClickException as err:
            _say(one_line(err.format_message()))
            sys.exit(err.exit_code)
        except (typer.Abort, getattr(_cx, "Abort", typer.Abort)):
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_Main,
    name="forgetless",
    help="Finetune language models with the optimizer that pretrained them, and measure what the "
    "finetune forgot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

@app.callback()
def _root() -> None:
    """Finetune language models with the optimizer that pretrained them, and measure what the
    finetune forgot."""



def main() -> None:
    app()


if __name__ == "__main__":
    main()
