"""Is a study in the paper's regime? The checks the report shows beside every verdict.

The paper's theory (§3.2) is about a small move away from a pretraining minimum, and its
experiments sit there: GPT-2 small pretrained on 8B tokens (about 65 per parameter) at lr 3e-3,
finetunes on 1.3-10% of the pretraining tokens, full-finetuning grids up to 1e-3 (a third of the
pretraining lr). So the report states, from what the store measured:

- Budget: each base's pretraining tokens per parameter. Far below the paper's, the bases are far
  from a minimum; how the effect depends on that budget is the convergence study's question.
- Token ratio: finetune tokens over the base's pretraining tokens. The rule (the presets' too,
  tests/sweep/test_preset_rules.py): at most 10% wherever the budget allows, never above 20%.
  "Allows" means that 10% of the pretraining tokens still holds MIN_FINETUNE_TOKENS (20 steps of
  16 x 128 tokens); below that a finetune may take up to that floor, within 20%.
- Lr ratio: finetune lr over the base's pretraining lr; full finetuning stays at or below 1/3.
- Grids: a grid with one lr cannot bracket the lr that learns best, and a grid whose best
  learning sits at its top lr does not bracket it (the frontier may be cut short there).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from forgetless.report.rows import Row, as_rows
from forgetless.sweep.records import EvalPoint, Run

MAX_RATIO = 0.20  # never above this finetune/pretrain token ratio
TARGET_RATIO = 0.10  # the top of the paper's 1.3-10%, wherever the budget allows
MIN_FINETUNE_TOKENS = 20 * 16 * 128  # the shortest finetune that still traces a trajectory
MAX_FULL_LR_RATIO = 1 / 3  # the paper's full-finetuning grids reach 1e-3 at pretraining lr 3e-3
PAPER_TOKENS_PER_PARAM = 65  # GPT-2 small: 8B tokens on 124M parameters
STUDY_TURN = 16  # the convergence study's smallest budget with the paper's direction on AdamW bases
# Measured (docs/BENCHMARKS.md, the convergence study: width-64 nano, 3 seeds per family and budget, 0.25-32 tokens per parameter).
CONVERGENCE_STUDY = ("how the effect depends on the budget is measured by the convergence study "
                     "(`forgetless reproduce --preset convergence`, docs/BENCHMARKS.md): there AdamW "
                     "bases favour Muon finetuning up to 4 tokens per parameter, the paper's direction "
                     "appears at 16 (AdamW bases +0.135 nats, consistency effect +0.166, both decisive), "
                     "and at 32 claim 2 holds on both bases (+0.167 and +0.181, 3 seeds each)")


def token_cap(pretrain_tokens: float) -> float:
    """Most finetune tokens the rule allows on a base pretrained on `pretrain_tokens`."""
    return min(MAX_RATIO * pretrain_tokens, max(TARGET_RATIO * pretrain_tokens, MIN_FINETUNE_TOKENS))


def _pick(cls, values: Mapping[str, Any] | None):
    """A record of `cls` from the keys of `values` that are its fields (any other key ignored)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (values or {}).items() if k in names})


@dataclass(frozen=True)
class LlamaShape:
    """The fields of a Llama-style config.json that fix its parameter count."""

    vocab_size: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    head_dim: int | None = None
    num_key_value_heads: int | None = None
    tie_word_embeddings: bool | None = True


@dataclass(frozen=True)
class Settings:
    """The fields of a run's training config (PretrainConfig or FinetuneConfig, as the store keeps
    it) that the check reads. Read leniently, not validated: a store of an older version still loads."""

    model: str | None = None
    lr: float | None = None
    tokens: int | None = None  # a pretraining run's token budget
    method: str | None = None  # what a finetune trains: "full" | "lora"
    data: dict[str, Any] | None = None  # DataConfig: vocab_size

    @classmethod
    def of(cls, run: Run) -> Settings:
        return _pick(cls, run.config)

    @property
    def vocab_size(self) -> int | None:
        return _pick(LlamaShape, self.data).vocab_size


@dataclass(frozen=True)
class Labels:
    """A finetune's labels (Run.meta, study.expand's): its base and grid."""

    base: str | None = None
    base_optimizer: str | None = None
    task: str | None = None
    method: str | None = None
    seed: Any = None

    @classmethod
    def of(cls, run: Run) -> Labels:
        return _pick(cls, run.meta)


def llama_parameters(cfg: Mapping[str, Any] | LlamaShape) -> int | None:
    """Distinct parameters of a Llama-style config (tied embedding once, no biases): the formula of
    forgetless.models.presets. None for a config without the fields."""
    s = cfg if isinstance(cfg, LlamaShape) else _pick(LlamaShape, cfg)
    try:
        v, d, f, n = (int(x) for x in (s.vocab_size, s.hidden_size, s.intermediate_size, s.num_hidden_layers))
    except (TypeError, ValueError):
        return None
    heads = int(s.num_attention_heads or 1)
    head_dim = int(s.head_dim or d // heads)
    kv = int(s.num_key_value_heads or heads)
    attention = 2 * d * heads * head_dim + 2 * d * kv * head_dim  # q and o; k and v
    embed = v * d * (1 if s.tie_word_embeddings else 2)
    return embed + n * (attention + 3 * d * f) + (2 * n + 1) * d


def base_parameters(run: Run) -> int | None:
    """Parameters of a pretraining run's model: from its checkpoint's config.json (the vocabulary
    the tokenizer really has), else from the model preset and the study's vocabulary."""
    for where in (run.checkpoint, run.out_dir):
        for path in ([Path(where) / "config.json", Path(where) / "final" / "config.json"] if where else []):
            if path.is_file():
                return llama_parameters(json.loads(path.read_text()))
    # Imported here: the presets module loads torch and transformers, which a report built from
    # finished runs (every one has its checkpoint's config.json) never needs.
    from forgetless.models.presets import PRESETS

    settings = Settings.of(run)
    preset = PRESETS.get(settings.model)
    vocab = settings.vocab_size
    return llama_parameters({**preset, "vocab_size": vocab}) if preset and vocab else None


@dataclass
class BaseBudget:
    """One pretrained base: its pretraining tokens (measured), parameters and lr."""

    label: str
    tokens: int
    parameters: int | None
    lr: float | None

    @property
    def tokens_per_parameter(self) -> float:
        return self.tokens / self.parameters if self.parameters else float("nan")


@dataclass
class RegimeCheck:
    """Budgets, token and lr ratios, and the grids that cannot or do not bracket the best lr."""

    ratios: dict[str, float]  # finetune cell label -> its tokens / its base's pretraining tokens
    unbracketed: list[str]  # "base seed task method (best lr L)": best learning at the grid's top
    budgets: list[BaseBudget] = field(default_factory=list)
    over_target: list[str] = field(default_factory=list)  # finetunes above token_cap (not > 20%)
    lr_ratios: dict[str, float] = field(default_factory=dict)  # full finetune label -> lr / base lr
    lora_lr_ratios: dict[str, float] = field(default_factory=dict)
    single_lr: list[str] = field(default_factory=list)  # "task method on base bases (lr L)"

    @property
    def max_ratio(self) -> float:
        return max(self.ratios.values(), default=float("nan"))

    def lines(self) -> list[str]:
        out = self._budget_lines()
        if self.ratios:
            r = np.array(list(self.ratios.values()))
            over = int(sum(v > MAX_RATIO for v in r))
            out.append(f"finetune tokens / pretraining tokens: {r.min():.1%}-{r.max():.1%} over {len(r)} "
                       f"finetunes (paper: 1.3-10%; ours: at most 10% wherever 10% holds "
                       f"{MIN_FINETUNE_TOKENS:,} tokens, never above {MAX_RATIO:.0%})"
                       + (f"; {over} above {MAX_RATIO:.0%}" if over else "")
                       + (f"; {len(self.over_target)} above 10% where the budget allows 10%"
                          if self.over_target else ""))
        if self.lr_ratios:
            lo, hi = min(self.lr_ratios.values()), max(self.lr_ratios.values())
            over = sum(v > MAX_FULL_LR_RATIO * (1 + 1e-9) for v in self.lr_ratios.values())
            out.append(f"full-finetuning lr / pretraining lr: {_frac(lo)}-{_frac(hi)} (paper: up to 1/3, "
                       "1e-3 against 3e-3)" + (f"; {over} finetunes above 1/3" if over else ""))
        if self.lora_lr_ratios:
            lo, hi = min(self.lora_lr_ratios.values()), max(self.lora_lr_ratios.values())
            out.append(f"LoRA lr / pretraining lr: {_frac(lo)}-{_frac(hi)} (paper: up to 3.3, 1e-2 against 3e-3)")
        if self.single_lr:
            out.append(f"{len(self.single_lr)} grid(s) have a single lr, so they cannot bracket the best lr: "
                       + "; ".join(self.single_lr))
        if self.unbracketed:
            capped = bool(self.lr_ratios) and max(self.lr_ratios.values()) <= MAX_FULL_LR_RATIO * (1 + 1e-9)
            out.append(f"{len(self.unbracketed)} grid(s) learn best at their highest lr, so they do "
                       "not bracket the best lr: " + "; ".join(self.unbracketed[:6])
                       + (" ..." if len(self.unbracketed) > 6 else "")
                       + ("; the full-finetuning grids stop at a third of the pretraining lr, as the "
                          "paper's, and short finetunes learn fastest at the top lr they are given, so "
                          "this is not a sign of a grid set too low" if capped else ""))
        return out or ["no finetunes to check"]

    def _budget_lines(self) -> list[str]:
        # One line per (model size, tokens per parameter): seeds of one family differ by a batch
        # at most, and families at one budget share a line.
        groups: dict[tuple, list[BaseBudget]] = defaultdict(list)
        for b in self.budgets:
            groups[(b.parameters or 0, f"{b.tokens_per_parameter:.2g}")].append(b)
        out = []
        for (params, tpp), bs in sorted(groups.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
            lo, hi = _count(min(b.tokens for b in bs)), _count(max(b.tokens for b in bs))
            families = ", ".join(sorted({re.sub(r"/s\d+$", "", b.label) for b in bs}))
            out.append(f"pretraining budget: {lo if lo == hi else f'{lo}-{hi}'} tokens on "
                       f"{_count(params or None)} parameters, {tpp} tokens per parameter ({families}: "
                       f"{len(bs)} bases; the paper's GPT-2: about {PAPER_TOKENS_PER_PARAM})")
        tpps = [b.tokens_per_parameter for b in self.budgets if np.isfinite(b.tokens_per_parameter)]
        if tpps and min(tpps) < STUDY_TURN * 0.95:
            out.append(f"at {min(tpps):.2g} tokens per parameter the bases are far from the pretraining "
                       "minimum the paper's theory assumes, so the verdicts describe this budget; "
                       + CONVERGENCE_STUDY)
        elif tpps and min(tpps) < PAPER_TOKENS_PER_PARAM / 2:
            out.append(f"at {min(tpps):.2g} tokens per parameter the bases are still short of the paper's "
                       f"about {PAPER_TOKENS_PER_PARAM}, but at or past the budget where the convergence "
                       "study finds claim 2's per-base effects take the paper's direction; " + CONVERGENCE_STUDY)
        return out


def _frac(x: float) -> str:
    return f"1/{1 / x:.3g}" if 0 < x < 1 else f"{x:.3g}"


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _last_tokens(points: list[EvalPoint]) -> dict[str, int]:
    last: dict[str, int] = {}
    for p in points:
        if p.tokens is not None:
            last[p.run_id] = max(last.get(p.run_id, 0), int(p.tokens))
    return last


def token_ratios(runs: list[Run], points: list[EvalPoint]) -> dict[str, float]:
    """Tokens of each finished finetune over the pretraining tokens of its base (last eval points)."""
    last = _last_tokens(points)
    out = {}
    for r in runs:
        if r.kind == "finetune" and r.base_id and last.get(r.base_id) and r.cell_id in last:
            out[r.label] = last[r.cell_id] / last[r.base_id]
    return out


def budgets(runs: list[Run], points: list[EvalPoint]) -> list[BaseBudget]:
    """Every pretraining run's budget: measured tokens (its config's where it has no points yet)."""
    last = _last_tokens(points)
    out = []
    for r in runs:
        if r.kind != "pretrain":
            continue
        settings = Settings.of(r)
        tokens = last.get(r.cell_id) or settings.tokens
        if tokens:
            out.append(BaseBudget(r.label, int(tokens), base_parameters(r), settings.lr))
    return out


def over_target(runs: list[Run], points: list[EvalPoint]) -> list[str]:
    """Finetunes above token_cap of their base but within MAX_RATIO (those above it are counted
    by the ratio line)."""
    last = _last_tokens(points)
    out = []
    for r in runs:
        base, own = last.get(r.base_id or ""), last.get(r.cell_id)
        if r.kind == "finetune" and base and own and token_cap(base) < own <= MAX_RATIO * base:
            out.append(r.label)
    return out


def lr_ratios(runs: list[Run]) -> tuple[dict[str, float], dict[str, float]]:
    """(full, LoRA): finetune label -> its lr over its base's pretraining lr (pretrained bases only)."""
    base_lr = {r.cell_id: Settings.of(r).lr for r in runs if r.kind == "pretrain"}
    full, lora = {}, {}
    for r in runs:
        lr0 = base_lr.get(r.base_id or "")
        if r.kind == "finetune" and lr0 and r.lr:
            (lora if Settings.of(r).method == "lora" else full)[r.label] = r.lr / lr0
    return full, lora


def single_lr_grids(runs: list[Run]) -> list[str]:
    """(base family, task, method) grids that give some base a single lr, once per family."""
    lrs: dict[tuple, dict] = defaultdict(lambda: defaultdict(set))
    for r in runs:
        if r.kind != "finetune" or r.lr is None:
            continue
        m = Labels.of(r)
        lrs[(m.base_optimizer, m.task, r.method or m.method)][(m.base, m.seed)].add(r.lr)
    out = []
    for (base, task, method), by_unit in sorted(lrs.items(), key=str):
        single = sorted({next(iter(s)) for s in by_unit.values() if len(s) == 1})
        if single:
            out.append(f"{task} {method} on {base} bases (lr {', '.join(f'{x:g}' for x in single)})")
    return out


def unbracketed_grids(rows: list[Row]) -> list[str]:
    """Grids (base, seed, task, method) with ≥ 2 lrs whose best learning is at their top lr."""
    grids: dict[tuple, dict[float, float]] = defaultdict(dict)
    for r in rows:
        if r.step == 0 or not np.isfinite(r.learning):
            continue
        key = (r.base_optimizer, r.base_seed, r.task, r.method)
        grids[key][r.lr] = min(grids[key].get(r.lr, np.inf), r.learning)
    out = []
    for (base, seed, task, method), by_lr in sorted(grids.items(), key=str):
        if len(by_lr) >= 2 and min(by_lr, key=by_lr.get) == max(by_lr):
            out.append(f"{base} seed {seed} {task} {method} (best lr {max(by_lr):g})")
    return out


def check(runs: Iterable[Run] | Mapping[str, Run], points: Iterable[EvalPoint], rows: Iterable[Row]) -> RegimeCheck:
    """The regime of a study from its runs (Store.run_records), its eval points (Store.eval_points)
    and its finetuning rows (report.rows). Older callers' dicts (Store.runs, Store.points, dict
    rows) are read too: each is turned into its record here."""
    runs = list(runs.values()) if isinstance(runs, Mapping) else list(runs)
    runs = [r if isinstance(r, Run) else Run.from_row(r) for r in runs]
    points = [p if isinstance(p, EvalPoint) else EvalPoint.from_row(p) for p in points]
    rows = as_rows(rows)
    full, lora = lr_ratios(runs)
    return RegimeCheck(token_ratios(runs, points), unbracketed_grids(rows), budgets(runs, points),
                       over_target(runs, points), full, lora, single_lr_grids(runs))
