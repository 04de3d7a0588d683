"""Time `forgetless fingerprint` on a freshly built 135M-parameter Llama-config model.

The model is SmolLM-135M's shape (hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536,
vocab 49152), randomly initialised from the config and saved in bf16 (no hub download). Its
weights are random, so the right answer is "unknown" (the norm gains are still at 1). Prints the
CLI's wall time (process start to exit, model loading included) and the answer.

    python benchmarks/fingerprint_135m.py            # weights only, the fast path
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main() -> None:
    cfg = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      intermediate_size=1536, vocab_size=49152, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llama-135m-random"
        model.save_pretrained(path)
        del model
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "forgetless.cli", "fingerprint", str(path), "--json",
                              "--device", "cpu"], capture_output=True, text=True)
        wall = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"fingerprint failed ({res.returncode}):\n{res.stderr[-2000:]}")
    (pred,) = json.loads(res.stdout)["checkpoints"]
    print(json.dumps({"parameters": n, "threads": torch.get_num_threads(), "cli_wall_s": round(wall, 1),
                      "fingerprint_s": pred["seconds"], "family": pred["family"],
                      "probabilities": pred["probabilities"],
                      "out_of_range": [o["feature"] for o in pred["out_of_range"][:3]]}, indent=1))


if __name__ == "__main__":
    main()
