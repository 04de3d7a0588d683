"""How long the command line takes to answer, against `import torch`, measured in one run.

    .venv/bin/python benchmarks/cli_startup.py                      # 7 rounds
    .venv/bin/python benchmarks/cli_startup.py --rounds 9 --before /tmp/old/src

Each round runs every command once, in turn, as a fresh process (so load that comes and goes hits
all of them alike); the figure is the median wall time over rounds. `--before SRC` also times
`--help` of another source tree (e.g. `git archive COMMIT src | tar -x -C /tmp/old`) through
PYTHONPATH. The goal of issue 23 §2: `forgetless --help` and `forgetless finetune --help` at most
half of `import torch`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

PY = sys.executable


def _cases(before: str | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    cases = {
        "python -c 'import torch'": ([PY, "-c", "import torch"], {}),
        "python -c 'import forgetless.cli'": ([PY, "-c", "import forgetless.cli"], {}),
        "forgetless --help": ([PY, "-m", "forgetless", "--help"], {}),
        "forgetless finetune --help": ([PY, "-m", "forgetless", "finetune", "--help"], {}),
        "forgetless optimizers": ([PY, "-m", "forgetless", "optimizers"], {}),
    }
    if before:
        cases["forgetless --help (before)"] = ([PY, "-m", "forgetless", "--help"], {"PYTHONPATH": before})
        cases["forgetless finetune --help (before)"] = (
            [PY, "-m", "forgetless", "finetune", "--help"], {"PYTHONPATH": before})
    return cases


def _wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, "COLUMNS": "100", **env}, capture_output=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.decode()[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--before", help="another tree's src/ to time --help of, for comparison")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()

    cases = _cases(args.before)
    load_before = os.getloadavg()
    for argv, env in cases.values():  # warm the file cache once: the figures are warm starts
        _wall(argv, env)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (argv, env) in cases.items():
            times[name].append(_wall(argv, env))
    load_after = os.getloadavg()

    median = {name: statistics.median(ts) for name, ts in times.items()}
    torch_s = median["python -c 'import torch'"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in load_after)}; median of {args.rounds} rounds")
    print(f"{'command':<40} {'median s':>9} {'min s':>7} {'max s':>7} {'/ import torch':>15}")
    for name, ts in times.items():
        print(f"{name:<40} {median[name]:>9.2f} {min(ts):>7.2f} {max(ts):>7.2f} {median[name] / torch_s:>15.2f}")
    goal = all(median[n] <= 0.5 * torch_s for n in ("forgetless --help", "forgetless finetune --help"))
    print(f"goal (both --help at most half of import torch): {'met' if goal else 'NOT met'}")
    if args.json:
        print(json.dumps({"load_before": load_before, "load_after": load_after, "times": times,
                          "median": median}, indent=1))


if __name__ == "__main__":
    main()
