"""`forgetless optimizers [NAME] [--json]`: the optimizer family, read from the registry."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table


# The registry is imported when the command runs (its rules' LMOs are torch functions), so
# `forgetless optimizers --help` costs no torch; listing it costs torch and nothing heavier.
def _show_all(as_json: bool) -> None:
    from .registry import OPTIMIZERS

    if as_json:
        typer.echo(json.dumps([info.to_dict() for info in OPTIMIZERS.values()], indent=2))
        return
    table = Table(title="The optimizer family: steepest descent under ||W||_{p->q}")
    for column in ("name", "family", "norm", "regularises input", "regularises output"):
        table.add_column(column)
    for info in OPTIMIZERS.values():
        table.add_row(info.name, info.family, info.norm, info.regularises_input,
                      info.regularises_output)
    Console().print(table)
    typer.echo("Same family = same (p, q). Embeddings, output head, norms and biases are trained "
               "with AdamW by every member (configurable in forgetless.optim.build). "
               "`forgetless optimizers NAME` shows the LMO and the reference.")


def _show_one(name: str, as_json: bool) -> None:
    from .registry import OPTIMIZERS, describe

    try:
        info = describe(name)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="NAME") from err
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
        return
    same = [n for n, other in OPTIMIZERS.items() if other.family == info.family and n != name]
    for label, value in [
        ("name", info.name), ("family", info.family), ("norm", f"{info.norm_symbol}: {info.norm}"),
        ("lmo", info.lmo), ("regularises", info.regularises),
        ("element-wise", "yes" if info.element_wise else "no (2-D matrices only)"),
        ("same family", ", ".join(same) or "-"), ("reference", info.reference),
    ]:
        typer.echo(f"{label:>13}: {value}")


def register(app: typer.Typer) -> None:
    @app.command("optimizers")
    def optimizers(
        name: str | None = typer.Argument(None, help="Describe one member (e.g. muon)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List the optimizer family (norm, LMO, what it regularises), or describe one member."""
        if name is None:
            _show_all(as_json)
        else:
            _show_one(name, as_json)
