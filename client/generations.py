"""From a model's generation to a runnable program, or to a chain-of-thought answer (hybrid mode).

Program styles (which code in the generation runs):
    last     the last ```python block (ToRA / math-evaluation-harness `extract_program`); a bare
             generation without fences that parses as Python is the program itself
    all      every ```python block joined in order, as ToRA's multi-round tool use runs them
    mammoth  MAmmoTH's rule: a program iff the text contains "print(", cut at "### Instruction",
             fences not removed (peers.md §2.2: a fenced program fails there, then falls back)

An unclosed final fence counts (the generation stopped after the code), as in ToRA.
"""

from __future__ import annotations

import ast
import re
from typing import Literal

from potsandbox.client.answers import mammoth_answer_clean
from potsandbox.client.datasets import last_boxed

ProgramStyle = Literal["last", "all", "mammoth"]
AnswerStyle = Literal["default", "mammoth"]

_FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
_PYTHON_TAGS = frozenset({"python", "python3", "py"})
_BLOCK_SEPARATOR = "\n# ========\n"
_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is[:\s]*(.+)")
_GSM8K_ANSWER = re.compile(r"####\s*(.+)")
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_program(generation: str, *, style: ProgramStyle = "last") -> str | None:
    """The program to run from a generation, or None when it holds no program."""
    if style == "mammoth":
        return generation.split("### Instruction")[0] if "print(" in generation else None
    blocks = python_blocks(generation)
    if blocks:
        return blocks[-1] if style == "last" else _BLOCK_SEPARATOR.join(blocks)
    return generation if _is_bare_program(generation) else None


def python_blocks(generation: str) -> list[str]:
    """Bodies of the ```python / ```py / untagged fenced blocks in order (```output is no code)."""
    blocks: list[str] = []
    body: list[str] | None = None
    in_other_block = False
    for line in generation.split("\n"):
        fence = _FENCE.match(line)
        if fence is None:
            if body is not None:
                body.append(line)
        elif body is not None:
            blocks.append("\n".join(body) + "\n")
            body = None
        elif in_other_block:
            in_other_block = False
        elif fence.group(1).lower() in _PYTHON_TAGS | {""}:
            body = []
        else:
            in_other_block = True
    if body:
        blocks.append("\n".join(body) + "\n")
    return [block for block in blocks if block.strip()]


def _is_bare_program(generation: str) -> bool:
    """Unfenced text is a program only if it parses and does more than name a value."""
    if "```" in generation or not generation.strip():
        return False
    try:
        tree = ast.parse(generation)
    except (SyntaxError, ValueError):
        return False
    return any(
        not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body
    )


def extract_cot_answer(
    text: str, *, style: AnswerStyle = "default", dataset: str | None = None
) -> str | None:
    """The final answer of a chain-of-thought text, or None when it states none.

    `default` (ToRA / math-evaluation-harness order): the last \\boxed{}, else the text after
    the last "The answer is" (to the end of that line, trailing "." dropped), else the GSM8K
    "#### X" line, else the last number. `mammoth` is MAmmoTH's `answer_clean` for `dataset`
    (its CoT fallback); the mammoth comparator accepts that answer as its `predicted`, since
    answer_clean returns its own output unchanged (checked on every GSM8K/MATH/AQuA solution).

    Raises:
        UnknownComparator: `mammoth` style without a dataset MAmmoTH has rules for.
    """
    if style == "mammoth":
        answer = mammoth_answer_clean(dataset or "", text)
        return answer or None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip() or None
    for pattern in (_ANSWER_IS, _GSM8K_ANSWER):
        found = pattern.findall(text)
        if found:
            answer = found[-1].strip().removesuffix(".").strip()
            return answer or None
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None
