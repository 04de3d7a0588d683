"""`forgetless recommend MODEL_OR_PATH`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command()
    def recommend(
        model: str = typer.Argument(..., help="A checkpoint folder or a Hugging Face model name."),
        task: str = typer.Option(
            None, help="What the finetune teaches: instruction, reasoning, code, other, or a task "
            "name (arith, instruct, code, alpaca, metamathqa, magicoder)."
        ),
        optimizer: str = typer.Option(
            None, help="Pin the finetuning optimizer; advice then covers the cross-family case."
        ),
        infer: bool = typer.Option(
            False, "--infer", help="Ask the weight/activation fingerprint even when provenance is known."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the recommendation as JSON."),
    ) -> None:
        """Which optimizer and learning rates to finetune MODEL with, and why."""
        from forgetless.models import resolve_checkpoint
        from forgetless.recommend.advise import recommend as advise

        # A path that does not exist is "no such checkpoint" (never a hub lookup), and damaged
        # weights are named before any advice (UserError: one line, exit code 2).
        resolve_checkpoint(model)
        try:
            rec = advise(model, task=task, optimizer=optimizer, infer=infer)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        if as_json:
            print(rec.to_json())
            return
        console = Console()
        table = Table(show_header=False, box=None)
        table.add_row("answer", rec.summary)  # e.g. "adamw (the checkpoint's weights look Adam-like, p = 0.97)"
        known = rec.pretrain_optimizer or "unknown"
        if rec.how_known == "provenance":
            known += f" ({rec.provenance_status} provenance)"
        elif rec.how_known == "fingerprint":
            known += " (fingerprint)"
        table.add_row("pretrained with", known)
        table.add_row("family", rec.family or "unknown")
        for d in rec.evidence:  # the fingerprint's deciding features, with each group's reference range
            ranges = ", ".join(f"{g} {lo:.3g}..{hi:.3g}" for g, (lo, hi) in d["ranges"].items())
            table.add_row("evidence", f"{d['feature']} = {d['value']:.3g} ({ranges})")  # no [ ]: rich markup
        table.add_row("finetune with", f"forgetless finetune ... --method full --optimizer {rec.optimizer}")
        table.add_row("lr sweep", ", ".join(f"{lr:g}" for lr in rec.lr_grid))
        table.add_row("LoRA lr sweep", ", ".join(f"{lr:g}" for lr in rec.lora_lr_grid) + " (if you must)")
        table.add_row("weight decay", f"{rec.weight_decay:g}")
        console.print(table)
        console.print("[bold]Why[/bold]")
        for line in rec.reasoning:
            console.print(f"  - {line}")
        for line in rec.cautions:
            console.print(f"  [yellow]! {line}[/yellow]")
        console.print("[bold]Sources[/bold]")
        for line in rec.sources:
            console.print(f"  - {line}")
