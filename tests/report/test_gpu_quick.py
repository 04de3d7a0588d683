"""gpu-quick: the GPU preset is valid cell by cell, in the regime, >= 20x the CPU presets' model,
and its study runs end to end when shrunk to a tiny size on the CPU (a dry run; the GPU run itself
needs a device), with a regime section whose budget matches the checkpoints it wrote."""

import shutil
import sysconfig
from importlib import resources
from pathlib import Path

import transformers
import yaml

from forgetless.models import build_model, count_parameters
from forgetless.report.regime import check as check_regime
from forgetless.report.tables import finetune_rows
from forgetless.sweep.execute import check_study
from forgetless.sweep.runner import run_sweep, store_path
from forgetless.sweep.store import Store
from forgetless.sweep.study import load_study


def _raw() -> dict:
    return yaml.safe_load(resources.files("forgetless.sweep").joinpath("presets", "gpu-quick.yaml").read_text())


def test_every_preset_cell_is_one_the_training_box_accepts():
    for name in ("quick", "cpu-full", "gpu-quick", "gpt2"):
        check_study(load_study(name))


def test_gpu_quick_model_is_twenty_times_the_cpu_presets():
    raw = _raw()
    medium = count_parameters(build_model(raw["pretrain"][0]["model"], raw["data"]["vocab_size"]))
    for cpu in ("quick", "cpu-full"):
        study = load_study(cpu)
        micro = count_parameters(build_model(study.pretrain[0].model, study.data.vocab_size))
        assert medium >= 20 * micro, (cpu, medium, micro)


def test_gpu_quick_dry_run_at_a_tiny_size_on_the_cpu(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for pkg in ("json", "email", "logging"):  # enough documents for a validation split
        for f in sorted((Path(sysconfig.get_paths()["stdlib"]) / pkg).glob("*.py")):
            if f.stat().st_size > 200:
                shutil.copy(f, corpus / f"{pkg}_{f.name}")
    raw = _raw()
    raw.update(out_dir=str(tmp_path / "out"), data={"corpus": str(corpus), "vocab_size": 512})
    for p in raw["pretrain"]:  # same structure, tiny sizes, CPU
        p.update(model="nano", tokens="2k", seeds=[0])
        p["settings"].update(seq_len=32, batch_size=8, eval_tokens=256, eval_every=4, device="cpu")
    grid = raw["finetune"][0]
    grid.update(steps=2, eval_every=1)
    grid["tasks"][0]["settings"].update(eval_n=4, train_n=8)
    grid["settings"].update(seq_len=128, batch_size=1, eval_tokens=256, device="cpu")  # 13% of 2k
    for m in grid["methods"]:
        m["lrs"] = m["lrs"][:1]
    raw["finetune"] = [grid]
    study = load_study(raw)
    run_sweep(study, workers=0, out_dir=tmp_path / "out", progress=False)
    with Store(store_path(study, tmp_path / "out")) as store:
        runs = store.runs(study.name)
        regime = check_regime(runs, store.points(study=study.name), finetune_rows(store, study.name))
        tokens = {p["run_id"]: p["tokens"] for p in store.points(study=study.name) if p["step"] > 0}
    assert len(runs) == 2 + 4 and all(r["status"] == "done" for r in runs), [r["status"] for r in runs]
    # The regime section's budget, against the model the checkpoint holds.
    for r, budget in zip([r for r in runs if r["kind"] == "pretrain"], regime.budgets, strict=True):
        n = count_parameters(transformers.AutoModelForCausalLM.from_pretrained(r["checkpoint"]))
        assert budget.parameters == n and budget.tokens_per_parameter == tokens[r["cell_id"]] / n
    assert sorted(regime.lr_ratios.values()) == [3e-5 / 3e-3] * 4  # the cut grid's first lr, 3e-5
    assert regime.lines()[0].startswith("pretraining budget: ")
