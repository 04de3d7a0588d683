"""Generated code is checked in a separate, contained process tree, never in this one.

Each escape below is tried against every isolation level this machine offers. The only times
measured are the bound of issue 15 (the caller returns within timeout + 1 s), with time.monotonic.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from forgetless.data import SFTRecord, check_answer, check_answers, load_task, run_tests, sandbox

TESTS = [[[2], 7], [[0], 1], [[-3], -8]]  # f(x) = 3x + 1
ROOT = os.geteuid() == 0
LINUX = sys.platform.startswith("linux")
SLEEP = shutil.which("sleep") or "/bin/sleep"


def _namespaces_work() -> bool:
    """An independent check (not the module's probe) that unshare works on this machine."""
    if not (LINUX and shutil.which("unshare")):
        return False
    flags = ["--mount", "--net", "--pid", "--fork"] + ([] if ROOT else ["--user", "--map-root-user"])
    return subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0


NAMESPACES = _namespaces_work()
LEVELS = [pytest.param("namespaces", marks=pytest.mark.skipif(not NAMESPACES, reason="no unshare")),
          pytest.param("uid", marks=pytest.mark.skipif(not ROOT, reason="needs root")),
          pytest.param("rlimits", marks=pytest.mark.skipif(not LINUX, reason="needs /proc"))]


def _run(level: str, code: str, tests=TESTS, timeout: float = 2.0, memory_mb: int = 256):
    t0 = time.monotonic()
    report = sandbox._run(code, "f", tests, timeout, memory_mb, level)
    return report, time.monotonic() - t0


def _alive(marker: str) -> list[int]:
    """Pids whose command line holds `marker`: a `sleep <marker>` left by the code."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0"):
                pids.append(int(name))
        except OSError:
            pass
    return pids


def _marker() -> str:
    return f"{random.randint(10**6, 10**7)}.{os.getpid()}"  # a unique `sleep` duration


def test_this_machine_gets_namespaces_when_unshare_works():
    if not NAMESPACES:
        pytest.skip("unshare does not work here; the sandbox falls back (docs/guarantees.md)")
    assert sandbox.isolation() == "namespaces"


def test_correct_and_wrong_functions():
    assert run_tests("def f(x):\n    return 3 * x + 1\n", "f", TESTS).ok
    report = run_tests("def f(x):\n    return 3 * x\n", "f", TESTS)
    assert (report.passed, report.total, report.ok) == (0, 3, False)
    assert run_tests("def f(x):\n    return True if x == 0 else 3 * x + 1\n", "f", TESTS).passed == 2
    assert run_tests("def f(x) return", "f", TESTS).error.startswith("SyntaxError")
    assert run_tests("def g(x):\n    return 1\n", "f", TESTS).error.startswith("KeyError")
    report = run_tests("def f(x):\n    return 1 // x\n", "f", TESTS)
    assert report.passed == 0 and report.errors == ("", "ZeroDivisionError", "")


def test_infinite_loop_is_killed():
    report = run_tests("def f(x):\n    while True:\n        pass\n", "f", TESTS, timeout=1.0)
    assert not report.ok and "timeout" in report.error


@pytest.mark.parametrize("level", LEVELS)
def test_memory_limit_raises_memory_error(level):
    hog = "def f(x):\n    return len(bytes(384 << 20)) * 0 + 3 * x + 1\n"  # calloc: fast
    report, _ = _run(level, hog, memory_mb=256)
    assert report.errors == ("MemoryError",) * 3, report
    report, _ = _run(level, "blob = bytes(384 << 20)\ndef f(x):\n    return 3 * x + 1\n")
    assert report.error.startswith("MemoryError"), report
    # the same code passes under a larger limit: what failed above was the limit, nothing else
    report, _ = _run(level, hog, memory_mb=1024)
    assert report.ok, report


@pytest.mark.parametrize("level", LEVELS)
def test_setsid_grandchild_dies_at_the_timeout(level):
    marker = _marker()
    code = (f"import os\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n"
            f"        os.execv({SLEEP!r}, ['sleep', {marker!r}])\n    while True:\n        pass\n")
    report, took = _run(level, code, timeout=1.0)
    assert "timeout" in report.error and took < 1.0 + 1.0, (report, took)
    assert _alive(marker) == []


@pytest.mark.parametrize("level", LEVELS)
def test_grandchild_holding_stdout_does_not_hang_the_caller(level):
    marker = _marker()
    code = (f"import os\ndef f(x):\n    if x == 2 and os.fork() == 0:\n        os.setsid()\n"
            f"        os.execv({SLEEP!r}, ['sleep', {marker!r}])\n    return 3 * x + 1\n")
    report, took = _run(level, code, timeout=2.0)
    assert report.ok and took < 2.0 + 1.0, (report, took)
    assert _alive(marker) == []


@pytest.mark.parametrize("level", LEVELS)
def test_bounded_fork_bomb_is_contained(level):
    marker = _marker()
    code = (f"import os\ndef f(x):\n    for _ in range(200):\n        try:\n"
            f"            if os.fork() == 0:\n"
            f"                os.execv({SLEEP!r}, ['sleep', {marker!r}])\n"
            f"        except OSError:\n            pass\n    while True:\n        pass\n")
    report, took = _run(level, code, timeout=1.0)
    assert "timeout" in report.error and took < 1.0 + 1.0, (report, took)
    assert _alive(marker) == []


def test_process_count_is_limited():
    if not (NAMESPACES or ROOT):
        pytest.skip("RLIMIT_NPROC counts every process of the user running the tests")
    level = "namespaces" if NAMESPACES else "uid"
    code = ("import os\ndef f(x):\n    n = 0\n    for _ in range(200):\n        try:\n"
            "            pid = os.fork()\n        except OSError:\n            break\n"
            "        if pid == 0:\n            import time\n            time.sleep(5)\n"
            "            os._exit(0)\n        n += 1\n    return n < x\n")
    report, _ = _run(level, code, tests=[[[sandbox.NPROC], True]], timeout=3.0)
    # forks stop below RLIMIT_NPROC: the code itself is one of the uid's processes (and other
    # sandboxes running as nobody at the same time count too, hence no lower bound)
    assert report.ok, report


@pytest.fixture
def outside():
    """A marker file outside the scratch dir and outside /tmp (which the sandbox replaces),
    writable by anyone, so only the read-only view stops the namespaces level."""
    base = Path(tempfile.mkdtemp(prefix="forgetless-outside-", dir="/var/tmp"
                                 if os.access("/var/tmp", os.W_OK) else None))
    base.chmod(0o777)
    marker = base / "marker.txt"
    marker.write_bytes(b"precious contents\n")
    marker.chmod(0o666)
    yield marker
    shutil.rmtree(base)


ATTACKS = {
    "delete": "os.remove(m)",
    "truncate": "os.truncate(m, 0)",
    "open_w": "open(m, 'w').close()",
    "mmap": ("fd = os.open(m, os.O_RDWR)\n        mm = mmap.mmap(fd, 0)\n"
             "        mm[:4] = b'PWND'\n        mm.flush()"),
    "rename": "os.rename(m, m + '.moved')",
    "chmod": "os.chmod(m, 0o600)",
    "create": "open(os.path.join(os.path.dirname(m), 'new.txt'), 'x').close()",
    "mkdir": "os.mkdir(os.path.join(os.path.dirname(m), 'newdir'))",
    # a user namespace of its own gives back capabilities: remount the folder writable there
    "nested_userns": ("libc = ctypes.CDLL(None, use_errno=True)\n"
                      "        if libc.unshare(0x10000000 | 0x20000) == 0:  # CLONE_NEWUSER|NEWNS\n"
                      "            libc.mount(b'none', os.path.dirname(m).encode(), None,\n"
                      "                       32 | 4096 | 16384, None)  # remount, bind, rec\n"
                      "        open(m, 'w').close()"),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_files_outside_the_scratch_dir_are_untouched(level, attack, outside):
    if level == "rlimits":
        pytest.skip("without namespaces or root the code runs as you and can change your files")
    if level == "uid":  # a file only root may write: the uid is the layer under test here
        outside.parent.chmod(0o755)
        outside.chmod(0o644)
    before = (outside.read_bytes(), outside.stat().st_mode, outside.stat().st_mtime_ns)
    code = (f"import ctypes, mmap, os\ndef f(x):\n    m = {str(outside)!r}\n    try:\n"
            f"        {ATTACKS[attack]}\n        return 'done'\n"
            f"    except OSError as err:\n        return 'failed'\n")
    report, _ = _run(level, code, tests=[[[0], "failed"]])
    assert report.ok, report
    assert (outside.read_bytes(), outside.stat().st_mode, outside.stat().st_mtime_ns) == before
    assert sorted(p.name for p in outside.parent.iterdir()) == ["marker.txt"]


def test_scratch_dir_is_writable_but_small():
    if not NAMESPACES:
        pytest.skip("the writable scratch tmpfs exists at the namespaces level only")
    code = ("import os\ndef f(x):\n    with open('note.txt', 'w') as fh:\n        fh.write('hi')\n"
            "    ok = open('note.txt').read() == 'hi'\n    try:\n"
            "        with open('big', 'wb') as fh:\n"
            "            fh.write(bytes((x + 1) << 20))\n        return [ok, 'wrote']\n"
            "    except OSError:\n        return [ok, 'refused']\n")
    report, _ = _run("namespaces", code, tests=[[[sandbox.SCRATCH_MB], [True, "refused"]],
                                                [[1], [True, "wrote"]]])
    assert report.ok, report


def test_no_network_inside():
    if not NAMESPACES:
        pytest.skip("the network is only cut at the namespaces level")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from here
        server.accept()[0].close()
        code = ("import errno, socket\ndef f(port):\n    try:\n"
                "        socket.create_connection(('127.0.0.1', port), timeout=1).close()\n"
                "        return 'connected'\n    except OSError as err:\n"
                "        return errno.errorcode.get(err.errno, 'timeout')\n")
        refused = [[[port], "ENETUNREACH"], [[port], "ECONNREFUSED"]]
        report, _ = _run("namespaces", code, tests=refused)
        assert report.passed == 1, report  # one of the two, and never 'connected'
        server.settimeout(0.1)
        with pytest.raises(TimeoutError):
            server.accept()


@pytest.mark.parametrize("level", LEVELS)
def test_code_runs_in_another_process_under_another_uid(level):
    spy = "import os\ndef f(x):\n    return [os.getpid(), os.getuid()]\n"
    report, _ = _run(level, spy, tests=[[[0], [os.getpid(), os.getuid()]]])
    assert report.total == 1 and report.passed == 0  # the function saw a different pid
    if ROOT and level != "rlimits":
        uid = "import os\ndef f(x):\n    return os.getuid()\n"
        assert _run(level, uid, tests=[[[0], sandbox.NOBODY]])[0].ok


def test_check_answer_on_generated_code_task():
    for rec in load_task("code", "validation", n=5, seed=0):
        spec = json.loads(rec.answer)
        assert check_answer("code", rec, rec.response + "\n@@ Instruction\nmore")
        assert check_answer("code", rec, f"```python\n{rec.response}```\nThat is all.")
        wrong = rec.response.replace("return ", "return None if True else ")
        assert not check_answer("code", rec, wrong)
        assert spec["entry"] in rec.response
    bare = SFTRecord("p", "r", None)
    try:
        check_answer("code", bare, "x")
    except ValueError as err:
        assert "no checkable answer" in str(err)
    else:
        raise AssertionError("a record without answer must be refused")


def test_check_answers_batch_matches_one_by_one():
    records = load_task("code", "train", n=6, seed=4)
    texts = [r.response if i % 2 else "def nothing():\n    pass\n" for i, r in enumerate(records)]
    assert check_answers("code", records, texts, workers=3) == [bool(i % 2) for i in range(6)]
