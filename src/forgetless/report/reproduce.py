"""`forgetless reproduce`: the paper's study end to end, and a report with a verdict per claim.

Stages (each resumable or cached, so a second run with the same preset only rebuilds the report):
1. the sweep (pretraining runs, then the finetuning grid) through the sweep runner and its store;
2. probes of every pretrained base: weight spectra and activation sparsity (cached JSON);
3. the memorisation test on a corrupted corpus (cached results.json);
4. tables, verdicts, figures, and report.md + report.html in the sweep directory.
A study whose bases come at several budgets (the convergence preset) stops after the sweep with
claim 2 per budget (forgetless.report.convergence).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from forgetless.experiments.memorization import run_memorization
from forgetless.report import convergence, tables
from forgetless.report.document import build_report
from forgetless.report.regime import check as check_regime
from forgetless.report.render import write_report
from forgetless.report.verdicts import Verdict, all_verdicts
from forgetless.sweep.runner import default_workers, run_sweep, store_path
from forgetless.sweep.store import Store
from forgetless.sweep.study import MemorizationSpec, load_study

# The study presets `forgetless reproduce --preset` offers (any study file works too). What
# reproduce adds to a study's sweep (the probes' budget, the memorisation test) is the study's own
# `reproduce:` field (sweep/study_fields.ReproduceSpec), in the preset's YAML like every setting.
PRESETS = ("quick", "cpu-full", "gpu-quick", "gpt2", "llama2-7b", "convergence")


@dataclass
class ReproduceResult:
    out_dir: Path
    report_md: Path
    report_html: Path
    verdicts: list[Verdict]
    counts: dict[str, int]
    seconds: float


def _study(preset: str, seeds: int | None):
    study = load_study(preset)
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        for p in study.pretrain:  # several pretraining seeds: the verdicts' noise is measured
            p.seeds = list(range(seeds))
    return study


def reproduce(preset: str = "quick", seeds: int | None = None, workers: int | None = None,
              out_dir: str | Path | None = None, memorization: dict | None = None,
              probe_tokens: int | None = None, progress: bool = True, log=print) -> ReproduceResult:
    """Run (or resume) preset `preset` (a name of PRESETS, a study preset or a study YAML path).
    `memorization` (the fields of MemorizationSpec; {}: no test) and `probe_tokens` replace the
    study's `reproduce:` settings."""
    start = time.time()
    study = _study(preset, seeds)
    extra = study.reproduce
    if memorization is not None:
        extra = extra.model_copy(update={"memorization": MemorizationSpec.model_validate(memorization)
                                         if memorization else None})
    root = Path(out_dir or study.resolved_out_dir())
    if workers is None:
        workers = default_workers()
    log(f"[1/4] sweep '{study.name}' -> {root} ({workers} worker(s))")
    counts = run_sweep(study, workers=workers, out_dir=root, progress=progress)
    # The store is read once for the report: runs and points, typed (tables.read); the stages
    # below, the regime check among them, work on what was read.
    with Store(store_path(study, root), readonly=True) as store:
        read = tables.read(store, study.name)
    runs = list(read.runs.values())
    budgeted = convergence.has_budgets(read.runs)
    pretrain, points = read.pretrain, read.finetune

    if budgeted:  # bases at several budgets: claim 2 per budget, never pooled across budgets
        log("[2/2] claim 2 per pretraining budget")
        result = convergence.measure(store_path(study, root), study.name, root)
        md, html = write_report(f"forgetless reproduce: {study.name}",
                                [convergence.section(result, root / "figures")], root)
        return ReproduceResult(root, md, html, convergence.verdicts(result), counts, time.time() - start)

    log(f"[2/4] probing {len(pretrain)} pretrained base(s): spectra and activations")
    budget = probe_tokens or extra.probe_tokens
    probes = {}
    for row in pretrain:
        if row.checkpoint:
            probes[row.cell_id] = tables.probe_checkpoint(row.checkpoint, study.data.corpus,
                                                             root / "probes", n_tokens=budget)
    spectra, activations = tables.analysis_rows(pretrain, probes)

    mem_results, mem_dir = [], root / "memorization"
    configs = extra.memorization.configs() if extra.memorization else []
    for cfg in configs:
        seed_dir = mem_dir if len(configs) == 1 else mem_dir / f"seed-{cfg.seed}"
        cached = seed_dir / "results.json"
        if cached.is_file() and json.loads(cached.read_text())["config"] == cfg.model_dump(mode="json"):
            log(f"[3/4] memorisation test, seed {cfg.seed}: cached")
        else:
            log(f"[3/4] memorisation test, seed {cfg.seed}: {', '.join(cfg.optimizers)} on a corrupted corpus")
            run_memorization(cfg, out_dir=seed_dir, log=log)
        mem_results.append(json.loads(cached.read_text()))  # as written: JSON types, like the cache
    if not configs:
        log("[3/4] memorisation test: not part of this preset")

    log("[4/4] verdicts and report")
    table_set = {"pretrain": pretrain, "points": points, "spectra": spectra,
                 "activations": activations,
                 "memorization": tables.memorization_rows(mem_results)}
    verdicts = all_verdicts(table_set)
    regime = check_regime(runs, read.points, points)
    for line in regime.lines():
        log(f"      regime: {line}")
    (root / "verdicts.json").write_text(json.dumps(
        {"verdicts": [asdict(v) for v in verdicts], "regime": asdict(regime)}, indent=1))
    md, html = build_report(study, root, table_set, verdicts, probes, pretrain, runs,
                            (mem_dir if len(configs) <= 1 else mem_dir / f"seed-{configs[0].seed}")
                            if mem_results else None, elapsed=time.time() - start, regime=regime,
                            machine=f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
                            store_points=read.points)
    return ReproduceResult(root, md, html, verdicts, counts, time.time() - start)
