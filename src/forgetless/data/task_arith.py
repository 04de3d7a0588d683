"""`arith`: multi-step arithmetic word problems with step-by-step solutions (MetaMathQA analogue).

Every problem is two or three integer operations on numbers below 100; the solution writes each
step as "a op b = c." and ends "The answer is: N", exactly the MetaMathQA answer convention, so the
same answer extraction checks both. A new skill that needs a pattern, not recall.
"""

from __future__ import annotations

import random
import re

from .sft import SFTRecord

NAMES = ["Ann", "Ben", "Cara", "Dan", "Eve", "Finn", "Gia", "Hal", "Ida", "Joe", "Kim", "Leo",
         "Mia", "Ned", "Oli", "Pam", "Ravi", "Sam", "Tess", "Uma", "Vic", "Wes", "Yara", "Zoe"]
ITEMS = ["apples", "books", "coins", "pens", "stamps", "shells", "cards", "marbles", "eggs",
         "cups", "stickers", "nuts", "rocks", "bolts", "tickets", "beads"]

ANSWER_RE = re.compile(r"The answer is:?\s*\$?(-?[\d,]*\.?\d+)")


def _problem(rng: random.Random) -> tuple[str, list[str], int]:
    """(question, solution steps, answer) for one random template."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(6)
    if kind == 0:
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        c = rng.randint(1, a + b)
        return (f"{name} has {a} {item}, gets {b} more and then gives away {c}. How many {item} "
                f"does {name} have now?", [f"{a} + {b} = {a + b}.", f"{a + b} - {c} = {a + b - c}."],
                a + b - c)
    if kind == 1:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        c = rng.randint(1, a * b)
        return (f"There are {b} boxes with {a} {item} in each. {name} takes out {c} {item}. How "
                f"many {item} are left?", [f"{a} * {b} = {a * b}.", f"{a * b} - {c} = {a * b - c}."],
                a * b - c)
    if kind == 2:
        a, b, c = rng.randint(2, 15), rng.randint(2, 9), rng.randint(1, 30)
        return (f"{name} collects {a} {item} a day for {b} days, then finds {c} more. How many "
                f"{item} does {name} have?", [f"{a} * {b} = {a * b}.", f"{a * b} + {c} = {a * b + c}."],
                a * b + c)
    if kind == 3:
        b, q, c = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
        a = b * q
        return (f"{name} shares {a} {item} equally among {b} friends. Each friend then gets {c} "
                f"more. How many {item} does each friend have?",
                [f"{a} / {b} = {q}.", f"{q} + {c} = {q + c}."], q + c)
    if kind == 4:
        a, b, c = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
        d = rng.randint(1, a * b + c)
        s = a * b + c
        return (f"{name} buys {a} packs of {b} {item} and {c} loose {item}, then loses {d}. How "
                f"many {item} are left?",
                [f"{a} * {b} = {a * b}.", f"{a * b} + {c} = {s}.", f"{s} - {d} = {s - d}."], s - d)
    a, b = rng.randint(2, 20), rng.randint(2, 9)
    c = rng.randint(a * b, a * b + 50)
    return (f"{item.capitalize()} cost {a} dollars each. {name} buys {b} and pays with {c} "
            f"dollars. How much change does {name} get?",
            [f"{a} * {b} = {a * b}.", f"{c} - {a * b} = {c - a * b}."], c - a * b)


def generate(rng: random.Random) -> SFTRecord:
    question, steps, answer = _problem(rng)
    return SFTRecord(prompt=f"Question: {question}\nAnswer:",
                     response=" " + " ".join(steps) + f" The answer is: {answer}",
                     answer=str(answer))


def extract_answer(text: str) -> str | None:
    """The number after the first "The answer is:" (commas dropped), or None: a model that
    rambles on past its answer is judged on the answer it gave first."""
    found = ANSWER_RE.findall(text)
    return found[0].replace(",", "") if found else None


def check(record: SFTRecord, generated: str) -> bool:
    got = extract_answer(generated)
    if got is None or record.answer is None:
        return False
    try:
        return float(got) == float(record.answer.replace(",", ""))
    except ValueError:
        return got.strip() == record.answer.strip()
