"""The package's import graph: no two modules import each other (directly or round a loop, function-
local imports included), and each box imports only the boxes above it in docs/ARCHITECTURE.md."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "forgetless"
ORDER = ["counts", "errors", "metrics", "untrusted", "lazy", "optim", "data", "models", "train", "analysis", "sweep",
         "experiments", "report", "recommend", "integrations", "cli", "__main__"]
# Boxes a box may import besides those above it: none. Siblings at one level share nothing but these.
ALLOWED_EXTRA: dict[str, set[str]] = {"data": set(), "models": set(), "optim": set()}
# Single upward edges, each function-local and listed in docs/ARCHITECTURE.md:
# `finetune` (Python and command line) without an optimizer asks the one optimizer resolver (issue 23 §3);
# `forgetless finetune --harness TASK` measures lm_eval tasks through the integrations (issue 23 §6);
# `forgetless memorization` runs the memorisation test, an experiment runner above the sweep (issue 25 §2).
ALLOWED_EDGES = {("forgetless.train.finetune", "forgetless.recommend.resolve"),
                 ("forgetless.train.commands", "forgetless.integrations.harness"),
                 ("forgetless.analysis.commands", "forgetless.experiments.memorization")}


def test_experiment_runners_sit_above_the_sweep():
    """What trains models for an experiment that a study describes (reproduce, the memorisation
    test) is in a box below the sweep in ORDER, so it may read a study and the store."""
    for runner in ("forgetless.report.reproduce", "forgetless.experiments.memorization"):
        assert ORDER.index(_box(runner)) > ORDER.index("sweep"), runner
    edges = _edges(_modules())
    assert "forgetless.experiments.memorization" in edges["forgetless.report.reproduce"]


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(("forgetless",) + f.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[m] |= {t for t in targets if t in mods and t != m}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def _box(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_no_import_cycles():
    assert _cycles(_edges(_modules())) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_boxes_import_only_boxes_above_them():
    wrong = []
    for m, targets in _edges(_modules()).items():
        here = _box(m)
        for t in targets:
            there = _box(t)
            if there != here and there != "forgetless" and ORDER.index(there) > ORDER.index(here) \
                    and (m, t) not in ALLOWED_EDGES:
                wrong.append(f"{m} imports {t}")
    assert wrong == []
