"""Answer extraction and gold comparison: named, versioned comparators run under a hard deadline.

A comparator reads the answer text a run produced (the convention's answer, or stdout) and
decides whether it equals the gold answer. Each has a `name` and a `version`; a report names the
one it used by `spec` (e.g. ``numeric@1``), and the version changes whenever a verdict could.

    numeric           numbers within a relative tolerance; lists element-wise; booleans; else text
    numeric-rounded   numeric, or the gold's own rounding (TAT-QA golds are rounded to 2 places)
    choice            multiple choice: the option letter, or exactly the gold option's number
    choice-nearest    multiple choice: a number picks the closest option (PoT/PAL AQuA scoring)
    symbolic          LaTeX / sympy equivalence through math-verify
    symbolic-numeric  numeric when both sides are plain numbers, else symbolic
    mammoth           MAmmoTH's own extraction and scoring (needs the dataset)
    auto              the dataset's default (datasets.default_comparator)

sympy and math-verify can hang on hostile input, so untrusted comparisons go through
`AnswerJudge`: a pebble process pool whose parent kills a worker that overruns its deadline.

    AnswerError
    ├── UnknownComparator   no comparator has that name, version or dataset rule
    ├── JudgeClosed         the judge's pool is not running
    └── JudgeBroken         the judge's workers cannot start
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import enum
import functools
import logging
import math
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, cast

from potsandbox.client.datasets import UnknownDataset, canonical_dataset, default_comparator

Scalar: TypeAlias = str | int | float | bool
Gold: TypeAlias = Scalar | Sequence[Scalar]
"""A gold answer as a dataset gives it: text, a number, a boolean, or a list of those."""

DEFAULT_REL_TOL = 1e-4
"""|a-b| <= tol*max(1,|b|): the corpus's `observed_matches_gold` rule."""

DEFAULT_TIMEOUT_S = 5.0
"""Per-comparison deadline in the judge; math-verify's own default."""

MAX_EXPONENT = 400
"""Scientific exponents beyond this are refused: Fraction('1e999999999') would not finish."""

MAX_NUMBER_TEXT = 100
"""Longer text is never one number with units: keeps the fullmatch regexes linear-ish."""

MAX_SYMPY_TEXT = 2000
"""Longer prediction text is not read as a sympy expression."""


class AnswerError(Exception):
    """Root of every error raised by potsandbox.client.answers."""


class UnknownComparator(AnswerError, ValueError):
    """The comparator name, pinned version or dataset rule does not exist."""


class JudgeClosed(AnswerError):
    """The judge was used outside its `with` block or after `close()`."""


class JudgeBroken(AnswerError):
    """Every worker died at start-up; the message says the usual cause."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One comparison's outcome; never an exception for bad model output."""

    correct: bool
    """True when the prediction equals the gold under the comparator's rules."""
    reason: str
    """Short human-readable why, stable enough to count by."""
    canonical: str | None = None
    """The prediction as the comparator read it (for voting and reports), if it read one."""


class Comparator(Protocol):
    """A named, versioned equivalence rule between a prediction and a gold answer."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def spec(self) -> str: ...

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict: ...


class _Rule:
    """What every comparator shares: `spec` is name@version plus any non-default setting."""

    __slots__ = ()
    name: ClassVar[str]
    version: ClassVar[int]

    @property
    def spec(self) -> str:
        settings = [
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(cast(Any, self))
            if field.default is not dataclasses.MISSING
            and getattr(self, field.name) != field.default
        ]
        return f"{self.name}@{self.version}" + (f"({', '.join(settings)})" if settings else "")


# --------------------------------------------------------------------------- numbers in text

_CURRENCY = r"(?:\$|£|€|¥|₹|Rs\.?|INR|USD)"
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+"
_EXPONENT = r"(?:[eE][-+]?\d+)?"
_NUMBER_TOKEN = re.compile(
    rf"(?:(?<![\w)\].])[-+]|(?<![\w.]))(?:{_UNSIGNED}){_EXPONENT}(?:\s*/\s*\d+(?!\.\d))?"
)
_PLAIN_NUMBER = re.compile(rf"[-+]?(?:{_UNSIGNED}){_EXPONENT}(?:/\d+)?")
_LATEX_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")
_UNITS = r"(?:\s*%|\s*[A-Za-z][A-Za-z .'²³]*)?"
_LENIENT_NUMBER = re.compile(rf"(?P<sign>[-+]?)\s*{_CURRENCY}?\s*(?P<number>.+?){_UNITS}")
_STRICT_NUMBER = re.compile(r"(?P<sign>[-+]?)\s*\$?\s*(?P<number>.+?)\s*%?")


def extract_number(text: str | None, *, mode: Literal["last", "first"] = "last") -> str | None:
    """The number a run's answer text stands for, as plain text ("1,000" -> "1000"), or None.

    `last` (corpus / ToRA): the whole text, else its last non-empty line, when that is one
    value: a number (units, currency, % allowed), a one-item list, or a sympy rendering
    without symbols ("5*sqrt(10)"); else the last number on the last line. A longer list, a
    symbolic or complex expression is no number. `first` (MAmmoTH's pick for executed
    programs): the first number anywhere in the text.
    """
    if text is None:
        return None
    if mode == "first":
        match = _NUMBER_TOKEN.search(_normalise_text(text))
        return _clean_token(match.group()) if match else None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    for candidate in dict.fromkeys((text, lines[-1])):
        whole, number = _one_value(candidate)
        if whole:
            return number
    tokens = _NUMBER_TOKEN.findall(_normalise_text(lines[-1]))
    return _clean_token(tokens[-1]) if tokens else None


def _one_value(text: str, *, lenient: bool = True) -> tuple[bool, str | None]:
    """(True, its number or None) when the text is one value, else (False, None)."""
    number = _number_text(text, lenient=lenient)
    if number is not None:
        return True, number
    items = _bracketed_items(text)
    if items is not None:
        return True, _one_value(items[0], lenient=lenient)[1] if len(items) == 1 else None
    if _is_cut_list(text):
        return True, None
    if "\n" in text.strip() or len(text) > MAX_NUMBER_TEXT:
        return False, None
    expression = read_sympy_text(text.strip())
    if expression is None:
        return False, None
    return True, _real_value(expression)


def _is_cut_list(text: str) -> bool:
    """A list rendering cut short at the answer-size cap is still a list."""
    return text.lstrip().startswith("[") and "," in text


def _real_value(expression: Any) -> str | None:
    """repr of a sympy number's float value when it is real and finite, else None."""
    if (
        not getattr(expression, "is_number", False)
        or getattr(expression, "is_real", None) is not True
    ):
        return None
    try:
        value = float(expression)
    except (TypeError, ValueError, OverflowError):
        return None
    return repr(value) if math.isfinite(value) else None


def parse_number(text: str, *, lenient: bool = True) -> Fraction | None:
    """The exact value of text that is one number ("$1,000", "12%", "3/4", "2.5e3"), or None.

    `lenient` also allows a currency prefix and trailing unit words ("22 dollars"); strict
    parsing keeps "5x" or "5 + x" from reading as 5 in symbolic answers.
    """
    number = _number_text(text, lenient=lenient)
    return None if number is None else _fraction(number)


def _normalise_text(text: str) -> str:
    """Unicode minus and LaTeX spacing/escapes that only decorate a number."""
    for old, new in (
        ("−", "-"),
        ("\\!", ""),
        ("{,}", ","),
        ("\\,", ""),
        ("\\$", "$"),
        ("\\%", "%"),
    ):
        text = text.replace(old, new)
    return text


def _number_text(text: str, *, lenient: bool) -> str | None:
    """The normalised number when the whole text is one number, else None."""
    text = _normalise_text(text).strip()
    if len(text) > MAX_NUMBER_TEXT or "\n" in text:
        return None
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    pattern = _LENIENT_NUMBER if lenient else _STRICT_NUMBER
    match = pattern.fullmatch(text)
    core = None if match is None else _core_number(match.group("number"))
    if match is None or core is None or match.group("sign") != "-":
        return core
    return core[1:] if core.startswith("-") else "-" + core


def _core_number(text: str) -> str | None:
    """A bare number, "a/b" or \\frac{a}{b}, with thousands commas and spaces removed."""
    latex = _LATEX_FRACTION.fullmatch(text)
    if latex:
        sign, numerator, denominator = latex.groups()
        return _clean_token(f"{sign}{numerator}/{denominator}")
    compact = re.sub(r"\s*/\s*", "/", text)
    return _clean_token(compact) if _PLAIN_NUMBER.fullmatch(compact) else None


def _clean_token(token: str) -> str:
    return re.sub(r"\s+", "", token).replace(",", "").removeprefix("+")


def _fraction(number: str) -> Fraction | None:
    """Exact value of a cleaned token ("2.5e3", "-1.5/2"); None for runaway exponents or /0."""
    exponents = re.findall(r"[eE]([-+]?\d+)", number)
    if any(abs(int(exponent)) > MAX_EXPONENT for exponent in exponents):
        return None
    numerator, _, denominator = number.partition("/")
    try:
        return Fraction(numerator) / Fraction(denominator or 1)
    except (ValueError, ZeroDivisionError):
        return None


def _canonical_number(value: Fraction) -> str:
    """One spelling per value, so that "18", "18.0" and "36/2" vote together."""
    if value.denominator == 1:
        return str(value.numerator)
    return repr(float(value))


def _close(predicted: Fraction, gold: Fraction, rel_tol: float) -> bool:
    return abs(predicted - gold) <= Fraction(str(rel_tol)) * max(Fraction(1), abs(gold))


# --------------------------------------------------------------------------- gold shapes

_TRUE_WORDS = frozenset({"true", "yes"})
_FALSE_WORDS = frozenset({"false", "no"})


def _gold_bool(gold: Gold) -> bool | None:
    if isinstance(gold, bool):
        return gold
    if isinstance(gold, str) and gold.strip() in ("True", "False"):
        return gold.strip() == "True"
    return None


def _gold_items(gold: Gold) -> list[str] | None:
    """A list gold's items as text: a JSON list, or text like "[4, 1]"."""
    if isinstance(gold, list | tuple):
        return [str(item) for item in gold]
    if isinstance(gold, str):
        return _bracketed_items(gold)
    return None


def _bracketed_items(text: str) -> list[str] | None:
    """Items of "[a, b]", "(a, b)", "(a,)" or numpy's "[a b]"; None when not a flat sequence."""
    text = text.strip()
    if len(text) < 2 or (text[0], text[-1]) not in (("[", "]"), ("(", ")")):
        return None
    inner = text[1:-1].strip()
    if text[0] == "(" and "," not in inner:
        return None  # "(1 + 2)" is grouping, not a tuple
    items = [item.strip() for item in inner.split("," if "," in inner else None)]
    return items[:-1] if len(items) > 1 and not items[-1] else items


def _gold_number(gold: Gold, *, lenient: bool) -> Fraction | None:
    if isinstance(gold, bool) or not isinstance(gold, int | float | str):
        return None
    if isinstance(gold, int):
        return Fraction(gold)
    if isinstance(gold, float):
        return Fraction(gold) if math.isfinite(gold) else None
    return parse_number(gold, lenient=lenient)


# --------------------------------------------------------------------------- numeric


@dataclass(frozen=True, slots=True)
class NumericComparator(_Rule):
    """Numbers within a relative tolerance; list golds element-wise; booleans; else exact text.

    The prediction's number is read with `extract_number(mode="last")`, so stdout such as
    "Total: 18" counts. Golds that are not numbers compare as stripped text, case-sensitive.
    """

    rel_tol: float = DEFAULT_REL_TOL
    """Allowed |a-b| as a fraction of max(1, |gold|)."""
    name: ClassVar[str] = "numeric"
    version: ClassVar[int] = 1

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        if predicted is None:
            return Verdict(False, "no answer")
        return _numeric_verdict(predicted, gold, self.rel_tol, lenient=True)


def _numeric_verdict(predicted: str, gold: Gold, rel_tol: float, *, lenient: bool) -> Verdict:
    truth = _gold_bool(gold)
    if truth is not None:
        return _bool_verdict(predicted, truth)
    items = _gold_items(gold)
    if items is not None:
        return _list_verdict(predicted, items, rel_tol)
    number = _gold_number(gold, lenient=lenient)
    if number is None:
        return _text_verdict(predicted, str(gold))
    return _number_verdict(predicted, number, rel_tol, lenient=lenient)


def _number_verdict(predicted: str, gold: Fraction, rel_tol: float, *, lenient: bool) -> Verdict:
    text = extract_number(predicted) if lenient else _one_value(predicted, lenient=False)[1]
    value = None if text is None else _fraction(text)
    if value is None:
        return Verdict(False, "no number in prediction")
    canonical = _canonical_number(value)
    if _close(value, gold, rel_tol):
        return Verdict(True, "numbers match", canonical)
    return Verdict(False, "numbers differ", canonical)


def _bool_verdict(predicted: str, gold: bool) -> Verdict:
    word = predicted.strip().strip(".").lower()
    if word not in _TRUE_WORDS | _FALSE_WORDS:
        return Verdict(False, "prediction is not a boolean")
    value = word in _TRUE_WORDS
    return Verdict(
        value == gold, "booleans match" if value == gold else "booleans differ", str(value)
    )


def _list_verdict(predicted: str, gold: list[str], rel_tol: float) -> Verdict:
    items = _bracketed_items(predicted)
    if items is None:
        return Verdict(False, "prediction is not a list")
    if len(items) != len(gold):
        return Verdict(False, "list lengths differ", predicted.strip())
    for mine, theirs in zip(items, gold, strict=True):
        item = _numeric_verdict(mine, theirs, rel_tol, lenient=True)
        if not item.correct:
            return Verdict(False, f"list items differ: {item.reason}", predicted.strip())
    return Verdict(True, "lists match", predicted.strip())


def _text_verdict(predicted: str, gold: str) -> Verdict:
    if predicted.strip() == gold.strip():
        return Verdict(True, "text matches", predicted.strip())
    return Verdict(False, "text differs", predicted.strip())


@dataclass(frozen=True, slots=True)
class RoundedComparator(_Rule):
    """numeric, or the prediction rounds to the gold at the gold's own decimal places.

    For golds published rounded (TAT-QA's two places): 23.2330 matches "23.23". Golds without
    decimals get no rounding, so 4.5 never matches "5".
    """

    rel_tol: float = DEFAULT_REL_TOL
    """Allowed |a-b| as a fraction of max(1, |gold|), as in numeric."""
    name: ClassVar[str] = "numeric-rounded"
    version: ClassVar[int] = 1

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        verdict = NumericComparator(self.rel_tol)(predicted, gold)
        places = _decimal_places(gold)
        if verdict.correct or not places or verdict.canonical is None:
            return verdict
        value, target = _fraction(verdict.canonical), _gold_number(gold, lenient=True)
        if value is None or target is None:
            return verdict
        if abs(value - target) <= Fraction(1, 2 * 10**places):
            return Verdict(True, f"matches when rounded to {places} places", verdict.canonical)
        return verdict


def _decimal_places(gold: Gold) -> int:
    if isinstance(gold, bool) or not isinstance(gold, str | float):
        return 0
    match = re.fullmatch(r"\s*-?\d*\.(\d+)\s*", str(gold))
    return len(match.group(1)) if match else 0


# --------------------------------------------------------------------------- multiple choice

_OPTION = re.compile(r"\s*\(?([A-Ja-j])\s*[).:]\s*(.*)", re.DOTALL)
_LETTER = re.compile(r"\s*(?:option\s+)?\(?([A-Ja-j])\)?[.:]?\s*", re.IGNORECASE)


def _options(options: Sequence[str] | None) -> dict[str, str]:
    """Letter -> option text; unlabelled options are lettered by position."""
    table: dict[str, str] = {}
    for index, option in enumerate(options or ()):
        match = _OPTION.fullmatch(option)
        if match:
            table[match.group(1).upper()] = match.group(2).strip()
        else:
            table[chr(ord("A") + index)] = option.strip()
    return table


def _letter(text: str) -> str | None:
    match = _LETTER.fullmatch(text)
    return match.group(1).upper() if match else None


def _gold_letter(gold: Gold, table: dict[str, str]) -> str | None:
    """The gold as a letter: given as one ("C", "(c)"), or as the text of an option."""
    if not isinstance(gold, str):
        return None
    letter = _letter(gold)
    if letter is not None:
        return letter
    return next((key for key, text in table.items() if text == gold.strip()), None)


def _option_values(table: dict[str, str]) -> dict[str, Fraction]:
    values = {}
    for letter, text in table.items():
        value = parse_number(text)
        if value is not None:
            values[letter] = value
    return values


@dataclass(frozen=True, slots=True)
class ChoiceComparator(_Rule):
    """Multiple choice, strict: the option letter, or a number equal to the gold option's value.

    A number matches only the gold option's own value (within `rel_tol`), the way the corpus
    scores AQuA; a gold option that is not a plain number ("5(√3 + 1)") cannot be matched by one.
    """

    rel_tol: float = DEFAULT_REL_TOL
    """Allowed |a-b| as a fraction of max(1, |option value|)."""
    name: ClassVar[str] = "choice"
    version: ClassVar[int] = 1

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        table = _options(options)
        gold_letter = _gold_letter(gold, table)
        if gold_letter is None:
            return Verdict(False, "gold is not an option")
        if predicted is None:
            return Verdict(False, "no answer")
        letter = _letter(predicted) or _option_by_text(predicted, table)
        if letter is not None:
            return _letter_verdict(letter, gold_letter)
        gold_value = parse_number(table.get(gold_letter, ""))
        if gold_value is None:
            return Verdict(False, "gold option is not a number")
        text = extract_number(predicted)
        value = None if text is None else _fraction(text)
        if value is None:
            return Verdict(False, "no number in prediction")
        if _close(value, gold_value, self.rel_tol):
            return Verdict(True, "number equals the gold option", gold_letter)
        return Verdict(False, "number is not the gold option", _canonical_number(value))


def _option_by_text(predicted: str, table: dict[str, str]) -> str | None:
    text = predicted.strip()
    return next((key for key, option in table.items() if option and option == text), None)


def _letter_verdict(letter: str, gold_letter: str) -> Verdict:
    if letter == gold_letter:
        return Verdict(True, "option matches", letter)
    return Verdict(False, "option differs", letter)


@dataclass(frozen=True, slots=True)
class NearestChoiceComparator(_Rule):
    """Multiple choice where a number picks the option closest in absolute value (PAL's AQuA).

    Options that are not plain numbers are never picked; ties go to the earlier option.
    """

    name: ClassVar[str] = "choice-nearest"
    version: ClassVar[int] = 1

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        table = _options(options)
        gold_letter = _gold_letter(gold, table)
        if gold_letter is None:
            return Verdict(False, "gold is not an option")
        if predicted is None:
            return Verdict(False, "no answer")
        letter = _letter(predicted) or _option_by_text(predicted, table)
        if letter is None:
            letter = _nearest_option(predicted, _option_values(table))
            if letter is None:
                return Verdict(False, "no number or no numeric option")
        return _letter_verdict(letter, gold_letter)


def _nearest_option(predicted: str, values: dict[str, Fraction]) -> str | None:
    text = extract_number(predicted)
    value = None if text is None else _fraction(text)
    if value is None or not values:
        return None
    return min(values, key=lambda letter: abs(values[letter] - value))


# --------------------------------------------------------------------------- symbolic


@dataclass(frozen=True, slots=True)
class SymbolicComparator(_Rule):
    """LaTeX / sympy equivalence by math-verify (fractions, roots, pi, intervals, sets, matrices).

    The gold is read as the content of \\boxed{}. A prediction with LaTeX goes to math-verify
    as LaTeX; a program's plain-text sympy rendering ("sqrt(2)/2", "Interval.Ropen(1, 2)") is
    rebuilt as a sympy object by a whitelist reader (never eval). math-verify's own signal
    timeouts are off: run untrusted comparisons in an `AnswerJudge`.
    """

    name: ClassVar[str] = "symbolic"
    version: ClassVar[int] = 1

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        if predicted is None:
            return Verdict(False, "no answer")
        return _symbolic_verdict(predicted, _gold_text(gold))


def _gold_text(gold: Gold) -> str:
    if isinstance(gold, list | tuple):
        return "(" + ", ".join(str(item) for item in gold) + ")"
    return str(gold)


def _symbolic_verdict(predicted: str, gold: str) -> Verdict:
    from math_verify import verify

    golds = _parse_gold_latex(gold)
    if not golds:
        return Verdict(False, "gold not parsable")
    mine = _parse_prediction(predicted)
    if not mine:
        return Verdict(False, "prediction not parsable")
    canonical = str(mine[0])
    if verify(golds, mine, timeout_seconds=None):
        return Verdict(True, "symbolically equal", canonical)
    return Verdict(False, "symbolically different", canonical)


@functools.lru_cache(maxsize=4096)
def _parse_gold_latex(gold: str) -> list[Any]:
    from math_verify import parse

    parsed: list[Any] = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    return parsed


def _parse_prediction(predicted: str) -> list[Any]:
    """math-verify's reading of delimited LaTeX; else our sympy-text reader; else the text as
    the content of \\boxed{} (the gold's treatment), so "6 - 5i" or "x^2+1" parse whole."""
    from math_verify import parse

    text = predicted.strip()
    if "\\boxed" in text or "$" in text.replace("\\$", ""):
        return list(parse(text, parsing_timeout=None))
    expression = None if "\\" in text else read_sympy_text(text)
    if expression is not None:
        return [expression, text]
    return list(parse("\\boxed{" + text + "}", parsing_timeout=None))


@dataclass(frozen=True, slots=True)
class SymbolicNumericComparator(_Rule):
    """numeric first for a gold that is a plain number, boolean or list of numbers; symbolic
    for everything else, and for plain golds the numeric path could not settle.

    The numeric verdict stands when the prediction is plain too (symbolic could not do better,
    and is slower). Numbers here are strict (no unit words): a MATH gold "5x" is never 5.
    """

    rel_tol: float = DEFAULT_REL_TOL
    """Tolerance for the numeric path, as in numeric."""
    name: ClassVar[str] = "symbolic-numeric"
    version: ClassVar[int] = 1

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        if predicted is None:
            return Verdict(False, "no answer")
        if _is_plain_gold(gold):
            verdict = _numeric_verdict(predicted, gold, self.rel_tol, lenient=False)
            if verdict.correct or _settles(predicted):
                return verdict
        return _symbolic_verdict(predicted, _gold_text(gold))


def _settles(predicted: str) -> bool:
    """A boolean word, a number or a list: symbolic could not judge it better than numeric."""
    if predicted.strip().strip(".").lower() in _TRUE_WORDS | _FALSE_WORDS:
        return True
    if _bracketed_items(predicted) is not None or _is_cut_list(predicted):
        return True
    return _one_value(predicted, lenient=False)[1] is not None


def _is_plain_gold(gold: Gold) -> bool:
    if _gold_bool(gold) is not None:
        return True
    items = _gold_items(gold)
    if items is not None:
        return bool(items) and all(parse_number(item, lenient=False) is not None for item in items)
    return _gold_number(gold, lenient=False) is not None


# --------------------------------------------------------------------------- sympy text reader

_SYMPY_FUNCTIONS = frozenset(
    {
        *("sqrt", "exp", "log", "ln", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos"),
        *("atan", "sinh", "cosh", "tanh", "Abs", "re", "im", "conjugate", "floor", "ceiling"),
        *("root", "cbrt", "Rational", "Integer", "Float", "Matrix"),
        *("FiniteSet", "Union", "Intersection", "Interval", "Tuple"),
    }
)
_SYMPY_CONSTANTS = frozenset({"pi", "E", "oo", "zoo", "EmptySet"})
_INTERVAL_KINDS = frozenset({"open", "Lopen", "Ropen"})
_MAX_NODES = 400
_MAX_POWER = 4000
"""A power with more result digits than this is refused: 9**9**9 would hang, and Python will
not print an int of more than 4300 digits."""


class _Unreadable(Exception):
    """The text uses something the sympy-text reader does not allow."""


def read_sympy_text(text: str) -> Any | None:
    """A sympy object from sympy's own str() output ("sqrt(2)/2", "{1, 2}"), or None.

    Walks a whitelisted AST and calls sympy constructors; never evaluates the text, so
    untrusted program output cannot run code. Unknown bare names become Symbols.
    """
    if len(text) > MAX_SYMPY_TEXT:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return None
    if sum(1 for _ in ast.walk(tree)) > _MAX_NODES:
        return None
    try:
        return _build(tree.body)
    except (_Unreadable, TypeError, ValueError, ZeroDivisionError, AttributeError):
        return None


def _sympy() -> Any:
    """sympy, imported on first use (0.3 s) and typed loosely: it ships no type information."""
    import sympy  # type: ignore[import-untyped]

    return sympy


def _build(node: ast.expr) -> Any:
    sympy = _sympy()
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sympy.sympify(node.value)
    if isinstance(node, ast.Name):
        return _name(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _build(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _binary(node)
    if isinstance(node, ast.Tuple | ast.List):
        items = [_build(item) for item in node.elts]
        return items if isinstance(node, ast.List) else sympy.Tuple(*items)
    if isinstance(node, ast.Set):
        return sympy.FiniteSet(*(_build(item) for item in node.elts))
    if isinstance(node, ast.Call):
        return _call(node)
    raise _Unreadable(type(node).__name__)


def _name(identifier: str) -> Any:
    """Constants are sympy's; other names become real lower-case Symbols, as math-verify reads
    LaTeX ("3R^2" is 3*r**2 there).

    sympy's imaginary unit `I` becomes the real symbol `i`, because that is what math-verify
    makes of a LaTeX gold like "6 - 5i"; printed sympy results are simplified, so no I**2 is
    left to go wrong.
    """
    sympy = _sympy()
    if identifier == "I":
        return sympy.Symbol("i", real=True)
    if identifier in _SYMPY_CONSTANTS:
        return getattr(sympy, identifier)
    if identifier.startswith("_") or identifier in _SYMPY_FUNCTIONS:
        raise _Unreadable(identifier)
    return sympy.Symbol(identifier.lower(), real=True)


_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def _binary(node: ast.BinOp) -> Any:
    operator = _OPERATORS.get(type(node.op))
    if operator is None:
        raise _Unreadable(type(node.op).__name__)
    left, right = _build(node.left), _build(node.right)
    if isinstance(node.op, ast.Pow) and _too_big_power(left, right):
        raise _Unreadable("power too large")
    return operator(left, right)


def _too_big_power(base: Any, exponent: Any) -> bool:
    """True when base**exponent could run away: more than _MAX_POWER digits, or unknown size.

    Numbers are checked by magnitude; a symbolic base may not take an exponent above
    _MAX_POWER either (expanding it later would be slow); a symbolic exponent is fine.
    """
    if not getattr(exponent, "is_number", isinstance(exponent, int | float)):
        return False
    try:
        power = abs(float(exponent))
        if not getattr(base, "is_number", isinstance(base, int | float)):
            return power > _MAX_POWER
        digits = math.log10(max(abs(float(base)), 10.0)) * power
    except (TypeError, ValueError, OverflowError):
        return True
    return digits > _MAX_POWER


def _call(node: ast.Call) -> Any:
    sympy = _sympy()
    if node.keywords:
        raise _Unreadable("keyword arguments")
    function = node.func
    arguments = [_build(argument) for argument in node.args]
    if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
        if function.value.id == "Interval" and function.attr in _INTERVAL_KINDS:
            return getattr(sympy.Interval, function.attr)(*arguments)
        raise _Unreadable("attribute")
    if isinstance(function, ast.Name) and function.id in _SYMPY_FUNCTIONS:
        name = {"ln": "log"}.get(function.id, function.id)
        return getattr(sympy, name)(*arguments)
    raise _Unreadable("call")


# --------------------------------------------------------------------------- MAmmoTH


class _Family(enum.StrEnum):
    """Which of MAmmoTH's answer_clean branches a dataset takes."""

    OPEN = "open"
    NUMGLUE = "numglue"
    CHOICE = "choice"
    MATH = "math"


_MAMMOTH_FAMILIES = {
    "gsm8k": _Family.OPEN,
    "svamp": _Family.OPEN,
    "deepmind": _Family.OPEN,
    "simuleq": _Family.OPEN,
    "mawps": _Family.OPEN,
    "asdiv": _Family.OPEN,
    "gsm-hard": _Family.OPEN,
    "multiarith": _Family.OPEN,
    "numglue": _Family.NUMGLUE,
    "aqua": _Family.CHOICE,
    "sat": _Family.CHOICE,
    "math": _Family.MATH,
    "math500": _Family.MATH,
}
_MAMMOTH_TRIGGERS = ("####", "The answer is")
_MAMMOTH_LETTERS = ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")


@dataclass(frozen=True, slots=True)
class MammothComparator(_Rule):
    """MAmmoTH's `math_eval` scoring, rule for rule (shared/research/peers.md §2).

    `predicted` is what MAmmoTH's executor returns: the program's stdout ('' or None when it
    failed). It becomes "The answer is " + stdout and goes through `answer_clean`; open sets then
    need exact string equality with the gold after `delete_extra_zero`, MATH gets string match,
    else round() for integer golds or the ±4% band, and a multiple-choice answer that is not a
    letter becomes "A" (`--match_answer random`; the `self` mode needs the model). For the
    CoT fallback pass `generations.extract_cot_answer(text, style="mammoth")` instead.
    Differences: MATH golds are rebuilt (see `_mammoth_math_gold`), and `number_it` evaluates
    literal arithmetic only, where MAmmoTH's `eval` also saw its module's names (`math.pi`).
    """

    dataset: str
    """MAmmoTH dataset name (gsm8k, svamp, math, aqua, numglue, ...); picks the rule family."""
    name: ClassVar[str] = "mammoth"
    version: ClassVar[int] = 1

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        family = _mammoth_family(self.dataset)
        answer = mammoth_answer_clean(self.dataset, "The answer is " + (predicted or ""))
        if family is _Family.CHOICE and answer not in _MAMMOTH_LETTERS:
            answer = "A"
        if family is _Family.MATH:
            truth, number = _mammoth_math_gold(str(gold))
            correct = _mammoth_math_equal(answer, truth, number)
        else:
            correct = answer == _mammoth_gold(family, gold)
        return Verdict(correct, "mammoth match" if correct else "mammoth mismatch", answer)


def _mammoth_family(dataset: str) -> _Family:
    """MAmmoTH's rule family for a dataset.

    Raises:
        UnknownComparator: MAmmoTH has no rule for this dataset (it raised ValueError too).
    """
    family = _MAMMOTH_FAMILIES.get(canonical_dataset(dataset))
    if family is None:
        if dataset.startswith("mmlu"):
            return _Family.CHOICE
        known = ", ".join(sorted(_MAMMOTH_FAMILIES))
        raise UnknownComparator(f"mammoth has no rules for dataset {dataset!r}; known: {known}")
    return family


def mammoth_answer_clean(dataset: str, text: str) -> str:
    """MAmmoTH's `answer_clean(dataset, ('####', 'The answer is'), text)`."""
    family = _mammoth_family(dataset)
    if family is _Family.MATH:
        return _mammoth_extract_math(text) if text else text
    if any(text.count(trigger) > 1 for trigger in _MAMMOTH_TRIGGERS):
        text = text.split("\n\n")[0]
    pieces = re.split("|".join(_MAMMOTH_TRIGGERS), text)
    from_trigger = len(pieces) > 1
    text = pieces[-1]
    if "=" in text:
        text = text.split("=")[-1].strip()
    candidates = _mammoth_candidates(family, text)
    if not candidates:
        return ""
    answer = candidates[0] if from_trigger else candidates[-1]
    return _strip_one_suffix(_strip_one_suffix(answer, "."), "/")


def _mammoth_candidates(family: _Family, text: str) -> list[str]:
    if family in (_Family.CHOICE, _Family.NUMGLUE):
        letters = re.findall(r"\b(A|B|C|D|E)\b", text.upper())
        if letters or family is _Family.CHOICE:
            return letters or [text.strip().strip(".")]
    text = text.replace(",", "")
    return [_mammoth_delete_extra_zero(token) for token in re.findall(r"-?\d+/?\.?\d*", text)]


def _strip_one_suffix(text: str, suffix: str) -> str:
    return text[:-1] if text.endswith(suffix) else text


def _mammoth_gold(family: _Family, gold: Gold) -> str:
    """The gold string MAmmoTH's data_reader builds: str(answer) for multiple choice and NumGLUE,
    delete_extra_zero of GSM8K's text, SVAMP's number without ".0"."""
    if family in (_Family.CHOICE, _Family.NUMGLUE) or isinstance(gold, list | tuple):
        return str(gold)
    if isinstance(gold, str):
        return _mammoth_delete_extra_zero(gold.replace(",", ""))
    text = str(gold)
    return _mammoth_delete_extra_zero(text[:-2] if text.endswith(".0") else text)


def _mammoth_delete_extra_zero(text: str) -> str:
    """MAmmoTH's `delete_extra_zero`: "5.0" -> "5", "2.50" -> "2.5", non-numbers unchanged."""
    try:
        value = float(text)
    except ValueError:
        return text
    trimmed = str(value).rstrip("0")
    return str(int(trimmed[:-1])) if trimmed.endswith(".") else str(float(trimmed))


def _mammoth_extract_math(text: str) -> str:
    """MAmmoTH's `extract_math_answer`."""
    if "The answer is " in text:
        answer = text.split("The answer is ")[-1].strip()
    elif "the answer is " in text:
        answer = text.split("the answer is ")[-1].strip()
    elif "boxed" in text:
        answer = _mammoth_boxed(text)
    else:
        numbers = re.findall(r"-?\d*\.?\d+", text)
        answer = numbers[-1] if numbers else ""
    answer = _mammoth_strip_string(_strip_one_suffix(_strip_one_suffix(answer, "."), "/"))
    return _mammoth_boxed(answer) if "boxed" in answer else answer


def _mammoth_boxed(text: str) -> str:
    """Brace-matched content after the last 'boxed', through _strip_string."""
    tail = text.split("boxed")[-1]
    if not tail:
        return ""
    if tail[0] != "{":
        return _mammoth_strip_string(tail.split("$")[0].strip())
    depth, content = 1, []
    for char in tail[1:]:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            break
        content.append(char)
    return _mammoth_strip_string("".join(content))


def _mammoth_strip_string(text: str) -> str:
    """The Hendrycks MATH normalisation as MAmmoTH's `_strip_string` applies it."""
    for old, new in (
        ("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
        ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""),
    ):  # fmt: skip
        text = text.replace(old, new)
    if "\\text{ " in text:
        text = text.split("\\text{ ")[0]
    text = text.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = _mammoth_fix_sqrt(text).replace(" ", "")
    return _mammoth_fix_a_slash_b(_mammoth_fix_fracs(text))


def _mammoth_fix_sqrt(text: str) -> str:
    head, *rest = text.split("\\sqrt")
    for part in rest:
        head += "\\sqrt{" + part[0] + "}" + part[1:] if part and part[0] != "{" else "\\sqrt" + part
    return head


def _mammoth_fix_fracs(text: str) -> str:
    head, *rest = text.split("\\frac")
    for part in rest:
        head += "\\frac"
        if not part or part[0] == "{":
            head += part
            continue
        if len(part) < 2:
            return text
        first, second, tail = part[0], part[1], part[2:]
        head += "{" + first + "}" + ("{" + second + "}" if second != "{" else second) + tail
    return head


def _mammoth_fix_a_slash_b(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        numerator, denominator = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    if text != f"{numerator}/{denominator}":
        return text
    return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


def _mammoth_math_gold(gold: str) -> tuple[str, int | float | None]:
    """MAmmoTH's (string, number) MATH gold, rebuilt: its MATH.json is not public (peers §2.5)."""
    truth = _mammoth_strip_string(gold)
    return truth, _mammoth_number_it(truth)


def _mammoth_math_equal(answer: str, truth: str, number: int | float | None) -> bool:
    """MAmmoTH's `compare_both_string_and_number_format`."""
    if answer == truth:
        return True
    value = _mammoth_number_it(answer)
    if number is None or value is None:
        return False
    try:
        if math.isnan(value):
            return False
        if isinstance(number, int):
            return round(value) == number
        return number - abs(number) * 0.04 <= value <= number + abs(number) * 0.04
    except (OverflowError, ValueError, TypeError):
        return False


def _mammoth_number_it(text: str) -> int | float | None:
    """MAmmoTH's `number_it`, with `eval` replaced by a literal-arithmetic evaluator."""
    if "frac" in text:
        text = re.sub(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", r"\1/\2", text)
        value = _literal_arithmetic(text)
        if value is not _NO_VALUE:
            text = str(value)
    elif "," in text:
        text = text.replace(",", "")
    number = _mammoth_floatify(text)
    if number is not None:
        return number
    value = _literal_arithmetic(text)
    if isinstance(value, list | tuple):
        value = value[0] if value else _NO_VALUE
    return None if value is _NO_VALUE else _mammoth_floatify(value)


def _mammoth_floatify(value: Any) -> int | float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return round(number) if number.is_integer() else number


_NO_VALUE = object()
_LITERAL_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


_LITERAL_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: lambda a: -a,
    ast.UAdd: lambda a: +a,
    ast.Not: lambda a: not a,
}


def _literal_arithmetic(text: str) -> Any:
    """What Python's eval gives for literal arithmetic (numbers, + - * / // % **, tuples), else
    _NO_VALUE. Names and calls are refused, so this is narrower than MAmmoTH's eval."""
    try:
        return _arithmetic(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ArithmeticError, _Unreadable, RecursionError):
        return _NO_VALUE


def _arithmetic(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and not isinstance(node.value, bytes):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _LITERAL_UNARY:
        return _LITERAL_UNARY[type(node.op)](_arithmetic(node.operand))
    if isinstance(node, ast.Tuple | ast.List):
        items = [_arithmetic(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _arithmetic(node.left), _arithmetic(node.right)
        if _too_big_power(base, exponent):
            raise _Unreadable("power too large")
        return base**exponent
    if isinstance(node, ast.BinOp) and type(node.op) in _LITERAL_OPERATORS:
        return _LITERAL_OPERATORS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise _Unreadable(type(node).__name__)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[[], Comparator]] = {
    "numeric": NumericComparator,
    "numeric-rounded": RoundedComparator,
    "choice": ChoiceComparator,
    "choice-nearest": NearestChoiceComparator,
    "symbolic": SymbolicComparator,
    "symbolic-numeric": SymbolicNumericComparator,
}
_NEEDS_DATASET = ("auto", "mammoth")


def comparator_names() -> list[str]:
    """Every name `get_comparator` accepts."""
    return [*_REGISTRY, *_NEEDS_DATASET]


def get_comparator(name: str, *, dataset: str | None = None) -> Comparator:
    """The comparator called `name` ("numeric" or pinned "numeric@1").

    `auto` resolves to the dataset's default (so a report says e.g. "numeric@1", never
    "auto"); `mammoth` needs the dataset for its rule family.

    Raises:
        UnknownComparator: unknown name, a pinned version we do not have, or no dataset given
            (or known) for `auto` / `mammoth`.
    """
    base, _, pinned = name.partition("@")
    comparator = _resolve(base, dataset)
    if pinned and pinned != str(comparator.version):
        raise UnknownComparator(f"{base} is at version {comparator.version}, not {pinned}")
    return comparator


def _resolve(name: str, dataset: str | None) -> Comparator:
    if name in _NEEDS_DATASET:
        if dataset is None:
            raise UnknownComparator(f"comparator {name!r} needs the dataset name")
        return _resolve_for(name, dataset)
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownComparator(f"unknown comparator {name!r}; use one of {comparator_names()}")
    return factory()


def _resolve_for(name: str, dataset: str) -> Comparator:
    """`auto` or `mammoth` for one dataset."""
    if name == "mammoth":
        _mammoth_family(dataset)
        return MammothComparator(dataset)
    try:
        return _resolve(default_comparator(dataset), None)
    except UnknownDataset as error:
        raise UnknownComparator(str(error)) from None


# --------------------------------------------------------------------------- the judge


@dataclass(frozen=True, slots=True)
class Comparison:
    """One item for `AnswerJudge.compare_many`."""

    predicted: str | None
    """The run's answer text (or stdout); None when the run produced none."""
    gold: Gold
    """The gold answer as the dataset gives it."""
    comparator: str | Comparator = "auto"
    """A registry name, or a picklable comparator object."""
    dataset: str | None = None
    """Needed by `auto` and `mammoth`."""
    options: Sequence[str] | None = None
    """Multiple-choice options, e.g. ["A)12", "B)15", ...]."""


class AnswerJudge:
    """Runs comparisons in a process pool; a comparison past its deadline has its worker killed.

    The parent owns the clock (pebble): an overdue worker is stopped and replaced, and the
    verdict is `Verdict(False, "comparison timeout")`. Use as a context manager.

    Workers come from a forkserver by default, never from a fork of the caller, which may be
    running gRPC threads (Python 3.14 makes the same choice). As with any non-fork start, the
    caller's script is re-imported in each worker: keep its work under
    `if __name__ == "__main__":`, or pass start_method="fork".
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        start_method: str = "forkserver",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.workers = workers or os.cpu_count() or 1
        """Worker processes in the pool."""
        self.timeout_s = timeout_s
        """Deadline of one comparison, counted from when a worker starts it."""
        self.start_method = start_method
        """multiprocessing start method of the workers (forkserver, spawn or fork)."""
        self._pool: Any = None

    def __enter__(self) -> AnswerJudge:
        import pebble

        self._pool = pebble.ProcessPool(
            max_workers=self.workers,
            initializer=_prepare_worker,
            context=multiprocessing.get_context(self.start_method),
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the workers; pending comparisons are cancelled."""
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def compare(
        self,
        predicted: str | None,
        gold: Gold,
        *,
        comparator: str | Comparator = "auto",
        dataset: str | None = None,
        options: Sequence[str] | None = None,
    ) -> Verdict:
        """One comparison under the deadline (see `Comparison` for the arguments)."""
        return self.compare_many([Comparison(predicted, gold, comparator, dataset, options)])[0]

    def compare_many(self, items: Iterable[Comparison]) -> list[Verdict]:
        """All comparisons, in input order; each has its own deadline.

        Raises:
            UnknownComparator: an item names a comparator that does not exist (checked first).
            JudgeClosed: the judge is not open.
            JudgeBroken: the workers could not start.
        """
        if self._pool is None:
            raise JudgeClosed("AnswerJudge is not open; use it in a `with` block")
        jobs = [(_comparator_of(item), item) for item in items]
        futures = [
            self._pool.schedule(
                _judge_one,
                args=(comparator, item.predicted, item.gold, item.options),
                timeout=self.timeout_s,
            )
            for comparator, item in jobs
        ]
        try:
            return [_collect(future) for future in futures]
        except BrokenProcessPool as error:
            raise JudgeBroken(
                f"answer-judge workers died at start-up ({error}); with start_method="
                f"{self.start_method!r} the main script must be importable and guarded by "
                "`if __name__ == '__main__':`, or use start_method='fork'"
            ) from error


def _comparator_of(item: Comparison) -> Comparator:
    if isinstance(item.comparator, str):
        return get_comparator(item.comparator, dataset=item.dataset)
    return item.comparator


def _prepare_worker() -> None:
    """Imports sympy/math-verify before the first deadline starts, and quiets its warnings."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        import math_verify  # noqa: F401


def _judge_one(
    comparator: Comparator, predicted: str | None, gold: Gold, options: Sequence[str] | None
) -> Verdict:
    """Runs in a worker; a comparator's own failure becomes a verdict, not a lost batch."""
    try:
        return comparator(predicted, gold, options=options)
    except Exception as error:
        return Verdict(False, f"comparison error: {type(error).__name__}: {error}")


def _collect(future: Any) -> Verdict:
    import pebble

    try:
        verdict: Verdict = future.result()
    except FutureTimeout:
        return Verdict(False, "comparison timeout")
    except pebble.ProcessExpired as error:
        return Verdict(False, f"comparison crashed (exit code {error.exitcode})")
    return verdict
