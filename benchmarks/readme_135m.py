"""The README's practitioner section, run as pasted on a 135M-parameter Llama model built from a config.

The model is memory_135m.py's (SmolLM-135M's shape, random weights, a local 49152-token BPE with a
ChatML chat template). The script reads README.md's "For practitioners" section and runs every
`forgetless` command of its bash blocks and each of its Python blocks, in a work folder that holds
`my_chat.jsonl` (a chat-format file this script writes) so that relative paths resolve as a user's
would. Only these substitutions are made, each printed:

    path/to/checkpoint           -> the built model
    --steps 300 --eval-every 50  -> --steps S --eval-every E (E = S unless given), plus --batch-size B
                                    [--eval-tokens T] --log-every 1 --no-progress (small steps on a CPU;
                                    without --eval-tokens the finetune's default sample is used)

The Python blocks take the objects the README says are "yours" from a prelude: the model and its
tokenizer from the checkpoint, `reference_texts` (6 standard-library texts of <= 4000 characters), `ds` (my_chat.jsonl,
tokenised to fixed-length rows for the plain Trainer; as messages for TRL) and `args` (max_steps
S, batch B, TensorBoard). Each command is a child process; its peak RSS is that child's
ru_maxrss (os.wait4). Time per step of the finetune: the median gap between consecutive per-step
train records that span no evaluation (metrics.jsonl). For each finetune also: the evaluations'
share of its wall time (status.json eval_time / wall_time), each evaluation's standard errors
(forgetting_se, and forgetting_delta_se paired with the base) and the console's lines that announce
an evaluation's cost before training and measure the share at the end.

    python benchmarks/readme_135m.py [--steps 3] [--eval-every E] [--batch-size 4] [--eval-tokens N] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from memory_135m import build

README = Path(__file__).resolve().parents[1] / "README.md"

PRELUDE = """
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from forgetless.data import open_corpus
torch.set_num_threads({threads})
model = AutoModelForCausalLM.from_pretrained({ckpt!r})
tokenizer = AutoTokenizer.from_pretrained({ckpt!r})
reference_texts = [d.text[:4000] for _, d in zip(range(6), open_corpus("stdlib").documents())]
chats = [json.loads(line) for line in open("my_chat.jsonl")]
common = dict(output_dir="trainer-out", max_steps={steps}, per_device_train_batch_size={batch},
              logging_steps=1, report_to=["tensorboard"], save_strategy="no", use_cpu=True,
              disable_tqdm=True)
if {trl}:
    from datasets import Dataset
    from trl import SFTConfig
    ds = Dataset.from_list(chats)
    args = SFTConfig(max_length=256, **common)
else:
    rows = []
    for c in chats:
        ids = tokenizer.apply_chat_template(c["messages"], tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)[:256]
        pad = 256 - len(ids)
        rows.append({{"input_ids": torch.tensor(ids + [tokenizer.pad_token_id] * pad),
                      "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
                      "labels": torch.tensor(ids + [-100] * pad)}})
    ds = rows
    args = TrainingArguments(**common)
"""


def practitioner_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## For practitioners", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("forgetless "):
            out.append(" ".join(line.split()))
    return out


def run(cmd: list[str], cwd: Path, log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        child = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": child.returncode, "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2), "log": str(log)}


def write_chat(path: Path, n: int = 48) -> None:
    """n conversations: a user question, a system line on some, an answer of ~1 KB of stdlib prose."""
    from forgetless.data import open_corpus

    docs = (d.text for d in open_corpus("stdlib").documents() if len(d.text) > 1500)
    with open(path, "w") as f:
        for i, text in zip(range(n), docs, strict=False):
            messages = ([{"role": "system", "content": "You are a concise assistant."}] if i % 3 == 0 else [])
            messages += [{"role": "user", "content": f"Summarise document {i} for me."},
                         {"role": "assistant", "content": text[:1000]}]
            f.write(json.dumps({"messages": messages}) + "\n")


def step_times(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = {r["step"] for r in records if r["kind"] == "eval"}
    gaps = [b["wall_time"] - a["wall_time"] for a, b in zip(train, train[1:], strict=False)
            if a["step"] not in evals]
    header = next((r for r in records if r["kind"] == "header"), {})
    status = json.loads((run_dir / "status.json").read_text())
    points = [{k: r.get(k) for k in ("step", "forgetting", "forgetting_se", "forgetting_delta", "forgetting_delta_se")}
              for r in records if r["kind"] == "eval"]
    return {"step_s": [round(g, 1) for g in gaps],
            "step_s_median": round(statistics.median(gaps), 1) if gaps else None,
            "eval_time_s": status.get("eval_time"), "run_wall_s": status.get("wall_time"),
            "eval_share": round(status["eval_time"] / status["wall_time"], 3) if status.get("eval_time") else None,
            "points": points, "memory_plan": header.get("memory"), "reference": header.get("reference")}


def console_lines(log: Path) -> list[str]:
    """The console's announcements of an evaluation's cost and error, and the measured share."""
    keys = ("each evaluation:", "evaluation cost:", "evaluations:", "optimizer:")
    return [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip().startswith(keys)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=None, help="default: --steps (one interval)")
    ap.add_argument("--eval-tokens", type=int, default=None, help="default: the finetune's own default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/forgetless-mem135m"))
    ap.add_argument("--only", default=None, help="run only the blocks/commands containing this text")
    args = ap.parse_args()
    ckpt = args.work / "smol-135m"
    build(ckpt)
    here = args.work / f"readme-{int(time.time())}"
    here.mkdir(parents=True)
    write_chat(here / "my_chat.jsonl")
    results = []
    for i, (kind, block) in enumerate(practitioner_blocks()):
        if kind == "bash":
            for cmd in commands(block):
                pasted = cmd
                cmd = cmd.replace("path/to/checkpoint", str(ckpt))
                sample = f" --eval-tokens {args.eval_tokens}" if args.eval_tokens else ""
                cmd = cmd.replace("--steps 300 --eval-every 50",
                                  f"--steps {args.steps} --eval-every {args.eval_every or args.steps} --batch-size "
                                  f"{args.batch_size}{sample} --log-every 1 --no-progress --threads {args.threads}")
                if args.only and args.only not in cmd:
                    continue
                print(f"$ {cmd}", flush=True)
                argv = [sys.executable, "-m", "forgetless", *cmd.split()[1:]]
                result = {"pasted": pasted, "ran": cmd,
                          **run(argv, here, here / f"cmd-{len(results)}.log")}
                if " finetune " in cmd and result["rc"] == 0:
                    result.update(step_times(here / cmd.split("--out ")[1].split()[0]))
                    result["console"] = console_lines(Path(result["log"]))
                results.append(result)
                print(json.dumps(result), flush=True)
        else:
            trl = "SFTTrainer" in block
            if args.only and args.only not in block:
                continue
            script = here / f"block-{i}.py"
            script.write_text(textwrap.dedent(PRELUDE.format(
                ckpt=str(ckpt), steps=args.steps, batch=args.batch_size, trl=trl,
                threads=args.threads)) + "\n# --- README block, as pasted ---\n" + block)
            print(f"$ python {script}", flush=True)
            result = {"pasted": block.splitlines()[0] + " ...", "ran": str(script),
                      **run([sys.executable, str(script)], here, here / f"block-{i}.log")}
            results.append(result)
            print(json.dumps(result), flush=True)
    (here / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {here / 'results.json'}; load average {os.getloadavg()[0]:.1f}")
    sys.exit(max(r["rc"] != 0 for r in results))


if __name__ == "__main__":
    main()
