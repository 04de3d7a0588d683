"""Generated code is checked in a separate, limited process, never in this one."""

from __future__ import annotations

import json
import os

from forgetless.data import SFTRecord, check_answer, check_answers, load_task, run_tests

TESTS = [[[2], 7], [[0], 1], [[-3], -8]]  # f(x) = 3x + 1


def test_correct_and_wrong_functions():
    assert run_tests("def f(x):\n    return 3 * x + 1\n", "f", TESTS).ok
    report = run_tests("def f(x):\n    return 3 * x\n", "f", TESTS)
    assert (report.passed, report.total, report.ok) == (0, 3, False)
    assert run_tests("def f(x):\n    return True if x == 0 else 3 * x + 1\n", "f", TESTS).passed == 2
    assert run_tests("def f(x) return", "f", TESTS).error.startswith("SyntaxError")
    assert run_tests("def g(x):\n    return 1\n", "f", TESTS).error.startswith("KeyError")


def test_infinite_loop_is_killed():
    report = run_tests("def f(x):\n    while True:\n        pass\n", "f", TESTS, timeout=1.0)
    assert not report.ok and "timeout" in report.error


def test_memory_and_file_limits(tmp_path):
    hog = "def f(x):\n    return len(bytearray(2 * 1024 ** 3))\n"
    assert not run_tests(hog, "f", TESTS, memory_mb=256).ok
    target = tmp_path / "written.txt"
    writer = (f"def f(x):\n    with open({str(target)!r}, 'w') as fh:\n        fh.write('x')\n"
              "    return 3 * x + 1\n")
    assert not run_tests(writer, "f", TESTS).ok  # RLIMIT_FSIZE=0: the write fails (EFBIG)
    assert not target.exists() or target.stat().st_size == 0


def test_code_runs_in_another_process():
    spy = "import os\ndef f(x):\n    return os.getpid()\n"
    report = run_tests(spy, "f", [[[0], os.getpid()]])
    assert report.total == 1 and report.passed == 0  # the function saw a different pid


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
