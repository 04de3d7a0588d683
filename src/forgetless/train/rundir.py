"""The run directory: config.yaml, metrics.jsonl, status.json and checkpoints/.

metrics.jsonl holds one JSON object per line with a `kind`:
    "eval"   step, tokens, forgetting, learning, accuracy (or null), wall_time, ... (the points)
    "train"  step, tokens, loss, lr, tokens_per_s, wall_time (every log_every steps)
    "status" status ("diverged"), step, reason (the last line of a run that did not finish)

Resuming survives a kill at any point: a last line cut mid-write is dropped (and said), a
checkpoint whose files are damaged is moved aside to checkpoints/.corrupt-step-N and the one
before it is used (said too), and the directory may have been moved or copied since.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

from forgetless.errors import CorruptCheckpoint, RunBusy, one_line
from forgetless.models import latest_checkpoint
from forgetless.train.checkpoint import verify_checkpoint
from forgetless.untrusted import load_json


def say(message: str) -> None:
    """A note to the user on stderr (resume repairs), one line."""
    print(f"forgetless: {message}", file=sys.stderr, flush=True)


@dataclass
class RunResult:
    """What `pretrain` and `finetune` return."""

    out_dir: Path
    status: str  # "done" | "diverged" | "pruned" (ended by a train.stop.StopRun from on_eval)
    points: list[dict] = field(default_factory=list)  # the eval points, oldest first
    final_checkpoint: Path | None = None


class RunDir:
    """Files of one run; every write that a reader may see half-done goes through a rename."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.status_path = self.path / "status.json"
        self.checkpoints = self.path / "checkpoints"

    def prepare(self, config_yaml: str, resume: bool) -> Path | None:
        """Create or reopen the directory; return the checkpoint to resume from (or None).

        Refuses to overwrite a finished or started run unless `resume` is set; when resuming,
        metrics written after the checkpoint (by the killed run) are dropped, since they will be
        measured again.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        claim(self.path)  # before looking: two runs started at once cannot both see it free
        started = self.status_path.exists() or self.metrics_path.exists()
        if started and not resume:
            raise FileExistsError(
                f"{self.path} already holds a run; pass resume=True (--resume) to continue it, "
                "or choose another out_dir (--out)"
            )
        self.checkpoints.mkdir(exist_ok=True)
        for tmp in self.checkpoints.glob(".tmp-*"):  # a checkpoint write cut by a kill
            shutil.rmtree(tmp, ignore_errors=True)
        ckpt = self._usable_checkpoint() if resume else None
        if resume and ckpt is None:
            self.metrics_path.unlink(missing_ok=True)  # nothing to continue: start over
        if ckpt is not None:
            step = int(ckpt.name.split("-")[1])
            records, dropped = self._parse_metrics()
            if dropped:
                say(f"{self.metrics_path}: dropped {dropped} partial line(s) cut by a kill; they are "
                    "measured again")
            kept = [r for r in records if r.get("kind") != "status" and r.get("step", 0) <= step]
            self._rewrite_metrics(kept)
        self.write_atomic(self.path / "config.yaml", config_yaml)
        return ckpt

    def _usable_checkpoint(self) -> Path | None:
        """The newest checkpoint whose files are whole; damaged newer ones are moved aside (with a
        note). A damaged checkpoint with no whole one before it is an error, and nothing moves."""
        bad: list[tuple[Path, CorruptCheckpoint]] = []
        good = None
        while (ckpt := latest_checkpoint(self.path, skip={p for p, _ in bad})) is not None:
            try:
                verify_checkpoint(ckpt)
                good = ckpt
                break
            except CorruptCheckpoint as err:
                bad.append((ckpt, err))
        if bad and good is None:
            raise CorruptCheckpoint(f"resume: {one_line(bad[0][1])}; no earlier checkpoint is kept "
                                    "(keep_checkpoints): restore the files, or start the run again in "
                                    "another --out")
        for path, err in bad:
            aside = path.with_name(f".corrupt-{path.name}")
            n = 1
            while aside.exists():
                aside, n = path.with_name(f".corrupt-{path.name}-{n}"), n + 1
            os.replace(path, aside)
            say(f"{one_line(err)}; moved to {aside.name}, resuming from {good.name}")
        return good

    def follower(self) -> RunDir:
        """The same directory for a rank other than 0 of a torchrun job: it reads, never writes."""
        return _Follower(self.path)

    # -- metrics ---------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records; a line that does not parse (one cut by a kill, or being written) is skipped."""
        return self._parse_metrics()[0]

    def _parse_metrics(self) -> tuple[list[dict[str, Any]], int]:
        if not self.metrics_path.exists():
            return [], 0
        records, dropped = [], 0
        for line in self.metrics_path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = load_json(line, max_bytes=1 << 24)  # bounded: a crafted line cannot recurse
            except ValueError:
                dropped += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                dropped += 1
        return records, dropped

    def points(self) -> list[dict[str, Any]]:
        return [r for r in self.read_metrics() if r.get("kind") == "eval"]

    def _rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        self.write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))

    # -- status ----------------------------------------------------------------------------------
    def write_status(self, status: str, **info: Any) -> None:
        record = {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self.write_atomic(self.status_path, json.dumps(record, indent=2, default=str) + "\n")
        if status in ("done", "diverged"):
            release(self.path)  # the run is over: a resume or a sweep's next look may take it

    def read_status(self) -> dict[str, Any]:
        if not self.status_path.exists():
            return {}
        try:
            status = load_json(self.status_path.read_text(errors="replace"), max_bytes=1 << 24)
        except ValueError:
            return {}  # a damaged status.json says nothing: it is rewritten at the next checkpoint
        return status if isinstance(status, dict) else {}

    @staticmethod
    def write_atomic(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)


def same_sweep_cell(a: Any, b: Any) -> bool:
    """Whether two base paths name the same cell of a sweep (`.../cells/<id>`) seen from two places:
    a sweep directory that moved, or was resumed from another working directory, gives its cells'
    bases by their new path, and a started cell's config.yaml has the old one."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    pa, pb = Path(a).parts, Path(b).parts
    return len(pa) >= 2 and len(pb) >= 2 and pa[-2] == pb[-2] == "cells" and pa[-1] == pb[-1]


LOCK_NAME = ".lock"
# A sweep worker whose runner was killed exits within about half a second (it polls its parent),
# and the next runner may claim its cell at once: a claim waits this long for such a holder.
CLAIM_WAIT = 5.0
_HELD: dict[str, int] = {}  # run directories this process has claimed: resolved path -> lock fd


def claim(path: Path) -> None:
    """Take the run directory for this process with an exclusive `flock` on `path/.lock` (kept
    until the run ends or the process exits, a kill included: the kernel drops the lock). A
    second process is refused after CLAIM_WAIT seconds, naming the holder; this process may
    claim it again."""
    key = str(Path(path).resolve())
    if key in _HELD or fcntl is None:  # no flock (not POSIX): the started-run check is all there is
        return
    fd = os.open(Path(path) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + CLAIM_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:  # BlockingIOError: held by another process
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunBusy(f"{path} is in use by another forgetless run ({holder}); wait for it to end, "
                          "or choose another out_dir (--out)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _HELD[key] = fd


@contextlib.contextmanager
def claim_ends_with_the_call(path: str | Path | None) -> Iterator[None]:
    """Around `pretrain()` / `finetune()`: the claim taken inside is let go when the call ends,
    however it ends (a run that raised in a notebook or a sweep worker would otherwise hold its
    directory until the process exits)."""
    try:
        yield
    finally:
        if path is not None:
            release(Path(path))


def release(path: Path) -> None:
    fd = _HELD.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor drops the flock


class _Follower(RunDir):
    def append_metrics(self, record: dict[str, Any]) -> None:
        pass

    def write_status(self, status: str, **info: Any) -> None:
        pass
