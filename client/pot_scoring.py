"""Program-of-Thoughts' own scoring rule (Chen et al., TMLR 2023), as a named, versioned comparator.

The paper's numbers come from its run scripts and `outputs/compute_score.py`
(TIGER-AI-Lab/Program-of-Thoughts @ 850399c, `tool.py`), reimplemented here from reading them:

1. `floatify_ans`: a dict gives its first value, a list or tuple its first item (as a float when
   it converts, else as text), anything else `float(x)` or else its text; a bool stays a bool.
2. SVAMP and MultiArith (`run_svamp.py`, `run_multiarith_zs.py`) then take `abs()`: programs that
   subtract in the wrong order still count (shared/corpus README, Known quirks).
3. The zero-shot GSM8K run (`run_gsm8k_zs.py`) first applies `simplify_ans`: sympy (and numpy)
   results rounded to 2 places, and a falsy answer (0, [], None) counts as missing.
4. `finqa_equal`: a missing prediction is wrong; a bool matches "yes"/"no"; text matches text
   exactly; numbers match when they agree after rounding both to the smaller of their decimal
   counts (`str(x)` digits after ".", 5 when there is none). `--relaxed` also tries gold/100
   and gold*100; `--tolerance` also accepts math.isclose(rel_tol=0.001).

The paper's data files store numeric golds as floats (GSM8K "answer": 18.0), so a number-like
gold here is read as a float: an integer gold has 1 decimal place, and a prediction of 17.96
rounds to 18.0 and counts as correct. That looseness is part of the reported numbers.

Differences, because the comparator sees the sandbox's rendered answer text and not the object:
numpy scalars render as Python numbers, so `simplify_ans`'s numpy rounding is not applied; a
sympy value is recognised by its rendering (a fraction "7/3" or an expression "sqrt(2)") and a
numpy array or a set renders like a list (its first item is taken, where PoT's float() failed).

`get_comparator` here knows these names and falls back to `answers.get_comparator`; the filter
and eval loops resolve names through it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, TypeAlias

from potsandbox.client import answers
from potsandbox.client.answers import Comparator, Gold, UnknownComparator, Verdict
from potsandbox.client.datasets import canonical_dataset

ABS_DATASETS = frozenset({"svamp", "multiarith"})
"""Datasets whose PoT run scripts took abs() of the executed answer."""

DEFAULT_PRECISION = 5
"""PoT's `get_precision` for a number whose str() has no "." (ints, 1e-05)."""

_Value: TypeAlias = "bool | str | _Number | None"


@dataclass(frozen=True, slots=True)
class _Number:
    """A number with the text PoT's `get_precision` would have read from it."""

    value: float
    text: str


@dataclass(frozen=True, slots=True)
class ProgramOfThoughtsComparator:
    """Program-of-Thoughts' `floatify_ans` + `finqa_equal`, on the rendered answer text.

    `predicted` is the answer as the sandbox renders it (the `ans` value); None when the run
    failed (PoT's `safe_execute` returned None: counted as missing, hence wrong).
    """

    dataset: str | None = None
    """Picks the abs() rule (SVAMP, MultiArith) when `abs_value` is None."""
    abs_value: bool | None = None
    """Take abs() of a numeric prediction; None = only for SVAMP and MultiArith."""
    simplify: bool = False
    """Apply `simplify_ans` first (the zero-shot GSM8K run): sympy rounded, falsy = missing."""
    relaxed: bool = False
    """compute_score.py --relaxed: gold/100 and gold*100 also match."""
    tolerance: bool = False
    """compute_score.py --tolerance: math.isclose(rel_tol=0.001) also matches."""
    name: ClassVar[str] = "program-of-thoughts"
    version: ClassVar[int] = 1

    @property
    def spec(self) -> str:
        """name@version, plus every setting that differs from the plain few-shot rule."""
        settings = []
        if self.abs_value is not None:
            settings.append(f"abs_value={self.abs_value!r}")
        elif self.takes_abs:
            settings.append(f"abs for {canonical_dataset(self.dataset or '')}")
        settings += [f"{flag}=True" for flag in ("relaxed", "tolerance") if getattr(self, flag)]
        name = ZERO_SHOT_NAME if self.simplify else self.name
        return f"{name}@{self.version}" + (f"({', '.join(settings)})" if settings else "")

    @property
    def takes_abs(self) -> bool:
        """True when abs() is applied to numeric predictions."""
        if self.abs_value is not None:
            return self.abs_value
        return self.dataset is not None and canonical_dataset(self.dataset) in ABS_DATASETS

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        value = _simplified(predicted) if self.simplify else _floatified(predicted)
        if isinstance(value, _Number) and self.takes_abs and value.value < 0:
            value = _Number(abs(value.value), repr(abs(value.value)))
        canonical = _canonical(value)
        if value is None:
            return Verdict(False, "missing prediction")
        if isinstance(value, bool):
            word = _gold_word(gold)
            correct = word == ("yes" if value else "no")
            return Verdict(correct, "boolean matches" if correct else "boolean differs", canonical)
        reference = _gold_value(gold)
        if isinstance(value, str) or isinstance(reference, str):
            correct = canonical == (reference if isinstance(reference, str) else None)
            return Verdict(correct, "text matches" if correct else "text differs", canonical)
        if self._numbers_equal(value, reference):
            return Verdict(True, "numbers match", canonical)
        return Verdict(False, "numbers differ", canonical)

    def _numbers_equal(self, prediction: _Number, reference: _Number) -> bool:
        candidates = [reference]
        if self.relaxed:
            gold = reference.value
            candidates = [_float_number(gold / 100), reference, _float_number(gold * 100)]
        for item in candidates:
            if self.tolerance and math.isclose(item.value, prediction.value, rel_tol=0.001):
                return True
            places = min(_precision(prediction.text), _precision(item.text))
            try:
                if round(prediction.value, places) == round(item.value, places):
                    return True
            except (OverflowError, ValueError):
                continue
        return False


ZERO_SHOT_NAME = "program-of-thoughts-zs"
"""The zero-shot GSM8K variant's name: `simplify_ans` before `floatify_ans`."""


def _precision(text: str) -> int:
    """PoT's `get_precision`: digits after the last "." of str(x), else 5."""
    return len(text.split(".")[-1]) if "." in text else DEFAULT_PRECISION


def _float_number(value: float) -> _Number:
    return _Number(value, repr(value))


def _canonical(value: _Value) -> str | None:
    if value is None:
        return None
    if isinstance(value, _Number):
        return value.text
    return str(value)


# --------------------------------------------------------------------------- reading the answer


def _floatified(text: str | None) -> _Value:
    """PoT's `floatify_ans` applied to the value the rendered text stands for."""
    if text is None:
        return None
    stripped = text.strip()
    if stripped == "None":
        return None
    if stripped in ("True", "False"):
        return stripped == "True"
    items = _items(stripped)
    if items is not None:
        return _number_or_text(items[0]) if items else None
    entry = _first_dict_value(stripped)
    if entry is not None:
        # floatify_ans returns a dict's first value unconverted: a number keeps its own digits.
        number = _as_float(entry)
        return _Number(number, entry) if number is not None else entry
    return _number_or_text(stripped)


def _simplified(text: str | None) -> _Value:
    """PoT's `simplify_ans(ans, convert_to_str=False)` followed by `floatify_ans`."""
    if text is None:
        return None
    stripped = text.strip()
    if stripped in _FALSY:
        return None
    items = _items(stripped)
    if items is not None:
        if not items:
            return None
        if _is_sympy_number(items[0]):
            rounded = [_rounded(item) for item in items]
            if all(value is not None for value in rounded):
                return _float_number(rounded[0])  # type: ignore[arg-type]
        return _floatified(stripped)
    if _is_sympy_number(stripped):
        value = _rounded(stripped)
        return _float_number(value) if value is not None else stripped
    return _floatified(stripped)


_FALSY = frozenset({"", "0", "0.0", "-0.0", "False", "None", "[]", "()", "{}"})
"""Renderings of values for which `not ans` holds (numpy scalars aside, see module doc)."""


def _rounded(text: str) -> float | None:
    value = _as_float(text)
    return None if value is None else round(value, 2)


def _number_or_text(text: str) -> _Value:
    """float(x) as PoT calls it, else the text itself."""
    value = _as_float(text)
    return _float_number(value) if value is not None else text


def _as_float(text: str) -> float | None:
    """float() of the value the text renders: a Python number, a sympy number ("7/3",
    "sqrt(2)", "5*pi/2"), or text that float() accepts ("18", " 2.5 "); else None."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    except OverflowError:
        return None
    if not _is_sympy_number(text):
        return None
    fraction = answers.parse_number(text, lenient=False)
    if fraction is not None:
        return _fraction_float(fraction)
    value: Any = answers.read_sympy_text(text)
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _fraction_float(value: Fraction) -> float | None:
    try:
        return float(value)
    except OverflowError:
        return None


def _is_sympy_number(text: str) -> bool:
    """The rendering of a real sympy number that float() cannot read: "7/3", "sqrt(2)/2"."""
    text = text.strip()
    if not text or "\n" in text:
        return False
    try:
        float(text)
    except (ValueError, OverflowError):
        pass
    else:
        return False
    if re.fullmatch(r"-?\d+/\d+", text):
        return True
    value = answers.read_sympy_text(text)
    if not getattr(value, "is_number", False) or getattr(value, "is_real", None) is not True:
        return False
    return not isinstance(value, list | tuple)


def _items(text: str) -> list[str] | None:
    """Top-level items of a rendered list or tuple ("[1, 2]", "(3.0,)"), or None."""
    if len(text) < 2 or (text[0], text[-1]) not in (("[", "]"), ("(", ")")):
        return None
    inner = text[1:-1].strip()
    parts = _split_top_level(inner, ",")
    if text[0] == "(" and len(parts) < 2:
        return None  # "(1+2j)" or "(x)" is no tuple
    items = [part.strip() for part in parts]
    return [item for item in items if item] if inner else []


def _first_dict_value(text: str) -> str | None:
    """The first value of a rendered dict ("{x: 5, y: 2}" -> "5"), or None."""
    if len(text) < 2 or text[0] != "{" or text[-1] != "}":
        return None
    first = _split_top_level(text[1:-1], ",")[0]
    key_value = _split_top_level(first, ":")
    return key_value[1].strip() if len(key_value) == 2 else None


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split at separators outside brackets and quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


# --------------------------------------------------------------------------- the gold


def _gold_value(gold: Gold) -> _Number | str:
    """The gold as PoT's data files held it: numbers as floats, other text as text."""
    if isinstance(gold, bool):
        return str(gold)
    if isinstance(gold, int | float):
        return _float_number(float(gold))
    if not isinstance(gold, str):
        return str(list(gold))
    try:
        return _float_number(float(gold.replace(",", "")))
    except ValueError:
        return gold.strip()


def _gold_word(gold: Gold) -> str | None:
    if isinstance(gold, bool):
        return "yes" if gold else "no"
    return gold.strip().lower() if isinstance(gold, str) else None


# --------------------------------------------------------------------------- registry


def comparator_names() -> list[str]:
    """Every name `get_comparator` accepts: answers' names plus the Program-of-Thoughts ones."""
    return [*answers.comparator_names(), ProgramOfThoughtsComparator.name, ZERO_SHOT_NAME]


def get_comparator(name: str, *, dataset: str | None = None) -> Comparator:
    """Like `answers.get_comparator`, and also `program-of-thoughts[@1]` (abs() for SVAMP and
    MultiArith when `dataset` says so) and `program-of-thoughts-zs[@1]` (with `simplify_ans`).

    Raises:
        UnknownComparator: unknown name or pinned version.
    """
    base, _, pinned = name.partition("@")
    if base not in (ProgramOfThoughtsComparator.name, ZERO_SHOT_NAME):
        return answers.get_comparator(name, dataset=dataset)
    comparator = ProgramOfThoughtsComparator(dataset=dataset, simplify=base == ZERO_SHOT_NAME)
    if pinned and pinned != str(comparator.version):
        raise UnknownComparator(f"{base} is at version {comparator.version}, not {pinned}")
    return comparator
