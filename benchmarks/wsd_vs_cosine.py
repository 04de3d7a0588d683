"""Does a decay branch give the base a cosine run of the same length gives? Measured on the
convergence study's own bases.

For each (optimizer, budget) asked, this pretrains one cosine run with the study's settings
(model, data, batch, sequence, lr, weight decay, the same 7-step warm-up, seed 0) and prints its
final validation loss beside the study's decay branch of that budget and seed (read from the
store; the same held-out sample: same corpus split, `eval_tokens` and sampling seed) and beside
the trunk at the branch point (the undecayed loss).

    python benchmarks/wsd_vs_cosine.py runs/convergence --budgets 229376 --optimizers adamw,muon
"""

from __future__ import annotations

import argparse
from pathlib import Path

from forgetless.sweep.store import Store
from forgetless.sweep.study import load_study
from forgetless.train import PretrainConfig, pretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--budgets", default="229376")
    ap.add_argument("--optimizers", default="adamw,muon")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/wsd-vs-cosine"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the cosine runs (long budgets)")
    args = ap.parse_args()
    study = load_study("convergence")
    entries = {p.optimizer: p for p in study.pretrain}
    with Store(args.sweep / "results.sqlite") as st:
        runs = st.runs_by_id("convergence")
        last: dict[str, float] = {}
        for p in st.points(study="convergence"):
            if runs.get(p["run_id"], {}).get("kind") == "pretrain":
                last[p["run_id"]] = p["forgetting"]  # points come in step order
    print("| optimizer | budget (tokens) | steps | cosine | WSD branch (decay 20%) | branch − cosine | trunk at branch point |")
    print("|---|---|---|---|---|---|---|")
    for opt in args.optimizers.split(","):
        entry = entries[opt]
        for budget in (int(b) for b in args.budgets.split(",")):
            branch = [cid for cid, r in runs.items() if r["kind"] == "pretrain" and r["meta"].get("base_optimizer") == opt
                      and r["meta"].get("base_seed") == args.seed and r["meta"].get("budget")
                      and r["config"]["tokens"] == budget]
            if not branch or branch[0] not in last:
                print(f"| {opt} | {budget:,} | | | not in the store yet | | |")
                continue
            cfg = runs[branch[0]]["config"]
            settings = dict(entry.settings)
            warmup_steps = cfg["warmup_steps"]
            result = pretrain(PretrainConfig(
                model=entry.model, optimizer=opt, lr=entry.lr, seed=args.seed, tokens=budget, corpus=study.data.corpus,
                vocab_size=study.data.vocab_size, warmup_steps=warmup_steps, out_dir=args.out / f"{opt}-{budget}",
                progress=False, console=False, threads=1, resume=True, compile=args.compile,
                **{k: v for k, v in settings.items() if k != "warmup"}))
            cosine = result.points[-1]["val_loss"]
            trunk = last.get(runs[branch[0]]["base_id"])
            print(f"| {opt} | {budget:,} | {result.points[-1]['step']} | {cosine:.4f} | {last[branch[0]]:.4f} | "
                  f"{last[branch[0]] - cosine:+.4f} | {trunk:.4f} |", flush=True)


if __name__ == "__main__":
    main()
