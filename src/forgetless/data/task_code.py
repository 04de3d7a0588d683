"""`code`: short Python functions from a one-line description (the Magicoder analogue).

Each record is one of fifteen function families with random constants (so the exact function is
not in the standard-library corpus), the reference solution as the response, and hidden test
cases in `record.answer` as JSON {"entry": "f", "tests": [[args, expected], ...]}. The expected
values come from running the reference solution here: it is our own generated code, trusted.
Model output is checked only through `sandbox.run_tests`, in a separate process.
"""

from __future__ import annotations

import json
import random
import re

from .sandbox import run_tests
from .sft import SFTRecord

PROMPT = "@@ Instruction\n{description}\n\n@@ Response\n"
ENTRY_NAMES = ("f", "g", "h", "solve", "calc", "compute")


def _family(rng: random.Random) -> tuple[str, str, str]:
    """(argument kind, description, return expression) of a random function."""
    a, b, k = rng.randint(2, 19), rng.randint(1, 60), rng.randint(2, 9)
    kind = rng.randrange(15)
    if kind == 0:
        return "x", f"returns {a} times x plus {b}", f"{a} * x + {b}"
    if kind == 1:
        return ("xs", f"returns the elements of the list xs that are divisible by {k}, each plus {b}",
                f"[x + {b} for x in xs if x % {k} == 0]")
    if kind == 2:
        return "n", f"returns the sum of i * i for every i in range(0, n, {k})", \
            f"sum(i * i for i in range(0, n, {k}))"
    if kind == 3:
        return "s", f"returns the string s reversed and repeated {k} times", f"s[::-1] * {k}"
    if kind == 4:
        return ("xs", f"returns {a} times the difference between the largest and smallest element "
                "of the list xs, or 0 when xs is empty",
                f"{a} * (max(xs) - min(xs)) if xs else 0")
    if kind == 5:
        lo, hi = -b, b + a
        return "x", f"returns x clamped to the range from {lo} to {hi}", f"min(max(x, {lo}), {hi})"
    if kind == 6:
        return "n", f"returns the sum of the decimal digits of the non-negative integer n, plus {b}", \
            f"sum(int(d) for d in str(n)) + {b}"
    if kind == 7:
        start = rng.randint(0, 2)
        return "xs", f"returns every {k}th element of the list xs, starting at index {start}", \
            f"xs[{start}::{k}]"
    if kind == 8:
        return "x", f"returns x // {k} when x is even and x * {a} otherwise", \
            f"x // {k} if x % 2 == 0 else x * {a}"
    if kind == 9:
        return ("s", f"returns the lengths of the words of s that have more than {k - 1} letters",
                f"[len(w) for w in s.split() if len(w) > {k - 1}]")
    if kind == 10:
        return "n", f"returns 'yes' if n is divisible by {a} or by {k}, else 'no'", \
            f"'yes' if n % {a} == 0 or n % {k} == 0 else 'no'"
    if kind == 11:
        return "xs", f"returns the number of elements of the list xs that are greater than " \
            f"{b - 30}", f"sum(1 for x in xs if x > {b - 30})"
    if kind == 12:
        m = rng.randint(3, 20)
        return "xs", f"returns the elements of the list xs multiplied by {a}, each modulo {m}", \
            f"[x * {a} % {m} for x in xs]"
    if kind == 13:
        old, new = rng.sample("abcde", 2)
        return "s", f"returns s with every '{old}' replaced by '{new}'", f"s.replace('{old}', '{new}')"
    return ("xs", f"returns {a} times the sum of the elements of xs at even indices minus the sum "
            "of those at odd indices", f"{a} * (sum(xs[0::2]) - sum(xs[1::2]))")


def _inputs(kind: str, rng: random.Random, count: int = 6) -> list[list]:
    letters = "abcde "
    make = {
        "x": lambda: rng.randint(-30, 30),
        "n": lambda: rng.randint(0, 40),
        "xs": lambda: [rng.randint(-20, 20) for _ in range(rng.randint(0, 7))],
        "s": lambda: "".join(rng.choice(letters) for _ in range(rng.randint(0, 12))),
    }[kind]
    return [[make()] for _ in range(count)]


def generate(rng: random.Random) -> SFTRecord:
    arg, desc, expr = _family(rng)
    name = rng.choice(ENTRY_NAMES)
    code = f"def {name}({arg}):\n    return {expr}\n"
    scope: dict = {}
    exec(code, scope)  # our own template, not model output: see the module docstring
    tests = [[args, scope[name](*args)] for args in _inputs(arg, rng)]
    description = f"Write a Python function {name}({arg}) that {desc}."
    return SFTRecord(PROMPT.format(description=description), code,
                     json.dumps({"entry": name, "tests": tests}))


def extract_code(text: str) -> str:
    """The function definition(s) in a model's output: the first ``` block if there is one, else
    the lines from the first `def` up to the first unindented line that is not a def/import."""
    fenced = re.search(r"```(?:python|py)?\n(.*?)(?:```|$)", text, re.DOTALL)
    if fenced:
        return fenced.group(1)
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("def ")), None)
    if start is None:
        return text
    keep = [lines[start]]
    for line in lines[start + 1:]:
        if line and not line[0].isspace() and not line.startswith(("def ", "import ", "from ")):
            break
        keep.append(line)
    return "\n".join(keep) + "\n"


def check(record: SFTRecord, generated: str, timeout: float = 5.0, memory_mb: int = 256) -> bool:
    spec = json.loads(record.answer or "{}")
    if "tests" not in spec:
        raise ValueError("record.answer holds no test cases (expected JSON with 'entry', 'tests')")
    code = extract_code(generated)
    return run_tests(code, spec.get("entry", "f"), spec["tests"], timeout, memory_mb).ok
