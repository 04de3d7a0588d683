"""CLI: `forgetless fingerprint` (see docs/analysis.md, "Optimizer fingerprint").

    forgetless fingerprint runs/muon-micro                 # weights only, the fast path
    forgetless fingerprint runs/muon-micro --activations   # + a <= 16k-token activation sample
    forgetless fingerprint runs/muon-micro --json
    forgetless fingerprint --calibration                   # held-out accuracies, confusion matrix
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
MAX_TOKENS = 16384


def _ints(text: str, hint: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError as err:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint=hint) from err


def _floats(text: str, hint: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as err:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=hint) from err


def register(app: typer.Typer) -> None:
    @app.command("fingerprint")
    def fingerprint_cmd(
        checkpoints: list[str] = typer.Argument(None, help="Checkpoints whose optimizer to infer."),
        reference: Path | None = typer.Option(None, help="Reference file (default: the shipped one)."),
        activations: bool = typer.Option(False, "--activations", help="Also activation features, from a "
                                         "token sample in the checkpoint's own tokenizer (slower)."),
        no_activations: bool = typer.Option(False, "--no-activations", help="Weights only (the default).",
                                            hidden=True),
        corpus: str = typer.Option("stdlib", help="Corpus of the activation token sample."),
        tokens: int | None = typer.Option(None, min=1, max=MAX_TOKENS, help="Token budget of the activation "
                                          "sample (default: the references', 4096)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
        calibration: bool = typer.Option(False, "--calibration", help="Show the calibration set and its "
                                         "held-out accuracies."),
        calibrate: bool = typer.Option(False, "--calibrate", help="Pretrain references and fit a new file (--out)."),
        out: Path | None = typer.Option(None, help="With --calibrate: the reference file to write."),
        runs_dir: Path | None = typer.Option(None, help="With --calibrate: where reference runs go."),
        presets: str = typer.Option("nano,micro", help="With --calibrate: model presets."),
        optimizers: str = typer.Option("adamw,signsgd,muon,coltop1,rowtop1", help="With --calibrate: optimizers."),
        steps: str = typer.Option("80,240", help="With --calibrate: training lengths (steps)."),
        seeds: str = typer.Option("0,1", help="With --calibrate: seeds (paired with --lrs)."),
        lrs: str = typer.Option("3e-3,1e-3", help="With --calibrate: learning rates."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    ) -> None:
        """Infer the optimizer family that pretrained a checkpoint, from its weights (fast), or
        also its activations (--activations); "unknown" when it is unlike every reference."""
        from forgetless.train.runtime import pick_device

        from . import fingerprint as fp

        where = str(pick_device(device))  # a bad --device fails before any work
        if calibrate:
            from .calibration import grid, run_calibration

            if out is None:
                raise typer.BadParameter("--calibrate needs --out PATH for the reference file", param_hint="--out")
            specs = grid(presets.split(","), optimizers.split(","), _ints(steps, "--steps"),
                         _ints(seeds, "--seeds"), _floats(lrs, "--lrs"))
            run_calibration(out, runs_dir or out.with_suffix("").with_name(out.stem + "-runs"), specs,
                            activations=True, device=device, log=typer.echo)
            calibration, reference = True, out
        if not checkpoints and not calibration:
            raise typer.BadParameter("give CHECKPOINTS, --calibration or --calibrate", param_hint="CHECKPOINTS")
        doc: dict = {}
        if calibration:
            refs, _ = fp.load_references(reference)
            doc["calibration"] = {"n_references": len(refs), "evaluation": fp.evaluate(refs)}
            if not as_json:
                _show_calibration(refs, doc["calibration"]["evaluation"])
        results = []
        for ckpt in checkpoints or []:
            start = time.perf_counter()
            try:
                pred = fp.fingerprint_checkpoint(ckpt, corpus, reference, activations=activations and not no_activations,
                                                 device=where, tokens=tokens)
            except (OSError, ValueError) as err:
                raise typer.BadParameter(f"cannot load {ckpt!r}: {err}", param_hint="CHECKPOINTS") from err
            seconds = time.perf_counter() - start
            results.append({"checkpoint": ckpt, "seconds": round(seconds, 2), **pred.to_dict()})
            if not as_json:
                _show_prediction(ckpt, pred, seconds)
        if checkpoints:
            doc["checkpoints"] = results
        if as_json:
            typer.echo(json.dumps(doc, indent=1, allow_nan=True))


def _show_prediction(ckpt: str, pred, seconds: float) -> None:
    head = f"{ckpt}: [{pred.feature_set} features, {seconds:.1f} s] "
    if pred.groups is None:  # out of the references' range, or untrained: no probabilities
        typer.echo(head + "unknown: unlike every reference checkpoint, so no optimizer group is claimed.")
        from .fingerprint import TRAINED_FEATURE

        for o in pred.out_of_range[:5]:
            if o["feature"] == TRAINED_FEATURE:
                typer.echo(f"  {o['feature']} = {o['value']:.3g}, under a quarter of the least-trained reference's "
                           f"{o['lo']:.3g}: untrained (norm gains still at their initial 1)")
                continue
            side = "below" if o["value"] < o["lo"] else "above"
            typer.echo(f"  {o['feature']} = {o['value']:.4g}, {side} the references' range "
                       f"{o['lo']:.4g}..{o['hi']:.4g} by {o['excess_sigma']:.1f} σ "
                       f"(unknown beyond {pred.range_limit:.1f} σ)")
        if pred.distance > pred.unknown_distance:
            typer.echo(f"  distance to the nearest family ({pred.nearest}) {pred.distance:.2f}, "
                       f"beyond the {pred.unknown_distance:.2f} any held-out reference reached")
        return
    from .fingerprint_model import CONFIDENCE, GROUP_LABELS

    def groups(ps: dict) -> str:
        return ", ".join(f"{GROUP_LABELS.get(g, g)} {p:.2f}" for g, p in sorted(ps.items(), key=lambda x: -x[1]))

    if pred.headline == "unknown":
        typer.echo(head + f"unknown: no optimizer group reaches p = {CONFIDENCE:g} ({groups(pred.groups)})")
    else:
        typer.echo(head + f"{pred.label}, p = {pred.probability:.2f}")
    typer.echo(f"  with the prior for public checkpoints: {groups(pred.groups)}")
    typer.echo(f"  without it (every group alike):        {groups(pred.groups_without_prior)}")
    def shares(ps: dict) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in sorted(ps.items(), key=lambda x: -x[1]))

    if pred.fine_family:
        typer.echo(f"  fine family: {pred.fine_family} ({pred.fine_probabilities[pred.fine_family]:.2f} of its group "
                   f"with the prior, {pred.fine_without_prior[pred.fine_family]:.2f} without)")
    elif len(pred.fine_probabilities) > 1:  # secondary: shares of the group, never an answer
        typer.echo(f"  fine family: not decisive (shares of the group with the prior: {shares(pred.fine_probabilities)}; "
                   f"without: {shares(pred.fine_without_prior)})")
    if pred.deciding:  # plain lines, not a table: every range stays readable in 80 columns
        verb = "that weigh most" if pred.headline == "unknown" else "that decided it"
        typer.echo(f"  features {verb} (toward {GROUP_LABELS.get(pred.nearest_group, pred.nearest_group)}, against "
                   f"{GROUP_LABELS.get(pred.deciding[0]['against'])}), with each group's reference range:")
    for d in pred.deciding:
        ranges = ", ".join(f"{GROUP_LABELS.get(g, g)} {lo:.3g}..{hi:.3g}" for g, (lo, hi) in d["ranges"].items())
        typer.echo(f"  {d['feature']} = {d['value']:.3g}   [{ranges}]")


def _show_calibration(refs, evaluation: dict) -> None:
    table = Table(title=f"fingerprint calibration set: {len(refs)} references (features only)")
    for col in ("preset", "steps", "weight decay", "conversion", "families", "lrs", "seeds", "references"):
        table.add_column(col)
    cells: dict = {}
    for r in refs:
        cells.setdefault((r.preset, r.steps, r.weight_decay, r.conversion), []).append(r)
    for (preset, steps, wd, conv), rs in sorted(cells.items()):
        table.add_row(preset, str(steps), f"{wd:g}", conv or "-", ", ".join(sorted({r.family for r in rs})),
                      ", ".join(f"{x:g}" for x in sorted({r.lr for r in rs})),
                      ", ".join(str(x) for x in sorted({r.seed for r in rs})), str(len(rs)))
    console.print(table)
    for set_name, res in evaluation.items():
        loo = res["loo"]
        typer.echo(f"[{set_name} features] leave-one-out: headline (Adam-like / Muon-like) "
                   f"{loo['headline_accuracy']:.1%}, fine family {loo['accuracy']:.1%} ({loo['n']} references), "
                   f"temperature {loo['temperature']:.3g}, unknown beyond distance {loo['unknown_distance']:.2f} "
                   f"or {loo['range_limit']:.1f} σ out of range")
        voting = [n for n, d in res["drift"].items() if d["votes"]]
        typer.echo(f"[{set_name} features] {len(voting)}/{len(res['drift'])} features vote (drift per decade "
                   "of training length below their group separation)")
        typer.echo(f"[{set_name} features] held out along each axis, worst first "
                   "(headline with the prior: right / unknown / wrong; fine family right):")
        for a in res["axes"]:
            typer.echo(f"  {a['axis']:16s} {a['right']}/{a['n']} right, {a['unknown']} unknown, {a['wrong']} wrong; "
                       f"fine {a['fine_right']}/{a['n']}")
            for f in a["folds"]:
                typer.echo(f"      held out {f['held_out']}: {f['right']}/{f['n']} right, {f['unknown']} unknown, "
                           f"{f['wrong']} wrong" + (f" ({', '.join(f['wrong_names'])})" if f["wrong_names"] else ""))
            for f in a.get("skipped", []):
                typer.echo(f"      held out {f['held_out']!r}: skipped ({f['n_calibration']} references would "
                           f"calibrate, {f['n']} to test)")
        for key, label in (("size_adam_muon", "size"), ("length_adam_muon", "length")):
            a = res[key]
            typer.echo(f"[{set_name} features] {label} held out, Adam-like (l1->linf) vs Muon (l2->l2) only: "
                       + (f"{a['right']}/{a['n']} right, {a['unknown']} unknown, {a['wrong']} wrong" if a["n"]
                          else "not measurable (needs two values)"))
    if not evaluation:
        typer.echo("no feature set was measured on every reference; nothing to evaluate")
