"""A stand-in for the training box, for runner tests only: deterministic points, no model.

Points follow a closed form of (lr, step) so tests can check the store against it independently.
`settings.fake`: "ok", "fail" (raises), "explode" (task loss grows 10x per eval), "nan" (reports a
diverged run the way the training box does). `settings.sleep`: seconds per eval.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace


def expected_point(lr: float, step: int) -> tuple[float, float]:
    return 4.0 + lr * step * 100.0, 3.0 - lr * step * 10.0


def fake_executor(cell, out_dir: Path, base_dir: str | None, on_eval) -> SimpleNamespace:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "calls.txt", "a") as f:  # one line per execution: tests count them
        f.write(f"{os.getpid()}\n")
    cfg = cell.config
    if cell.base_id is not None:
        assert base_dir and (Path(base_dir) / "final").read_text() == cell.base_id
    mode = cfg["settings"].get("fake", "ok")
    if mode == "fail":
        raise RuntimeError("fake failure for the test")
    steps, every = cfg.get("steps", 4), cfg.get("eval_every", 2)
    points = []
    for k, step in enumerate(range(0, steps + 1, every)):
        forgetting, learning = expected_point(cfg["lr"], step)
        if mode == "explode":
            learning = 3.0 * 10.0**k
        point = {"step": step, "tokens": step * 64, "forgetting": forgetting,
                 "learning": None if cfg["kind"] == "pretrain" else learning,
                 "accuracy": None, "wall_time": time.time()}
        if mode == "nan" and k == 2:
            return SimpleNamespace(status="diverged", points=points, final_checkpoint=None)
        on_eval(point)
        points.append(point)
        time.sleep(cfg["settings"].get("sleep", 0.0))
    ckpt = out_dir / "final"
    ckpt.write_text(cell.cell_id)
    return SimpleNamespace(status="done", points=points, final_checkpoint=ckpt)
