"""Does a 4-bit quantise-dequantise round trip change the fingerprint's answer? On every finished
reference run of benchmarks/fingerprint_references.py (their weights are not shipped):

    python benchmarks/fingerprint_quantised.py /tmp/fp-runs

Quantisation: absmax per block of 32 consecutive entries of a row, 4 bits (GGUF Q4_0-like):
w -> round(w / a * 7) * a / 7. Prints each run's headline before and after, and the count unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from forgetless.analysis.fingerprint import fingerprint, model_features
from forgetless.models import load_model


@torch.no_grad()
def quantise_dequantise(model: torch.nn.Module, bits: int = 4, block: int = 32) -> torch.nn.Module:
    m = 2 ** (bits - 1) - 1
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            for start in range(0, mod.weight.shape[1], block):
                part = mod.weight[:, start : start + block]
                a = part.abs().amax(-1, keepdim=True).clamp_min(1e-12)
                part.copy_(torch.round(part / a * m) * a / m)
    return model


def main(runs_dir: str) -> None:
    torch.set_num_threads(1)
    same = n = unknown = 0
    for status in sorted(Path(runs_dir).glob("*/status.json")):
        if '"done"' not in status.read_text():
            continue
        ckpt = sorted((status.parent / "checkpoints").glob("step-*"))[-1]
        model, _ = load_model(ckpt)
        before = fingerprint(model_features(model))
        after = fingerprint(model_features(quantise_dequantise(model)))
        # The headline (Adam-like / Muon-like / unknown) is the answer; the nearest fine family is shown too.
        n, same, unknown = n + 1, same + (before.headline == after.headline), unknown + (after.headline == "unknown")
        print(f"{status.parent.name}: {before.label} p={before.probability or 0:.3f} -> {after.label} "
              f"p={after.probability or 0:.3f} (nearest fine family {before.nearest} -> {after.nearest})")
    print(f"headline unchanged after the 4-bit round trip: {same}/{n} references; unknown after: {unknown}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/fp-refs")
