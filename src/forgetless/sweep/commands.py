"""`forgetless sweep | status | frontier | export`: a study from YAML file or preset to figures."""

from __future__ import annotations

from pathlib import Path

import typer

from forgetless.errors import UserError
from forgetless.sweep.study import preset_names

STUDY_HELP = f"a study YAML file, or a preset: {', '.join(preset_names())}"
OUT_HELP = "sweep directory (default: the study's out_dir, else runs/<name>)"
STALE = "stale (runner gone)"
STALE_AFTER = 600.0  # seconds without a heartbeat after which a runner on another host counts as gone


def _load(study: str):
    from forgetless.sweep.study import load_study

    return load_study(study)  # StudyError is a UserError: one line, exit code 2 (forgetless.cli)


def _root(st, out: Path | None) -> Path:
    return Path(out) if out else st.resolved_out_dir()


def _open_store(st, out: Path | None):
    from forgetless.sweep.runner import STORE_NAME
    from forgetless.sweep.store import Store

    path = _root(st, out) / STORE_NAME
    if not path.exists():
        typer.echo(f"{path}: no results yet; run `forgetless sweep` on this study first", err=True)
        raise typer.Exit(1)
    return Store(path, readonly=True)  # StoreError, StoreVersionError: user errors (one line, exit code 2)


def sweep_cmd(
    study: str = typer.Argument(..., help=STUDY_HELP),
    workers: int = typer.Option(None, "--workers", "-w", min=0,
                                help="cells run at once, each in its own process with cores // N torch threads "
                                     "(default: one per GPU, or one per CPU core; 0: in this process); with "
                                     "--backend ray: cells submitted at once (default: what the cluster holds)"),
    out: Path = typer.Option(None, "--out", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="the overall progress bar"),
    backend: str = typer.Option("local", "--backend",
                                help="where cells run: local (a process pool on this machine) or ray "
                                     "(Ray tasks; needs pip install 'forgetless[ray]')"),
    ray_address: str = typer.Option(None, "--ray-address",
                                    help="Ray cluster to submit to, e.g. HEAD:6379 or auto, from a node of it "
                                         "(default: $RAY_ADDRESS, else a local Ray instance)"),
    gpus_per_cell: float = typer.Option(None, "--gpus-per-cell", min=0,
                                        help="GPUs each cell needs with --backend ray; fractions share a GPU "
                                             "(default: 1 when the cluster has GPUs, else 0)"),
    cpus_per_cell: float = typer.Option(1.0, "--cpus-per-cell", min=0,
                                        help="CPUs (= torch threads) each cell needs with --backend ray"),
    prune: bool = typer.Option(False, "--prune",
                               help="stop a finetune whose points, after --prune-warmup evaluations, are all "
                                    "dominated (by more than the verdicts' 0.02-nat margin) by the frontier of "
                                    "the finished runs of the same base, task and method; its points stay, "
                                    "marked pruned (local backend)"),
    prune_warmup: int = typer.Option(None, "--prune-warmup", min=1,
                                     help="evaluations after step 0 before --prune may stop a run (default 2)"),
) -> None:
    """Run (or resume) every cell of a study; safe to interrupt and to run twice at once."""
    from forgetless.sweep.runner import BACKENDS, run_sweep
    from forgetless.sweep.study import StudyError

    if backend not in BACKENDS:
        typer.echo(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}", err=True)
        raise typer.Exit(2)
    if backend == "local" and (ray_address or gpus_per_cell is not None or cpus_per_cell != 1.0):
        typer.echo("--ray-address, --gpus-per-cell and --cpus-per-cell need --backend ray", err=True)
        raise typer.Exit(2)
    if prune and backend != "local":
        typer.echo("--prune works with --backend local only (Ray tasks do not read the store)", err=True)
        raise typer.Exit(2)
    if prune_warmup is not None and not prune:
        typer.echo("--prune-warmup needs --prune", err=True)
        raise typer.Exit(2)
    rule = None
    if prune:
        from forgetless.sweep.prune import PRUNE_WARMUP, PruneRule

        rule = PruneRule(warmup=prune_warmup or PRUNE_WARMUP)
    st = _load(study)
    refused: tuple = (StudyError,)  # errors a user can fix: said in one line, exit code 2
    if backend == "ray":
        from forgetless.sweep.ray_backend import RayBackend, RayBackendError

        refused += (RayBackendError,)
        try:
            runner_backend = RayBackend(address=ray_address, gpus_per_cell=gpus_per_cell,
                                        cpus_per_cell=cpus_per_cell, max_in_flight=workers or None)
        except (RayBackendError, ValueError) as err:
            raise UserError(str(err)) from None
        typer.echo(f"study {st.name}: {_root(st, out)} on Ray")
        n = 0
    else:
        from forgetless.sweep.runner import LocalBackend, default_workers

        n = default_workers() if workers is None else workers
        runner_backend = LocalBackend(n)
        typer.echo(f"study {st.name}: {_root(st, out)} with {n} worker(s)")
    try:
        counts = run_sweep(st, workers=n, out_dir=out, progress=progress, backend=runner_backend, prune=rule)
    except refused as err:
        raise UserError(str(err)) from None
    typer.echo("finished: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if counts.get("failed"):
        typer.echo(f"some cells failed; see `forgetless status {study}`", err=True)
        raise typer.Exit(1)


def status_cmd(
    study: str = typer.Argument(..., help=STUDY_HELP),
    out: Path = typer.Option(None, "--out", help=OUT_HELP),
    errors: bool = typer.Option(False, "--errors", help="print the whole error text of failed cells"),
) -> None:
    """Every cell of a study: done / pruned / running / pending / diverged / failed, with its error."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from forgetless.sweep.runner import STORE_NAME
    from forgetless.sweep.store import Store, owner_gone
    from forgetless.sweep.study import expand

    st = _load(study)
    cells = expand(st)
    path = _root(st, out) / STORE_NAME
    rows, last = {}, {}
    if out is not None and not path.exists():  # a wrong --out would show every cell pending
        raise UserError(f"--out {out}: no results store there ({path} does not exist); give the sweep's directory")
    if path.exists():
        with Store(path, readonly=True) as store:
            rows = store.runs_by_id()
            for r in store.db.execute("SELECT run_id, MAX(step), COUNT(*) FROM points GROUP BY run_id"):
                last[r[0]] = (r[1], r[2])
    table = Table("status", "cell", "id", "tries", "last step", "points", "error", title=f"study {st.name}")
    colour = {"done": "green", "pruned": "blue", "running": "cyan", "pending": "white", "diverged": "yellow", "failed": "red",
              STALE: "magenta"}
    counts: dict[str, int] = {}
    console = Console()
    for c in cells:
        r = rows.get(c.cell_id, {})
        status = r.get("status", "pending")
        if status == "running" and owner_gone(r.get("owner"), r.get("heartbeat"), STALE_AFTER):
            status = STALE  # killed runner: the next `forgetless sweep` resumes the cell
        pruned = (r.get("meta") or {}).get("pruned")  # done, stopped early by sweep --prune
        if pruned:
            status = "pruned"
        counts[status] = counts.get(status, 0) + 1
        step, npts = last.get(c.cell_id, ("", ""))
        err = (r.get("error") or pruned or "").splitlines()
        table.add_row(f"[{colour[status]}]{status}", escape(c.label), c.cell_id, str(r.get("attempts", 0)),
                      str(step), str(npts), escape(err[0]) if err else "")  # labels are the user's text
    console.print(table)
    console.print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f" of {len(cells)} cells")
    if errors:
        for c in cells:
            r = rows.get(c.cell_id, {})
            if r.get("error"):
                console.rule(c.label)
                console.print(r["error"], markup=False)


def frontier_cmd(
    study: str = typer.Argument(..., help=STUDY_HELP),
    eps: float = typer.Option(0.01, "--eps", min=0, help="robust-frontier margin on the forgetting axis (paper A.1)"),
    eps_learning: float = typer.Option(None, "--eps-learning", min=0, help="margin on the learning axis (default: --eps)"),
    metric: str = typer.Option(None, "--metric", help="learning axis: loss, or accuracy (where measured); "
                                                       "the older spelling of --y learning|accuracy"),
    x: str = typer.Option("forgetting", "--x", help="forgetting axis, a forgetting metric of forgetless.metrics "
                                                    "(forgetting, kl_to_base, forgetting_delta)"),
    y: str = typer.Option("learning", "--y", help="learning axis: learning (task loss) or accuracy"),
    reference: str = typer.Option(None, "--reference", help="hypervolume reference 'forgetting,learning' "
                                                            "(default: the worst value of each axis in the panel)"),
    best_lr: bool = typer.Option(False, "--best-lr", help="draw only each method's best learning rate (paper B.1)"),
    fig: Path = typer.Option(None, "--out", help="figure file (default: <sweep dir>/frontier.png)"),
    sweep_dir: Path = typer.Option(None, "--dir", help=OUT_HELP),
) -> None:
    """Pareto frontiers per (base, task): tables, and a figure like the paper's Figures 2, 3, 6."""
    from forgetless.analysis import frontier as fr

    if metric is not None and metric not in ("loss", "accuracy"):
        typer.echo(f"--metric must be loss or accuracy; got {metric!r}", err=True)
        raise typer.Exit(2)
    x, y = fr.axes(x, y, metric)  # a UserError naming the declared metrics
    ref = None
    if reference:
        try:
            ref = [float(v) for v in reference.split(",")]
            assert len(ref) == 2 and all(abs(v) < float("inf") for v in ref)  # nan fails this too
        except (ValueError, AssertionError):
            typer.echo(f"--reference must be two finite numbers 'forgetting,learning'; got {reference!r}", err=True)
            raise typer.Exit(2) from None
    st = _load(study)
    with _open_store(st, sweep_dir) as store:
        pts = store.eval_points(study=st.name)
    pans = fr.panels(pts, x=x, y=y)
    if not pans:
        typer.echo(f"no finetuning points with {x} and {y} yet; see `forgetless status {study}`", err=True)
        raise typer.Exit(1)
    eps_pair = (eps, eps if eps_learning is None else eps_learning)
    sums = [fr.summarize(p, eps_pair, ref) for p in pans]
    for p, s in zip(pans, sums, strict=True):
        fr.print_tables(p, s)
    path = fr.plot(pans, sums, fig or _root(st, sweep_dir) / "frontier.png", best_lr_only=best_lr)
    typer.echo(f"figure: {path}")


def export_cmd(
    study: str = typer.Argument(..., help=STUDY_HELP),
    csv: Path = typer.Option(None, "--csv", help="write every eval point to this CSV file"),
    parquet: Path = typer.Option(None, "--parquet", help="... or to this parquet file (needs pandas + pyarrow)"),
    sweep_dir: Path = typer.Option(None, "--dir", help=OUT_HELP),
) -> None:
    """Every eval point of a study (with its run's method, lr, base and task) as CSV or parquet."""
    if csv is None and parquet is None:
        typer.echo("give --csv FILE and/or --parquet FILE", err=True)
        raise typer.Exit(2)
    from forgetless.sweep.export import export_csv, export_parquet

    st = _load(study)
    with _open_store(st, sweep_dir) as store:
        if csv is not None:
            try:
                n = export_csv(store, csv, study=st.name)
            except OSError as err:
                raise UserError(f"--csv {csv}: cannot write ({err.strerror or err}); choose a writable "
                                "path") from None
            typer.echo(f"{n} points -> {csv}")
        if parquet is not None:
            try:
                typer.echo(f"{export_parquet(store, parquet, study=st.name)} points -> {parquet}")
            except RuntimeError as err:
                typer.echo(str(err), err=True)
                raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
    app.command("status")(status_cmd)
    app.command("frontier")(frontier_cmd)
    app.command("export")(export_cmd)
