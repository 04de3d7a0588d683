"""`forgetless compare RUN_OR_STUDY`: every forgetting remedy of a study on one frontier."""

from __future__ import annotations

from pathlib import Path

import typer

from forgetless.errors import UserError


class CompareError(UserError, ValueError):
    """Nothing to compare at the given place; the message says what was looked for."""


def _store_and_study(target: str, sweep_dir: Path | None):
    """(store, study name or None, default output folder) of a study (preset, file) or of a
    sweep directory holding a results store."""
    from forgetless.sweep.runner import STORE_NAME
    from forgetless.sweep.store import Store

    path = Path(target)
    if path.is_dir() and (path / "metrics.jsonl").is_file() and (path / "config.yaml").is_file():
        return None, None, path  # one finetune run directory
    if path.is_dir() and (path / STORE_NAME).is_file() and sweep_dir is None:
        store = Store(path / STORE_NAME, readonly=True)
        studies = store.studies()
        return store, studies[0] if len(studies) == 1 else None, path
    from forgetless.sweep.study import load_study

    study = load_study(target)
    root = Path(sweep_dir) if sweep_dir else study.resolved_out_dir()
    if not (root / STORE_NAME).is_file():
        raise CompareError(f"{root / STORE_NAME}: no results yet; run `forgetless sweep {target}` first")
    return Store(root / STORE_NAME, readonly=True), study.name, root


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        target: str = typer.Argument(..., metavar="RUN_OR_STUDY",
                                     help="a study (preset name or YAML file), a sweep directory with results.sqlite, or one finetune run directory"),
        sweep_dir: Path = typer.Option(None, "--dir", help="sweep directory of the study (default: its out_dir, else runs/<name>)"),
        out: Path = typer.Option(None, "--out", help="folder for compare.md and the figures (default: <sweep dir>/compare)"),
    ) -> None:
        """Every forgetting remedy (optimizer, LoRA, lr, replay, L2-SP, WiSE-FT) on one frontier per base
        and task: figures, the Δ-view with each remedy's extra cost, pairwise dominance decided over
        pretraining seeds, and which remedy to use."""
        from forgetless.report.compare import rows_from_run, rows_from_store, run_compare

        store, study, root = _store_and_study(target, sweep_dir)
        if store is None:
            rows = rows_from_run(root)
        else:
            with store:
                rows = rows_from_store(store, study)
        from forgetless.errors import writable_dir

        results, md = run_compare(rows, writable_dir(out or root / "compare", "--out"))
        if not results:
            raise CompareError(f"{target}: no finetuning points yet; see `forgetless status {target}`")
        for pc in results:
            typer.echo(pc.answer)
        typer.echo(f"tables and figures: {md}")
