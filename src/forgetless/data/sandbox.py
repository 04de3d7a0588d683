"""Run untrusted generated Python against test cases in a separate, contained process tree.

Model output is untrusted code: it is never exec'd in this process. Each check starts
sandbox_supervisor.py as a script (`python -I -S sandbox_supervisor.py CONFIG`, standard library only): a trusted supervisor
that reads the job, forks the child that runs the code, waits for it to a deadline, then kills
every process the code left behind and prints one JSON line to us. Isolation levels, best first
(`isolation()` says which one this machine gets; docs/guarantees.md says what each guarantees):

- "namespaces" (Linux with `unshare(1)` that works here): the supervisor is pid 1 of a new pid
  namespace, so when it exits the kernel kills everything the code spawned, setsid() or not. New
  mount, network and IPC namespaces: every mount read-only (mount_setattr, recursive), a 16 MB
  tmpfs on /tmp as the only writable place, an empty /run, no network interface up. The code runs
  as uid 65534 (nobody) when we are root, else as the mapped uid with no capabilities at all.
- "uid" (root, no namespaces): the code runs as nobody in a private scratch dir, cannot write a
  byte (RLIMIT_FSIZE 0), and the supervisor is a child subreaper that kills every descendant.
- "rlimits" (anything else POSIX): limits and the subreaper kill only; the code runs as you.

Always: a new session, rlimits (CPU seconds, address space, processes, open files, no core
files), no_new_privs, and a hard wall-clock deadline on reading the output here (select, never a
blocking communicate()), after which the whole process group is killed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from forgetless.data import sandbox_supervisor as _supervisor
from forgetless.data.sandbox_supervisor import (  # noqa: F401  (NPROC: re-exported for callers and tests)
    _UNSHARE_FLAGS,
    MAX_OUTPUT,
    NOBODY,
    NPROC,
    SCRATCH_MB,
    _kill_tree,
)

_GRACE = 0.75  # seconds past the timeout before we stop waiting for the supervisor


@dataclass(frozen=True)
class TestReport:
    passed: int
    total: int
    error: str | None = None  # the code could not be defined, timed out, or its process died
    errors: tuple[str, ...] = ()  # per test: the exception type it raised, "" when it returned

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.passed == self.total


# ---------------------------------------------------------------- the caller side

_ISOLATION: str | None = None
_ISOLATION_LOCK = threading.Lock()


def isolation() -> str:
    """The best level that works on this machine: "namespaces", "uid" or "rlimits" (tried once
    per process with a trivial function, then remembered)."""
    global _ISOLATION
    with _ISOLATION_LOCK:
        if _ISOLATION is None:
            probe = "def f():\n    return 1\n"
            if shutil.which("unshare") and sys.platform.startswith("linux") and \
                    _run(probe, "f", [[[], 1]], 10.0, 256, "namespaces").ok:
                _ISOLATION = "namespaces"
            else:
                _ISOLATION = "uid" if os.geteuid() == 0 else "rlimits"
    return _ISOLATION


def _read_to_deadline(fd: int, deadline: float) -> bytes | None:
    """Everything written to `fd` until EOF; None when the deadline comes first."""
    data = bytearray()
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return bytes(data)
            data += chunk[:max(0, 4 * MAX_OUTPUT - len(data))]  # JSON escaping may grow it
    return None


def _run(code: str, entry: str, tests: list, timeout: float, memory_mb: int,
         level: str) -> TestReport:
    root = os.geteuid() == 0
    cmd = [sys.executable, "-I", "-S", os.path.abspath(_supervisor.__file__)]
    with tempfile.TemporaryDirectory(prefix="forgetless-sandbox-") as workdir, \
            tempfile.TemporaryFile() as job:
        scratch = os.path.join(workdir, "scratch")
        os.mkdir(scratch, 0o700)
        if level == "namespaces":
            cmd = [shutil.which("unshare") or "unshare", *_UNSHARE_FLAGS,
                   *([] if root else ["--user", "--map-root-user"]), "--", *cmd]
            scratch = "/tmp"  # the private tmpfs inside the namespace
        elif level == "uid":
            os.chmod(workdir, 0o711)  # nobody may pass through to its scratch dir, not list
            os.chown(scratch, NOBODY, NOBODY)
        cfg = {"namespaces": level == "namespaces", "to_nobody": root and level != "rlimits",
               "scratch": scratch, "timeout": timeout, "cpu_s": int(timeout) + 1,
               "memory_mb": memory_mb, "fsize": SCRATCH_MB << 20 if level == "namespaces" else 0}
        job.write(json.dumps({"code": code, "entry": entry, "tests": tests}).encode())
        job.seek(0)
        deadline = time.monotonic() + timeout + _GRACE
        proc = subprocess.Popen([*cmd, json.dumps(cfg)], stdin=job, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=workdir, env={},
                                start_new_session=True)
        raw = None
        try:
            raw = _read_to_deadline(proc.stdout.fileno(), deadline)
        finally:
            if raw is None:  # the supervisor overran: take its tree down ourselves
                _kill_tree(proc.pid, seconds=0.2)
            try:  # and whatever is left in its group, which lives on until we reap proc
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.stdout.close()
            proc.wait()
    if raw is None:
        return TestReport(0, len(tests), f"timeout after {timeout}s (the sandbox was killed)")
    try:
        return _read_report(raw, tests, timeout, proc.returncode)
    except Exception as err:  # noqa: BLE001 - untrusted output is a wrong answer, never a crash
        return TestReport(0, len(tests), f"unreadable output ({type(err).__name__})")


def _parse(text: str | bytes, max_bytes: int):
    """Bounded JSON (size and depth): the code's output is untrusted, and Python's json raises
    RecursionError, not ValueError, on `'[' * 99999`. None when it is not JSON within bounds."""
    from forgetless.untrusted import load_json  # the caller side only: the script is stdlib-only

    try:
        return load_json(text, max_bytes=max_bytes)
    except ValueError:
        return None


def _read_report(raw: bytes, tests: list, timeout: float, returncode: int | None) -> TestReport:
    """The TestReport of the supervisor's output; any shape but the expected one is a failure."""
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    outer = _parse(lines[-1], 8 * MAX_OUTPUT) if lines else None
    if not isinstance(outer, dict):
        outer = {"setup_error": f"no report (exit code {returncode})"}
    if "setup_error" in outer:
        return TestReport(0, len(tests), f"sandbox setup failed: {outer['setup_error']}")
    if outer.get("timeout"):
        return TestReport(0, len(tests), f"timeout after {timeout}s")
    stdout = outer.get("stdout", "")
    lines = stdout.strip().splitlines() if isinstance(stdout, str) else []
    report = _parse(lines[-1], MAX_OUTPUT) if lines else {}
    if not isinstance(report, dict):
        report = {}
    for key in ("setup_error", "error"):
        if key in report:
            prefix = "sandbox setup failed: " if key == "setup_error" else ""
            return TestReport(0, len(tests), prefix + str(report[key]))
    results = report.get("results")
    if not isinstance(results, list) or len(results) != len(tests) or \
            not all(isinstance(r, dict) for r in results):
        how = f"signal {outer['signal']}" if "signal" in outer else f"exit code {outer.get('exit')}"
        return TestReport(0, len(tests), f"the process ended without results ({how})")
    passed = sum(1 for r, (_, want) in zip(results, tests, strict=True)
                 if r.get("ok") and _same(r.get("value"), want))
    errors = tuple("" if r.get("ok") else str(r.get("error", "")) for r in results)
    return TestReport(passed, len(tests), errors=errors)


def _same(got, want) -> bool:
    # JSON text, not ==, so that True does not pass for 1 nor 2.0 for 2.
    return json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def run_tests(code: str, entry: str, tests: list, timeout: float = 5.0,
              memory_mb: int = 256) -> TestReport:
    """Define `code` in a sandboxed interpreter and call `entry(*args)` for each (args, expected)
    of `tests`; a test passes when the JSON form of the result equals `expected`."""
    if os.name != "posix":
        raise RuntimeError("code checking needs a POSIX system (resource limits in a child)")
    try:
        return _run(code, entry, tests, timeout, memory_mb, isolation())
    except OSError as err:  # no process could be started (EAGAIN at the process limit): a failed check
        return TestReport(0, len(tests), f"the sandbox could not start ({err.strerror or err})")
