"""From a model's generation to a program or a chain-of-thought answer."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from potsandbox.client.answers import UnknownComparator, get_comparator
from potsandbox.client.generations import extract_cot_answer, extract_program, python_blocks

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus" / "pot_public.jsonl"
DATASETS = SHARED / "datasets"


def require(path: Path) -> Path:
    """The shared file, or skip: a user's clone has no ../shared beside it."""
    if not path.exists():
        pytest.skip(f"{path} not found (../shared is only beside CI and dev clones)")
    return path


def jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with require(path).open() as lines:
        for line in lines:
            yield json.loads(line)


def tora_rationale(program: str, output: str, answer: str) -> str:
    """A generation in ToRA's tool-integrated format around one program."""
    return (
        "Let's write a program to solve this.\n"
        f"```python\n{program.rstrip()}\n```\n"
        f"```output\n{output}\n```\n"
        f"So the answer is $\\boxed{{{answer}}}$."
    )


# --------------------------------------------------------------------------- programs

DAILY_INCOME = (  # tora70b_gsm8k-00000, shortened
    "def daily_income():\n    eggs_sold = 16 - 3 - 4\n    return eggs_sold * 2\n\n"
    "income = daily_income()\nprint(income)\n"
)


def test_every_tora_program_comes_back_out_of_its_rationale() -> None:
    programs = [
        record
        for record in jsonl(CORPUS)
        if record["source"].startswith("microsoft/ToRA") and record["program"].strip()
    ]
    assert len(programs) == 1688
    for record in programs:
        generation = tora_rationale(record["program"], str(record["observed"]), record["gold"])
        assert extract_program(generation) == record["program"].rstrip() + "\n", record["id"]


def test_every_parsable_corpus_program_is_its_own_bare_program() -> None:
    checked = 0
    for record in jsonl(CORPUS):
        program = record["program"]
        try:
            ast.parse(program)
        except SyntaxError:
            continue
        checked += 1
        assert extract_program(program) == program, record["id"]
    assert checked > 13000


def test_last_block_wins_and_all_joins_them_in_order() -> None:
    generation = (
        "First try:\n```python\nx = 1\nprint(x)\n```\n```output\n1\n```\n"
        "Fix:\n```python\nx = 2\nprint(x)\n```\nDone."
    )
    assert extract_program(generation) == "x = 2\nprint(x)\n"
    assert (
        extract_program(generation, style="all")
        == "x = 1\nprint(x)\n\n# ========\nx = 2\nprint(x)\n"
    )


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ("```python\nprint(1)", "print(1)\n"),  # generation stopped inside the fence
        ("```py\nprint(1)\n```", "print(1)\n"),
        ("```\nprint(1)\n```", "print(1)\n"),  # untagged
        ("```output\n18\n```", None),  # output is not code
        ("```text\nprint(1)\n```", None),
        ("The answer is 18.", None),
        ("18", None),  # a bare value is not a program
        ("x = 5\nprint(x)", "x = 5\nprint(x)"),
        ("", None),
    ],
)
def test_extract_program_finds_the_code(generation: str, expected: str | None) -> None:
    assert extract_program(generation) == expected


def test_output_block_is_not_taken_for_the_start_of_a_code_block() -> None:
    generation = "```python\nprint(2)\n```\n```output\n2\n```\nThe answer is 2.\n"
    assert python_blocks(generation) == ["print(2)\n"]


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        # peers.md §2.2: a program iff "print(" occurs; cut at "### Instruction"; no fence work.
        (DAILY_INCOME + "### Instruction:\nNext question", DAILY_INCOME),
        ("```python\nprint(1)\n```", "```python\nprint(1)\n```"),
        ("ans = 18", None),
        ("The answer is 18", None),
    ],
)
def test_mammoth_style_runs_anything_that_prints(generation: str, expected: str | None) -> None:
    assert extract_program(generation, style="mammoth") == expected


# --------------------------------------------------------------------------- CoT answers


def test_gsm8k_reference_solutions_give_their_gold() -> None:
    for row in jsonl(DATASETS / "gsm8k_test.jsonl"):
        assert extract_cot_answer(row["answer"]) == row["gold"], row["idx"]


@pytest.mark.parametrize("name", ["math_test.jsonl", "math500_test.jsonl"])
def test_math_reference_solutions_give_their_boxed_gold(name: str) -> None:
    for row in jsonl(DATASETS / name):
        gold = str(row["gold"] if "gold" in row else row["answer"])
        assert extract_cot_answer(row["solution"]) == gold.strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She makes 9 * 2 = $18.\nThe answer is 18.", "18"),
        ("so the final answer is: 42 apples.", "42 apples"),
        ("... $\\boxed{\\frac{1}{2}}$. The answer is 0.5", "\\frac{1}{2}"),  # boxed first
        ("#### 1,450,000", "1,450,000"),
        ("First 12, then 1,250.", "1250"),
        ("no number at all", None),
        ("The answer is .", None),
    ],
)
def test_cot_answer_prefers_boxed_then_the_answer_is_then_the_last_number(
    text: str, expected: str | None
) -> None:
    assert extract_cot_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "dataset", "expected"),
    [
        ("9 * 2 = 18 dollars a day.\nThe answer is 18", "gsm8k", "18"),
        ("Both 3 and 4 work, so 7 in total", "gsm8k", "7"),  # no trigger: the last number
        ("The answer is (B).", "aqua", "B"),
        ("so $\\boxed{\\dfrac{1}{2}}$", "math", "\\frac{1}{2}"),
        ("nothing here", "gsm8k", None),
    ],
)
def test_mammoth_cot_answer_is_answer_clean(text: str, dataset: str, expected: str | None) -> None:
    assert extract_cot_answer(text, style="mammoth", dataset=dataset) == expected


def test_mammoth_cot_answer_needs_a_dataset_it_knows() -> None:
    with pytest.raises(UnknownComparator):
        extract_cot_answer("The answer is 1", style="mammoth")


@pytest.mark.parametrize(
    ("name", "field", "dataset"),
    [
        ("gsm8k_test.jsonl", "answer", "gsm8k"),
        ("math_test.jsonl", "solution", "math"),
        ("aqua_test.jsonl", "rationale", "aqua"),
    ],
)
def test_mammoth_cot_answer_survives_the_comparators_own_cleaning(
    name: str, field: str, dataset: str
) -> None:
    """The mammoth comparator cleans "The answer is " + predicted again: that must be a no-op."""
    comparator = get_comparator("mammoth", dataset=dataset)
    for row in jsonl(DATASETS / name):
        answer = extract_cot_answer(row[field], style="mammoth", dataset=dataset)
        if answer is not None and (dataset != "aqua" or answer in "ABCDE"):
            assert comparator(answer, "unused").canonical == answer
