"""The reproduce report: sections built from the measurement tables, rendered by `render`."""

from __future__ import annotations

import math
from pathlib import Path

from forgetless.analysis import frontier as fr
from forgetless.analysis.plots import activation_bars
from forgetless.metrics import metric, second_views
from forgetless.report.effects import FORGETTING_WINDOW
from forgetless.report.figures import forgetting_sources, points_by_lr
from forgetless.report.regime import RegimeCheck
from forgetless.report.render import Section, Table, write_report
from forgetless.report.rows import PretrainRow, Row
from forgetless.report.tables import forgetting_by_source
from forgetless.report.verdicts import FRONTIER_MARGIN, Verdict, claim2_same_optimizer
from forgetless.sweep.records import Run
from forgetless.sweep.runner import store_path
from forgetless.sweep.store import Store


def _num(v, fmt: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _interval(v) -> str:
    """'effect [low, high]' of a Verdict or a Decision (mean / effect)."""
    effect = v.effect if hasattr(v, "effect") else v.mean
    if not math.isfinite(effect):
        return "—"
    if math.isfinite(v.low):
        return f"{effect:+.3f} [{v.low:+.3f}, {v.high:+.3f}]"
    return f"{effect:+.3f} (no interval)"


def verdict_lines(verdicts: list[Verdict]) -> list[tuple[str, str, str, str, str, str]]:
    """(claim, statement, verdict, effect [interval], units, role) per claim, and below a claim of
    several parts one line per part: required parts (each base of claims 2 and 3), then the
    effects shown beside them (consistency, main effect), each with its own interval."""
    lines = []
    for v in verdicts:
        lines.append((str(v.claim), v.title, v.status, _interval(v), str(v.n_units), "claim"))
        parts = getattr(v, "part_decisions", {}) or {}
        shown = getattr(v, "shown_decisions", {}) or {}
        if len(parts) > 1 or shown:
            for role, group in (("required part", parts), ("shown, not required", shown)):
                for name, d in group.items():
                    lines.append(("", f"  {name}", d.status, _interval(d), str(d.n_units), role))
    return lines


def verdict_sections(verdicts: list[Verdict], regime: RegimeCheck | None = None) -> list[Section]:
    by_claim = {str(v.claim): v for v in verdicts}
    rows = []
    for claim, statement, status, interval, units, role in verdict_lines(verdicts):
        v = by_claim.get(claim)
        rows.append([claim, statement, status, interval, units, v.paper if v else "",
                     (v.scale_note if v else role) or ""])
    details = [f"Claim {v.claim} ({v.test}): " + "; ".join(v.details) for v in verdicts if v.details]
    level = verdicts[0].level if verdicts else 0.05
    rule = (f"Each claim's effect is computed once per unit of evidence, a (base model, pretraining "
            f"seed) pair, signed so that positive is what the paper claims, and the units are tested "
            f"with a two-sided one-sample t-test at level {level:g}: 'holds' when the "
            f"{1 - level:.0%} interval of the mean effect lies above 0 and the mean clears the metric's "
            f"resolution, 'does not hold' when it lies below 0, 'inconclusive' otherwise and always "
            f"with fewer than 3 units. Claims 2 and 3 are stated for every base, so they are decided "
            f"per base family (and per cross family): they hold when every part holds and do not hold "
            f"when any part is reversed; the consistency effect (per seed, the mean of both bases' "
            f"same-minus-cross gaps) and the finetuning optimizer's main effect are shown beside them. "
            f"Frontier gaps are averaged over forgetting [F0, F0 + {FORGETTING_WINDOW:g}] nats above "
            f"each base's own, on envelopes of interpolated run paths, with a margin of "
            f"{FRONTIER_MARGIN:g} nats. The rule's error rates, measured on simulated tables with a known "
            f"truth (no effect, main effects, speed differences, crossing frontiers), are in "
            f"docs/BENCHMARKS.md. Small models on a CPU show the shape of the paper's results at best, "
            f"not its values.")
    paragraphs = [rule] + (["Regime: " + line for line in regime.lines()] if regime else [])
    return [Section("Verdicts", paragraphs=paragraphs,
                    tables=[Table(["claim", "statement", "verdict", "effect [interval]", "units", "paper",
                                   "part / why not decisive here"], rows)]),
            Section("How each verdict was reached", paragraphs=details)]


def pretrain_section(pretrain: list[PretrainRow]) -> Section:
    tasks = sorted({t for r in pretrain for t in r.task_losses})
    rows = [[r.label, r.optimizer, r.seed, _num(r.val_loss)] + [_num(r.task_losses.get(t)) for t in tasks]
            for r in pretrain]
    return Section("Pretraining (claim 1; paper Table 1)",
                   paragraphs=["Validation loss on held-out pretraining data at the end of "
                               "pretraining, and each base model's loss on the tasks' held-out "
                               "responses before any finetuning."],
                   tables=[Table(["base", "optimizer", "seed", "validation loss"]
                                 + [f"{t} loss" for t in tasks], rows)])


def frontier_sections(points: list[Row], store_points: list, fig_dir: Path) -> list[Section]:
    panels = fr.panels(store_points)
    if not panels:
        return [Section("Frontiers", paragraphs=["No finetuning points were recorded."])]
    summaries = [fr.summarize(p) for p in panels]
    figure = fr.plot(panels, summaries, fig_dir / "frontiers.png")
    best = fr.plot(panels, summaries, fig_dir / "frontiers_best_lr.png", best_lr_only=True)
    tables = []
    for panel, s in zip(panels, summaries, strict=True):
        names = list(s.methods)
        rows = [[n, r.runs, r.points, len(r.robust), _num(r.hypervolume, ".4f"),
                 f"{r.best_lr:g}", _num(r.best_lr_point[1]), _num(r.best_lr_point[0])]
                + [_num(v) for v in r.within_delta] for n, r in s.methods.items()]
        tables.append(Table(["method", "runs", "points", "robust frontier", "hypervolume", "best lr",
                             "best lr: learning", "best lr: forgetting"]
                            + [f"learning, forgetting ≤ base+{d:g}" for d in s.deltas], rows,
                            caption=f"{panel.title}: base forgetting {panel.base_point[0]:.3f}, "
                                    f"task loss {panel.base_point[1]:.3f}"))
        dom = [[a] + ["—" if a == b else f"{s.dominance[a][b]:.2f}" for b in names] for a in names]
        tables.append(Table(["A \\ B"] + names, dom,
                            caption=f"{panel.title}: share of B's points dominated by a point of A"))
    sections = [Section("Learning–forgetting frontiers (claims 2, 3, 6; paper Figures 2, 3, 6)",
                        paragraphs=["Each point is one checkpoint (forgetting = loss on held-out "
                                    "pretraining data, learning = loss on held-out task responses; "
                                    "lower is better on both); lines are each method's robust "
                                    "frontier (paper appendix A.1, ε = 0.01)."],
                        tables=tables,
                        figures=[(figure, "Frontiers per base model and task"),
                                 (best, "Only each method's best learning rate (paper appendix B.1)")])]
    for x in second_views():  # claim 2 on each other measure of forgetting the registry names (kl_to_base)
        sections += second_view_sections(points, store_points, fig_dir, x)
    sections.append(Section("Points by learning rate (paper Figure 9)",
                            figures=[(points_by_lr(points, fig_dir / "points_by_lr.png"),
                                      "Every checkpoint of every method, coloured by learning rate")]))
    by_source = forgetting_by_source(points)
    if by_source:
        srcs = sorted({s for m in by_source.values() for s in m})
        rows = [[m] + [_num(by_source[m].get(s)) for s in srcs] for m in sorted(by_source)]
        sections.append(Section(
            "Forgetting by source of the held-out data",
            paragraphs=["The rise of held-out loss over the base model, split by where the held-out "
                        "text comes from, averaged over every checkpoint after step 0."],
            tables=[Table(["method"] + srcs, rows)],
            figures=[(forgetting_sources(by_source, fig_dir / "forgetting_by_source.png"),
                      "Forgetting per held-out source")]))
    return sections


def second_view_sections(points: list[Row], store_points: list, fig_dir: Path, x: str) -> list[Section]:
    """Claim 2 on a second measure of forgetting x (issue 25 §3; metrics.second_views: kl_to_base): the
    frontiers with x on the reference sample, and claim 2's test on it, shown beside the verdict
    (the loss-based one decides). Nothing when the store's points carry no such measurement."""
    if not any(math.isfinite(r.value(x)) for r in points if r.step != 0):
        return []
    panels = fr.panels(store_points, x=x)
    if not panels:
        return []
    summaries = [fr.summarize(pn) for pn in panels]
    figure = fr.plot(panels, summaries, fig_dir / f"frontiers_{x}.png")
    v = claim2_same_optimizer(points, x=x)
    label = metric(x).phrase
    return [Section(f"Claim 2 on {label} (shown, not deciding)",
                    paragraphs=[f"{label}: {metric(x).how}. Shown beside the verdict, which the loss-based "
                                f"forgetting decides (docs/analysis.md says what this measure adds). Claim 2's "
                                f"test on it: {v.status}; {v.ours}."],
                    figures=[(figure, f"Frontiers per base model and task, forgetting as {label}")])]


def analysis_sections(pretrain: list[PretrainRow], probes: dict[str, dict], fig_dir: Path) -> list[Section]:
    if not probes:
        return []
    labels = {r.cell_id: r.label for r in pretrain}
    spec_rows = []
    for cid, probe in probes.items():
        for kind, stats in sorted(probe["spectrum"].items()):
            spec_rows.append([labels.get(cid, cid), kind, stats.get("n"), _num(stats.get("stable_rank"), ".2f"),
                              _num(stats.get("effective_rank"), ".2f"), _num(stats.get("density"))])
    act_rows = []
    for cid, probe in probes.items():
        for kind, stats in probe["activations"].items():
            act_rows.append([labels.get(cid, cid), kind, _num(stats.get("input_sparsity")),
                             _num(stats.get("output_sparsity")), _num(stats.get("input_hoyer")),
                             _num(stats.get("output_hoyer"))])
    bars = activation_bars({labels.get(c, c): p["activations"] for c, p in probes.items()},
                           fig_dir / "activation_sparsity.png")
    return [
        Section("Weight spectra (claim 4; paper Table 2)",
                paragraphs=["Per module kind of each pretrained base: stable rank ‖W‖²_F/‖W‖²₂, "
                            "effective rank and singular-value density; 'hidden' pools q…down."],
                tables=[Table(["base", "kind", "matrices", "stable rank", "effective rank", "density"],
                              spec_rows)]),
        Section("Activation sparsity (claim 5; paper Figures 4, 5)",
                paragraphs=["Share of entries below 1% of each token's largest entry, at the inputs "
                            "and outputs of every linear layer, pooled per module kind."],
                tables=[Table(["base", "kind", "input sparsity", "output sparsity", "input Hoyer",
                               "output Hoyer"], act_rows)],
                figures=[(bars, "Input (top) and output (bottom) sparsity per module kind")]),
    ]


def memorization_section(mem_dir: Path | None) -> list[Section]:
    if mem_dir is None:
        return []
    table_md = (mem_dir / "table.md").read_text() if (mem_dir / "table.md").is_file() else ""
    figures = [(mem_dir / f, c) for f, c in (("figure7.png", "Exact match over training (paper Figure 7)"),
                                            ("figure7_token.png", "Teacher-forced token accuracy"))
               if (mem_dir / f).is_file()]
    return [Section("Memorisation (claim 7; paper Table 3, Figure 7)",
                    paragraphs=["Greedy continuations of blocks of the training corpus, clean and "
                                "token-permuted; the verdict uses exact match at the shortest "
                                "(prompt, generation) pair at the final step."],
                    markdown=[table_md] if table_md else [], figures=figures)]


def build_report(study, root: Path, tables: dict, verdicts: list[Verdict], probes: dict,
                 pretrain: list[dict], runs: list[dict], mem_dir: Path | None, elapsed: float,
                 machine: str, regime: RegimeCheck | None = None,
                 store_points: list | None = None) -> tuple[Path, Path]:
    """The report; `store_points`: the study's typed eval points when already read (tables.read),
    else read here."""
    fig_dir = root / "figures"
    if store_points is None:
        with Store(store_path(study, root), readonly=True) as store:
            store_points = store.eval_points(study=study.name)
    runs = [r if isinstance(r, Run) else Run.from_row(r) for r in runs]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    problems = [[r.label, r.status, r.error.splitlines()[0] if r.error else ""]
                for r in runs if r.status in ("diverged", "failed")]
    overview = Section("Run", paragraphs=[
        f"Study '{study.name}': {study.description}",
        f"Cells: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}. "
        f"This report took {elapsed:.0f} s to produce on {machine} (cached stages cost nothing).",
        "Paper: Optimizer-Model Consistency: Full Finetuning with the Same Optimizer as Pretraining "
        "Forgets Less. Its numbers are quoted beside ours for shape, not value."],
        tables=[Table(["cell", "status", "error"], problems, caption="Diverged or failed cells")] if problems else [])
    sections = verdict_sections(verdicts, regime) + [overview, pretrain_section(pretrain)]
    sections += frontier_sections(tables["points"], store_points, fig_dir)
    sections += analysis_sections(pretrain, probes, fig_dir)
    sections += memorization_section(mem_dir)
    return write_report(f"forgetless reproduce — {study.name}", sections, root)
