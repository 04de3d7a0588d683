"""kl_to_base: the KL divergence of the base model's next-token distributions from the model's, on
the forgetting sample (forgetless.metrics declares it; forgetless.train.evaluate measures it in the
forward that measures forgetting).

    kl_to_base = (1/N) Σ_t KL(p_base(· | x_≤t) ‖ p_model(· | x_≤t))

The base's distributions are kept from the run's step-0 evaluation (`BaseReference`), coarsened to
their KL_TOP_K most likely tokens and one bucket for the rest of the mass; `_base_terms` keeps
them (the base's evaluation) or adds each position's KL to its row (every later evaluation).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# Tokens of the base's next-token distribution kept per reference position: its KL_TOP_K most
# likely, plus one bucket for the rest of its mass. Exact for vocabularies up to this size; for
# larger ones the KL of the two distributions coarsened this way (a lower bound: merging tokens
# never raises a KL divergence). Memory: N positions × KL_TOP_K × 8 bytes (134 MB for 65,536).
KL_TOP_K = 256


TAIL_EXACT = 1e-3  # below this mass outside the kept tokens, 1 − Σ kept loses precision: sum the tail


def _base_terms(logp: torch.Tensor, start: int, rows: torch.Tensor, record: list | None,
                ref: tuple[torch.Tensor, ...] | None, kl: torch.Tensor | None) -> None:
    """For fp32 log-probabilities of positions start.. of a piece: keep the base's distribution
    (`record`), or add each position's KL(base ‖ model) to its row of `kl` (`ref`)."""
    if record is not None:
        values, idx = logp.topk(min(KL_TOP_K, logp.shape[-1]), dim=-1)
        record.append((values, idx.int(), logp.scatter(1, idx, -math.inf).logsumexp(-1)))
    if ref is not None:
        logp_base, idx, rest = (t[start:start + len(logp)] for t in ref)
        idx = idx.long()
        logq = logp.gather(1, idx)
        # the model's mass outside the base's kept tokens: 1 − Σ kept (no pass over the vocabulary),
        # or where that is tiny the sum of the tail itself
        tail = 1.0 - logq.double().exp().sum(1)
        logq_rest = tail.clamp_min(1e-300).log()
        exact = tail < TAIL_EXACT
        if exact.any():
            logq_rest[exact] = logp[exact].scatter(1, idx[exact], -math.inf).logsumexp(-1).double()
        p_rest = rest.double().exp()  # 0 when the kept tokens are the whole vocabulary
        terms = (logp_base.exp() * (logp_base - logq)).sum(1).double() \
            + torch.where(p_rest > 0, p_rest * (rest.double() - logq_rest), 0.0)
        kl.index_add_(0, rows, terms)


PARTS = ("logp", "idx", "rest")  # of each piece: kept log-probabilities, their tokens, log rest mass


class BaseReference:
    """The base model's next-token distributions on the forgetting sample, for kl_to_base.

    A fresh run (`fresh`) has the base as its first evaluated model (step 0): that evaluation
    keeps, in the forward that measures forgetting, each scored position's KL_TOP_K most likely
    tokens with their log-probabilities and the log of the remaining mass, and saves them to
    `path` (safetensors; one file per rank under torchrun) so that a resumed run compares with the same base.
    Every later evaluation computes per position, from its own logits q,
        Σ_{v kept} p(v) (log p(v) − log q(v)) + p(rest) (log p(rest) − log q(rest)),
    the KL divergence of the base's distribution from the model's (see KL_TOP_K). A resumed run
    without the file, or a sample cut into other pieces than the base's, measures no KL."""

    def __init__(self, path: str | Path | None = None, fresh: bool = True):
        self.path, self.fresh = (Path(path) if path else None), fresh
        self.pieces: list[tuple[torch.Tensor, ...]] | None = None

    def _file(self, d) -> Path | None:
        if self.path is None or d.world == 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}.rank{d.rank}{self.path.suffix}")

    def ready(self, d, device: torch.device) -> str | None:
        """"record" (this evaluation is the base's), "compare", or None (no KL this time)."""
        file = self._file(d)
        if self.pieces is None and not self.fresh and file is not None and file.is_file():
            saved = load_file(file)  # safetensors: nothing is unpickled (docs/guarantees.md)
            self.pieces = [tuple(saved[f"{k}.{part}"].to(device) for part in PARTS) for k in range(len(saved) // 3)]
        if self.pieces is None:
            return "record" if self.fresh else None
        return "compare"

    def keep(self, pieces: list[list[tuple[torch.Tensor, ...]]], d) -> None:
        """The base's distributions of every piece (a list of chunks each), saved for a resume."""
        self.pieces = [tuple(torch.cat(parts) for parts in zip(*chunks, strict=True)) if chunks else
                       (torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.int32), torch.zeros(0)) for chunks in pieces]
        self.fresh = False
        file = self._file(d)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(".tmp")
            save_file({f"{k}.{part}": t.cpu().contiguous() for k, piece in enumerate(self.pieces)
                       for part, t in zip(PARTS, piece, strict=True)}, tmp)
            tmp.replace(file)

    def close(self, d) -> None:
        """The run is over: its file goes (it is only for a resume; N × KL_TOP_K × 8 bytes)."""
        file = self._file(d)
        if file is not None:
            file.unlink(missing_ok=True)
