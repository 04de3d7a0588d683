"""The `forgetless` command line.

Each box of the pipeline keeps its own commands in `forgetless/<box>/commands.py`, which defines
`register(app)`; this file only assembles them, so boxes can grow without touching each other.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
