"""The `forgetless` command line.

Each box of the pipeline keeps its own commands in `forgetless/<box>/commands.py`, which defines
`register(app)`; this file only assembles them, so boxes can grow without touching each other.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import typer
from typer.core import TyperGroup

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


class _Main(TyperGroup):
    """The root command: a user error (forgetless.errors.UserError, or a usage error) prints one
    line on stderr and exits with code 2; any other exception keeps its traceback, since it is a
    bug. Done here, not in main(), so `forgetless` and typer's CliRunner behave alike."""

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


# Left to right along the pipeline; a box without commands yet is skipped.
_BOXES = ("optim", "data", "models", "train", "sweep", "analysis", "report", "recommend")


def _register_all() -> None:
    for box in _BOXES:
        try:
            module = importlib.import_module(f"forgetless.{box}.commands")
        except ModuleNotFoundError as err:
            if err.name == f"forgetless.{box}.commands":
                continue
            raise
        module.register(app)


_register_all()
importlib.import_module("forgetless.report.compare_commands").register(app)  # forgetless compare


def main() -> None:
    app()


if __name__ == "__main__":
    main()
