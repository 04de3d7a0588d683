"""`forgetless compare RUN_OR_STUDY...`: every forgetting remedy of a study, or several finetune run
directories, on one frontier."""

from __future__ import annotations

import os
import re
from pathlib import Path

import typer

from forgetless.errors import UserError
from forgetless.metrics import X_DEFAULT


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


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "metrics.jsonl").is_file() and (path / "config.yaml").is_file()


def runs_rows(targets: list[str]) -> tuple[list[dict], Path]:
    """Rows of several finetune run directories, each its own remedy (named by its folder), and the
    default output folder beside them (runs/ft-full runs/ft-lora -> runs/compare)."""
    from forgetless.report.compare import rows_from_run

    paths = [Path(t) for t in targets]
    bad = [str(p) for p in paths if not is_run_dir(p)]
    if bad:
        raise CompareError(f"{', '.join(bad)}: not a finetune run directory (config.yaml and metrics.jsonl); "
                           "several targets are compared as run directories, a study is compared alone")
    if len({p.resolve() for p in paths}) < len(paths):
        raise CompareError(f"{', '.join(targets)}: a run directory is named twice")
    names = [p.name for p in paths]
    names = names if len(set(names)) == len(names) else [str(p) for p in paths]  # two runs/*/ft: full paths
    # Runs whose settings differ only in the seed are one remedy at several finetuning seeds (the
    # units its comparisons are decided over), named by what their names share (full-s0, full-s1: full).
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(_settings(p), []).append(i)
    labels = [""] * len(paths)
    for members in groups.values():
        shared = re.sub(r"[-_.]*(seed|s)?$", "", os.path.commonprefix([names[i] for i in members]))
        for i in members:
            labels[i] = shared if len(members) > 1 and shared else names[members[0]]
    rows = [row for p, label in zip(paths, labels, strict=True) for row in rows_from_run(p, label)]
    return rows, paths[0].resolve().parent


# Config fields that do not make a run another remedy: where it ran, how it printed, its seed.
NOT_THE_REMEDY = {"seed", "out_dir", "resume", "progress", "console", "threads", "device", "trackers"}


def _settings(path: Path) -> str:
    import json

    from forgetless.untrusted import load_yaml

    config = load_yaml((path / "config.yaml").read_text(errors="replace")) or {}
    if not isinstance(config, dict):
        raise CompareError(f"{path / 'config.yaml'}: not a run config")
    return json.dumps({k: v for k, v in config.items() if k not in NOT_THE_REMEDY}, sort_keys=True, default=str)


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        targets: list[str] = typer.Argument(..., metavar="RUN_OR_STUDY",
                                            help="a study (preset name or YAML file), a sweep directory with "
                                                 "results.sqlite, or one or more finetune run directories "
                                                 "(each its own remedy on one figure)"),
        sweep_dir: Path = typer.Option(None, "--dir", help="sweep directory of the study (default: its out_dir, else runs/<name>)"),
        out: Path = typer.Option(None, "--out", help="folder for compare.md and the figures (default: <sweep dir>/compare)"),
        x: str = typer.Option(X_DEFAULT, "--x", help="forgetting axis, a forgetting metric of forgetless.metrics "
                                                        "(forgetting, kl_to_base, forgetting_delta)"),
    ) -> None:
        """Every forgetting remedy (optimizer, LoRA, lr, replay, L2-SP, WiSE-FT) on one frontier per base
        and task: figures, the Δ-view with each remedy's extra cost, pairwise dominance decided over
        pretraining seeds (finetuning seeds for run directories), and which remedy to use.

        Example: forgetless compare runs/ft-full runs/ft-lora"""
        from forgetless.metrics import FORGETTING, metric
        from forgetless.report.compare import rows_from_run, rows_from_store, run_compare

        x = metric(x, FORGETTING).name  # a UserError naming the allowed ones; learning stays the task loss
        target = " ".join(targets)
        if len(targets) > 1:
            rows, root = runs_rows(targets)
        else:
            store, study, root = _store_and_study(targets[0], sweep_dir)
            if store is None:
                rows = rows_from_run(root)
            else:
                with store:
                    rows = rows_from_store(store, study)
        from forgetless.errors import writable_dir

        results, md = run_compare(rows, writable_dir(out or root / "compare", "--out"), x=x)
        if not results:
            raise CompareError(f"{target}: no finetuning points yet; see `forgetless status {target}`")
        for pc in results:
            typer.echo(pc.answer)
        typer.echo(f"tables and figures: {md}")
