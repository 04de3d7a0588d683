"""CLI: `forgetless spectrum`, `activations`, `fingerprint`, `memorization` (see docs/analysis.md).

    forgetless spectrum runs/adamw-micro runs/muon-micro
    forgetless activations runs/adamw-micro runs/muon-micro --tokens 32768 --out out/acts
    forgetless fingerprint runs/muon-micro
    forgetless fingerprint --calibration
    forgetless memorization --optimizers adamw,muon,sgd --out out/mem
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from forgetless.analysis.memorization_config import MemorizationConfig

# `forgetless memorization`'s defaults are the memorisation test's (one declaration; torch-free)
_MEMO = MemorizationConfig().model_dump()

console = Console()


def _load(path: str, device: str):
    from forgetless.models import load_model, resolve_checkpoint
    from forgetless.train.runtime import pick_device

    try:
        model, _ = load_model(path)
    except (OSError, ValueError) as err:
        raise typer.BadParameter(f"cannot load {path!r}: {err}", param_hint="CHECKPOINTS") from err
    return model.to(pick_device(device)).eval(), resolve_checkpoint(path)


def _labels(checkpoints: list[str], labels: list[str] | None) -> list[str]:
    if labels and len(labels) != len(checkpoints):
        raise typer.BadParameter(f"{len(labels)} labels for {len(checkpoints)} checkpoints; give one "
                                 "--label per checkpoint or none", param_hint="--label")
    return labels or [Path(c).name or c for c in checkpoints]


def _kind_table(title: str, by_label: dict[str, dict[str, dict]], key: str, pct: bool = False) -> Table:
    """Rows: module kinds; columns: checkpoints; cells: mean (± std when the row has `key`_std)."""
    from .plots import ORDER  # matplotlib and torch: loaded by the commands that print these tables

    table = Table(title=title)
    table.add_column("kind")
    for label in by_label:
        table.add_column(label, justify="right")
    kinds = [k for k in ORDER if any(k in rows for rows in by_label.values())]
    for kind in kinds:
        cells = []
        for rows in by_label.values():
            row = rows.get(kind, {})
            v, s = row.get(key, math.nan), row.get(key + "_std")
            fmt = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
            cells.append("-" if math.isnan(v) else fmt(v) + (f" ± {fmt(s)}" if s is not None else ""))
        table.add_row(kind, *cells)
    return table


def _windows(ckpt_source: str, corpus: str, tokens: int, seq_len: int):
    """A fixed sample of the corpus's validation split, tokenised by the checkpoint's tokenizer."""
    from forgetless.data import prepare_pretraining_data

    from .activations import token_windows

    data = prepare_pretraining_data(corpus, tokenizer=ckpt_source, progress=False)
    return token_windows(data.val, tokens, seq_len)


def register(app: typer.Typer) -> None:
    @app.command("spectrum")
    def spectrum_cmd(
        checkpoints: list[str] = typer.Argument(..., help="Checkpoints or run dirs (or HF names)."),
        label: list[str] = typer.Option(None, "--label", help="Column label per checkpoint."),
        all_matrices: bool = typer.Option(False, "--all", help="Also the output head and embeddings."),
        device: str = typer.Option("auto", help="Where the SVDs run: auto, cpu, cuda, cuda:N."),
        out: Path | None = typer.Option(None, help="Directory for spectrum-<label>.json (per matrix)."),
    ) -> None:
        """Stable rank, effective rank and singular-value density per module kind (paper Table 2)."""
        from forgetless.errors import writable_dir

        from .spectrum import summarize_spectra, weight_spectra

        if out:
            writable_dir(out)  # before any work
        by_label = {}
        for ckpt, name in zip(checkpoints, _labels(checkpoints, label), strict=True):
            model, _ = _load(ckpt, device)
            spectra = weight_spectra(model, hidden_only=not all_matrices)
            by_label[name] = summarize_spectra(spectra)
            if out:
                out.mkdir(parents=True, exist_ok=True)
                doc = {"checkpoint": ckpt, "by_kind": by_label[name], "matrices": [m.to_dict() for m in spectra]}
                (out / f"spectrum-{name}.json").write_text(json.dumps(doc, indent=1))
        for key, title in (("stable_rank", "stable rank ‖W‖²_F/‖W‖²₂"),
                           ("stable_rank_ratio", "stable rank / min(d_out, d_in)"),
                           ("effective_rank", "effective rank exp H(σ/‖σ‖₁)"),
                           ("density", "singular density ‖σ‖₁/(√r‖σ‖₂)")):
            console.print(_kind_table(f"{title}, mean ± std over matrices", by_label, key))

    @app.command("activations")
    def activations_cmd(
        checkpoints: list[str] = typer.Argument(..., help="Checkpoints or run dirs (or HF names)."),
        label: list[str] = typer.Option(None, "--label", help="Column label per checkpoint."),
        corpus: str = typer.Option("stdlib", help="Corpus of the token sample (its validation split)."),
        tokens: int = typer.Option(32768, min=1, help="Token budget of the sample."),
        seq_len: int = typer.Option(128, min=2, help="Tokens per sequence."),
        batch_size: int = typer.Option(8, min=1, help="Sequences per forward pass."),
        threshold: float = typer.Option(0.01, help="Entry counts as zero below threshold × the token's max |x|."),
        metric: str = typer.Option("sparsity", help="Shown and plotted: sparsity, l1_l2 or hoyer."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
        out: Path | None = typer.Option(None, help="Directory for activations.json and the bar chart."),
    ) -> None:
        """Sparsity of every linear layer's input and output activations (paper Figs. 4, 5, 10, 11)."""
        from .activations import METRICS, probe_activations
        from .plots import activation_bars

        if metric not in METRICS:
            raise typer.BadParameter(f"{metric!r} is unknown; allowed: {', '.join(METRICS)}", param_hint="--metric")
        if not 0 <= threshold < 1:
            raise typer.BadParameter(f"must be in [0, 1) (a share of each token's max |x|), got {threshold}",
                                     param_hint="--threshold")
        if out:
            from forgetless.errors import writable_dir

            writable_dir(out)  # before any work
        by_label, docs = {}, {}
        for ckpt, name in zip(checkpoints, _labels(checkpoints, label), strict=True):
            model, source = _load(ckpt, device)
            windows = _windows(source, corpus, tokens, seq_len)
            rows = model.get_input_embeddings().num_embeddings
            if int(windows.max()) >= rows:  # else an IndexError deep in the forward pass
                from forgetless.errors import UserError

                raise UserError(f"{ckpt}: its tokenizer gives token ids up to {int(windows.max())}, but the "
                                f"model's embedding has {rows} rows: the checkpoint's tokenizer is not the model's")
            report = probe_activations(model, windows, batch_size, threshold)
            by_label[name], docs[name] = report.by_kind(), {"checkpoint": ckpt, **report.to_dict()}
        for side in ("input", "output"):
            console.print(_kind_table(f"{side} {metric} (threshold {threshold}), mean ± std over tokens",
                                      by_label, f"{side}_{metric}", pct=metric == "sparsity"))
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / "activations.json").write_text(json.dumps(docs, indent=1))
            png = activation_bars(by_label, out / f"activations-{metric}.png", metric)
            typer.echo(f"wrote {out / 'activations.json'} and {png}")

    from .fingerprint_cli import register as register_fingerprint

    register_fingerprint(app)

    @app.command("memorization")
    def memorization_cmd(
        optimizers: str = typer.Option(",".join(_MEMO["optimizers"]), help="Comma-separated optimizer names."),
        lrs: str = typer.Option(",".join(f"{x:g}" for x in _MEMO["lrs"]),
                                help="Comma-separated lr grid; per optimizer the best clean accuracy is kept."),
        preset: str = typer.Option(_MEMO["preset"], help="Model preset."),
        corpus: str = typer.Option(_MEMO["corpus"], help="Corpus whose first --tokens training tokens are used."),
        tokens: int = typer.Option(_MEMO["n_tokens"], min=64, help="Corpus size in tokens (small: it must be memorisable)."),
        block_len: int = typer.Option(_MEMO["block_len"], min=2, help="Block length; each training sequence is one block."),
        p: float = typer.Option(_MEMO["p"], help="Share of blocks whose tokens are permuted."),
        steps: int = typer.Option(_MEMO["steps"], min=1, help="Optimizer steps."),
        batch_size: int = typer.Option(_MEMO["batch_size"], min=1, help="Blocks per step."),
        eval_every: int = typer.Option(_MEMO["eval_every"], min=1, help="Steps between evaluations."),
        pairs: str = typer.Option(",".join(f"{a}:{b}" for a, b in _MEMO["pairs"]),
                                  help="(prompt:gen) lengths, comma-separated."),
        n_eval: int = typer.Option(_MEMO["n_eval"], min=1, help="Evaluation blocks per split (clean, corrupted)."),
        seed: int = typer.Option(_MEMO["seed"], min=0),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
        out: Path = typer.Option(Path("memorization"), help="Output directory."),
    ) -> None:
        """The memorisation test (paper §4.2): exact match on clean vs corrupted blocks over training."""
        # the runner sits above the sweep (tests/test_imports.py ALLOWED_EDGES)
        from forgetless.experiments.memorization import run_memorization
        from forgetless.models import PRESETS
        from forgetless.optim import OPTIMIZERS
        from forgetless.train.runtime import pick_device

        unknown = [o for o in optimizers.split(",") if o not in OPTIMIZERS]
        if unknown:
            raise typer.BadParameter(f"{unknown} unknown; allowed: {', '.join(OPTIMIZERS)}", param_hint="--optimizers")
        if preset not in PRESETS:
            raise typer.BadParameter(f"{preset!r} unknown; allowed: {', '.join(PRESETS)}", param_hint="--preset")
        try:
            if not all(0 < float(x) < math.inf for x in lrs.split(",")):
                raise ValueError(f"--lrs must be positive finite numbers, got {lrs!r}")
            pair_list = [tuple(int(x) for x in s.split(":")) for s in pairs.split(",")]
            cfg = MemorizationConfig(
                optimizers=optimizers.split(","), lrs=[float(x) for x in lrs.split(",")], preset=preset,
                corpus=corpus, n_tokens=tokens, block_len=block_len, p=p, steps=steps, batch_size=batch_size,
                eval_every=eval_every, pairs=pair_list, n_eval=n_eval, seed=seed, device=str(pick_device(device)))
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err
        from forgetless.errors import writable_dir

        result = run_memorization(cfg, writable_dir(out), log=typer.echo)
        from .memorization_run import table3

        typer.echo(table3(result["selected"], cfg.pairs))
        typer.echo(f"wrote {out}/table.md, figure7.png, figure7_token.png, results.json, history.jsonl")

