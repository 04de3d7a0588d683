"""Run untrusted generated Python against test cases in a separate, resource-limited process.

Model output is untrusted code: it is never exec'd in this process. Each check starts a fresh
`python -I -S` in an empty temporary directory with an empty environment, its own session (so a
timeout kills everything it spawned), and POSIX limits set before it starts: CPU seconds, address
space, no file writes (RLIMIT_FSIZE 0), few open files and processes. The child prints the
function's results; the comparison with the expected values happens here, in the parent.
Not a security boundary against a determined attacker (no network or filesystem namespace): a
guard against the infinite loops, memory blow-ups and stray writes that model samples produce.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Reads {"code", "entry", "tests"} from stdin, prints one JSON line of per-test results.
_RUNNER = r"""
import json, sys
job = json.loads(sys.stdin.read())
out = []
try:
    scope = {"__name__": "__sandbox__"}
    exec(compile(job["code"], "<generated>", "exec"), scope)
    fn = scope[job["entry"]]
except BaseException as err:
    print(json.dumps({"error": type(err).__name__ + ": " + str(err)[:200]}), flush=True)
    raise SystemExit(0)
for args, _ in job["tests"]:
    try:
        value = fn(*args)
        out.append({"ok": True, "value": json.loads(json.dumps(value))})
    except BaseException as err:
        out.append({"ok": False, "error": type(err).__name__})
sys.stdout.write("\n" + json.dumps({"results": out}) + "\n")
sys.stdout.flush()
"""


@dataclass(frozen=True)
class TestReport:
    passed: int
    total: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.passed == self.total


def _limits(cpu_s: int, memory_mb: int):
    def apply() -> None:  # runs in the child between fork and exec
        import resource

        mem = memory_mb * 1024 * 1024
        for res, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, mem),
                           (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 32),
                           (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (value, value))

    return apply


def _same(got, want) -> bool:
    # JSON text, not ==, so that True does not pass for 1 nor 2.0 for 2.
    return json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def run_tests(code: str, entry: str, tests: list, timeout: float = 5.0,
              memory_mb: int = 256) -> TestReport:
    """Define `code` in a sandboxed interpreter and call `entry(*args)` for each (args, expected)
    of `tests`; a test passes when the JSON form of the result equals `expected`."""
    if os.name != "posix":
        raise RuntimeError("code checking needs a POSIX system (resource limits in a child)")
    payload = json.dumps({"code": code, "entry": entry, "tests": tests})
    with tempfile.TemporaryDirectory(prefix="forgetless-sandbox-") as workdir:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _RUNNER], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, env={},
            start_new_session=True, preexec_fn=_limits(int(timeout) + 1, memory_mb))
        try:
            stdout, _ = proc.communicate(payload.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return TestReport(0, len(tests), f"timeout after {timeout}s")
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    if "error" in report:
        return TestReport(0, len(tests), report["error"])
    results = report.get("results")
    if not isinstance(results, list) or len(results) != len(tests):
        return TestReport(0, len(tests), f"the process died (exit code {proc.returncode})")
    passed = sum(1 for r, (_, want) in zip(results, tests, strict=True)
                 if isinstance(r, dict) and r.get("ok") and _same(r.get("value"), want))
    return TestReport(passed, len(tests))
