"""Generated tasks: determinism, disjoint splits, and answers verified independently."""

from __future__ import annotations

import re

import pytest

from forgetless.data import SFTRecord, check_answer, load_task


@pytest.mark.parametrize("name", ["arith", "instruct", "code"])
def test_generated_tasks_are_deterministic_and_splits_disjoint(name):
    train = load_task(name, "train", n=300, seed=0)
    assert train == load_task(name, "train", n=300, seed=0)
    assert train != load_task(name, "train", n=300, seed=1)
    val = load_task(name, "validation", n=60, seed=0)
    other_seed_val = load_task(name, "validation", n=60, seed=5)
    prompts = {r.prompt for r in train}
    assert len(prompts) == 300
    assert prompts.isdisjoint(r.prompt for r in val + other_seed_val)
    assert all(isinstance(r, SFTRecord) and r.answer for r in train + val)


def test_arith_steps_are_correct_arithmetic():
    step = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)\.")
    for rec in load_task("arith", "train", n=200, seed=3):
        steps = step.findall(rec.response)
        assert 2 <= len(steps) <= 3
        for a, op, b, c in steps:
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == c
        assert rec.response.endswith(f"The answer is: {steps[-1][3]}")
        assert rec.answer == steps[-1][3] and int(rec.answer) >= 0
        assert check_answer("arith", rec, rec.response)
        assert not check_answer("arith", rec, rec.response.replace(
            f"is: {rec.answer}", f"is: {int(rec.answer) + 1}"))


@pytest.mark.parametrize("name", ["arith", "instruct", "code"])
def test_generated_records_fit_seq_len_128(name, stdlib_tokenizer):
    lengths = [len(stdlib_tokenizer(r.prompt + r.response)["input_ids"]) + 1  # + EOS
               for r in load_task(name, "train", n=300)]
    assert max(lengths) <= 128


def test_instruct_answers_follow_the_instruction():
    for rec in load_task("instruct", "train", n=200, seed=2):
        given = rec.prompt.split("### Input:\n", 1)[1].split("\n\n### Response:", 1)[0]
        instruction = rec.prompt.split("### Instruction:\n", 1)[1].split("\n", 1)[0]
        expect = {
            "Spell the word backwards.": given[::-1],
            "Write the word in capital letters.": given.upper(),
            "How many letters does the word have?": str(len(given)),
            "How many words are in the sentence?": str(len(given.split())),
            "Sort the words in alphabetical order.": ", ".join(sorted(given.split(", "))),
            "Give the last word of the sentence.": given.split()[-1].strip(","),
            "Reverse the order of the words.": " ".join(reversed(given.split())),
            "Write the first letter of each word.": "".join(w[0] for w in given.split()),
            "Write the sentence in lowercase.": given.lower(),
        }[instruction]
        assert rec.response == rec.answer == expect
        assert check_answer("instruct", rec, rec.response + "\nmore text")
        assert not check_answer("instruct", rec, "x" + rec.response)


def test_unknown_task_and_split_are_named():
    with pytest.raises(ValueError, match="unknown task 'arithmetic'.*arith"):
        load_task("arithmetic")
    with pytest.raises(ValueError, match="split must be one of"):
        load_task("arith", "dev")
