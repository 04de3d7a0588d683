"""Measurement tables for the verdicts, read from a finished sweep and its base checkpoints.

The sweep store holds every eval point; the pretraining runs' checkpoints are probed here for
weight spectra and activation sparsity (results cached as JSON beside the store, keyed by the
checkpoint, so a second `reproduce` only rebuilds the report).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forgetless.report.rows import (
    ActivationRow,
    MemorizationRow,
    PretrainRow,
    Row,
    SpectrumRow,
    rows_from_points,
    rows_from_store,
)
from forgetless.sweep.records import EvalPoint, Run
from forgetless.sweep.store import Store


@dataclass
class StudyTables:
    """What the report reads of a study's store, read once: its runs and eval points (typed), and
    the rows built from them."""

    runs: dict[str, Run]
    points: list[EvalPoint]
    pretrain: list[PretrainRow]
    finetune: list[Row]  # WiSE-FT points left out (forgetless compare's)


def read(store: Store, study: str) -> StudyTables:
    """The study's runs and points in one read each, and the verdicts' rows built from them."""
    runs, points = store.run_records(study), store.eval_points(study=study)
    return StudyTables(runs, points, pretrain_from(runs, points), rows_from_points(points, runs, wise=False))


def pretrain_rows(store: Store, study: str) -> list[PretrainRow]:
    """One row per finished pretraining run: its validation loss and its base task losses.

    The validation loss is the run's last eval point (loss on held-out pretraining data); a
    base's task loss is the learning loss at step 0 of its finetunes (the untouched base model,
    the same for every finetune of that base and task).
    """
    return pretrain_from(store.run_records(study), store.eval_points(study=study))


def pretrain_from(runs: dict[str, Run], points: list[EvalPoint]) -> list[PretrainRow]:
    """`pretrain_rows` from runs and points already read."""
    rows: dict[str, PretrainRow] = {}
    for cid, run in runs.items():
        if run.kind != "pretrain" or run.status != "done":
            continue
        own = [p for p in points if p.run_id == cid and math.isfinite(p.forgetting)]
        if not own:
            continue
        rows[cid] = PretrainRow(optimizer=run.meta.get("base_optimizer"), seed=run.meta.get("base_seed"),
                                val_loss=own[-1].forgetting, task_losses={}, cell_id=cid, label=run.label,
                                checkpoint=run.checkpoint or run.out_dir)
    for p in points:
        if p.kind == "finetune" and p.step == 0 and p.base_id in rows:
            task = p.meta.get("task")
            if task and math.isfinite(p.learning):
                rows[p.base_id].task_losses.setdefault(task, p.learning)
    return list(rows.values())


def finetune_rows(store: Store, study: str) -> list[Row]:
    """Every finetuning eval point but WiSE-FT's (those are `forgetless compare`'s), as the
    verdicts' rows (forgetless.report.rows, the one adapter from the store)."""
    return rows_from_store(store, study, wise=False)


def probe_checkpoint(checkpoint: str, corpus: str, cache: Path, n_tokens: int = 16384,
                     seq_len: int = 128) -> dict:
    """Spectrum and activation summaries of one checkpoint, cached in `cache` (JSON)."""
    key = Path(checkpoint).resolve()
    stamp = max((f.stat().st_mtime for f in key.glob("*.safetensors")), default=0.0)
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{key}|{stamp}|{n_tokens}|{seq_len}".encode()).hexdigest()[:16]
    path = cache / f"{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from forgetless.analysis.activations import probe_activations, token_windows
    from forgetless.analysis.spectrum import summarize_spectra, weight_spectra
    from forgetless.data import prepare_pretraining_data
    from forgetless.models import load_model

    model, _ = load_model(str(key))
    model.eval()
    data = prepare_pretraining_data(corpus, tokenizer=str(key), progress=False)
    windows = token_windows(data.val, n_tokens, seq_len)
    result = {"checkpoint": str(key), "spectrum": summarize_spectra(weight_spectra(model)),
              "activations": probe_activations(model, windows).by_kind()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return result


def analysis_rows(pretrain: list[PretrainRow], probes: dict[str, dict]) -> tuple[list[SpectrumRow], list[ActivationRow]]:
    """(spectrum rows, activation rows) for the verdicts, from each base's probe results (the
    cached JSON of `probe_checkpoint`: its keys are the records' field names)."""
    spectra, activations = [], []
    for row in PretrainRow.many(pretrain):
        probe = probes.get(row.cell_id)
        if probe is None:
            continue
        hidden = probe["spectrum"].get("hidden", {})
        spectra.append(SpectrumRow.of({**hidden, "optimizer": row.optimizer, "seed": row.seed, "label": row.label}))
        for module, stats in probe["activations"].items():
            if module != "hidden":
                activations.append(ActivationRow.of({**stats, "optimizer": row.optimizer, "seed": row.seed,
                                                     "module": module}))
    return spectra, activations


def memorization_rows(results: list[dict]) -> list[MemorizationRow]:
    """Per optimizer and seed, at the lr with the best clean exact match (paper A.2): the training
    curve at the shortest (prompt, gen) pair (the one with most signal at small scale; the report
    shows every pair), from which claim 7 is decided at matched training loss, and beside it the
    final clean / corrupted exact match, the onset step (first eval with any corrupted block
    reproduced) and both rates at the train loss every optimizer reached (matched-loss view).

    `curve`: one entry per eval point, {step, train_loss, clean_exact, corrupted_exact, clean_token,
    corrupted_token} (token = teacher-forced token accuracy), as the run recorded them."""
    from forgetless.analysis.memorization_run import matched_loss_points

    rows = []
    for result in results:
        prompt, gen = [tuple(p) for p in result["config"]["pairs"]][0]
        clean, bad = f"clean_exact_{prompt}_{gen}", f"corrupted_exact_{prompt}_{gen}"
        try:
            _, matched = matched_loss_points(result["selected"])
        except ValueError:  # a diverged run never reaches the others' loss
            matched = {}
        for opt, history in result["selected"].items():
            last = history[-1]
            onset = next((p["step"] for p in history if p[bad] > 0), None)
            curve = [{"step": p["step"], "train_loss": p["train_loss"],
                      **{f"{split}_{m}": p[f"{split}_{m}_{prompt}_{gen}"]
                         for split in ("clean", "corrupted") for m in ("exact", "token")}}
                     for p in history]
            rows.append(MemorizationRow(
                optimizer=opt, seed=result["config"].get("seed", 0), clean=last[clean], corrupted=last[bad],
                lr=last["lr"], train_loss=last["train_loss"], n_eval=result["config"].get("n_eval"), onset=onset,
                pair=(prompt, gen), curve=curve, matched_clean=matched.get(opt, {}).get(clean),
                matched_corrupted=matched.get(opt, {}).get(bad)))
    return rows


def forgetting_by_source(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Mean forgetting increase over the base, per held-out source (code, prose), per method."""
    out: dict[str, dict[str, list[float]]] = {}
    base: dict[tuple, dict] = {}
    for r in rows:
        if r.step == 0 and r.sources:
            base[(r.base, r.task)] = r.sources
    for r in rows:
        src, ref = r.sources, base.get((r.base, r.task))
        if r.step == 0 or not src or not ref:
            continue
        for name, value in src.items():
            if name in ref and math.isfinite(value):
                out.setdefault(r.method, {}).setdefault(name, []).append(value - ref[name])
    return {m: {s: float(np.mean(v)) for s, v in by.items()} for m, by in out.items()}
