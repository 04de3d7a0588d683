"""`forgetless reproduce`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

_COLOURS = {"holds": "green", "does not hold": "red", "inconclusive": "yellow", "not measured": "dim",
            "partial": "cyan"}


def register(app: typer.Typer) -> None:
    @app.command()
    def reproduce(
        preset: str = typer.Option("quick", "--preset", help="quick (CPU, ≤10 min), cpu-full (CPU, "
                                   "~1 h), convergence (CPU, ~1 h: claim 2 at four pretraining budgets), "
                                   "gpt2 or llama2-7b (GPU machines), or a study YAML file."),
        seeds: int = typer.Option(None, "--seeds", min=1, help="pretraining seeds per base "
                                  "(default: the preset's); more seeds measure the verdicts' noise."),
        workers: int = typer.Option(None, "--workers", min=0, help="finetunes run at once (default: "
                                    "by the machine)"),
        out: Path = typer.Option(None, "--out", help="sweep and report folder (default runs/<study>)"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    ) -> None:
        """Run the paper's study end to end and write report.html / report.md with a verdict per claim."""
        from forgetless.report.reproduce import PRESETS
        from forgetless.report.reproduce import reproduce as run
        from forgetless.sweep.study import StudyError

        if preset not in PRESETS and not Path(preset).is_file():
            raise typer.BadParameter(f"{preset!r} is neither a preset ({', '.join(PRESETS)}) nor a "
                                     "study file", param_hint="--preset")
        console = Console()
        try:
            result = run(preset, seeds=seeds, workers=workers, out_dir=out, progress=not quiet,
                         log=console.print)
        except StudyError as err:
            raise typer.BadParameter(str(err), param_hint="--preset") from None
        from rich.markup import escape

        from forgetless.report.document import verdict_lines

        table = Table("claim", "statement", "verdict", escape("effect [95% interval]"), "units", title="Verdicts")
        for claim, statement, status, interval, units, role in verdict_lines(result.verdicts):
            table.add_row(claim, escape(statement if role == "claim" else f"{statement} ({role})"),
                          f"[{_COLOURS.get(status, 'white')}]{status}[/]", escape(interval), units)
        console.print(table)
        console.print(f"report: {result.report_html}  (and {result.report_md.name}); "
                      f"{result.seconds:.0f} s")
