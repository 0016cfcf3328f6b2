"""Gold-answer loaders for the eval sets, and each set's default comparator.

Loaders read the public file formats (the JSONL copies in shared/datasets, NumGLUE's JSON) and
yield `GoldItem`s; no data ships with the package.

Id scheme (join model outputs on `(dataset, id)`):
    the dataset's own unique id where it has one: svamp `ID` ("chal-777"), theoremqa `id`
    ("jianyu_xu/Lah_number_6.json"), math500 `unique_id` ("test/precalculus/807.json");
    else the record's `idx` (gsm8k, gsm-hard, math, multiarith: equal to the row index in
    the shared copies) or multiarith's `iIndex`; else the 0-based row index (aqua, numglue).
    The generic format requires an explicit `id`. Ids are always strings.

    DatasetError
    ├── UnknownDataset   no loader / default comparator for that name
    └── BadRecord        a row lacks a field or is not valid JSON (names file and row)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

GoldValue: TypeAlias = str | int | float | bool | list[str | int | float | bool]
"""A gold answer as the dataset stores it (TheoremQA has booleans and lists)."""

Row: TypeAlias = dict[str, Any]


class DatasetError(Exception):
    """Root of every error raised by potsandbox.client.datasets."""


class UnknownDataset(DatasetError, KeyError):
    """No loader or default comparator is known for this dataset name."""

    def __str__(self) -> str:
        return str(self.args[0])


class BadRecord(DatasetError, ValueError):
    """A row cannot be read; `where` is "path:row" (1-based row)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass(frozen=True, slots=True)
class GoldItem:
    """One question's gold answer, ready to compare a prediction with."""

    id: str
    """Join key within the dataset (see the module docstring for the scheme)."""
    dataset: str
    """Canonical dataset name (gsm8k, gsm-hard, math, math500, svamp, aqua, ...)."""
    gold: GoldValue
    """The gold answer as the dataset gives it (text, number, boolean or list)."""
    options: tuple[str, ...] | None
    """Multiple-choice options ("A)12", ...), or None."""
    question: str
    """The problem text as posed (SVAMP: body + question; NumGLUE RC: passage + question)."""


_ALIASES = {
    "gsm": "gsm8k",
    "gsmhard": "gsm-hard",
    "gsm_hard": "gsm-hard",
    "gsmhardv2": "gsm-hard",
    "math-500": "math500",
    "math_500": "math500",
    "aqua-rat": "aqua",
    "aqua_rat": "aqua",
    "theorem-qa": "theoremqa",
    "theorem_qa": "theoremqa",
    "tat-qa": "tatqa",
    "tat_qa": "tatqa",
}

_DEFAULT_COMPARATORS = {
    "gsm8k": "numeric",
    "gsm-hard": "numeric",
    "svamp": "numeric",
    "multiarith": "numeric",
    "asdiv": "numeric",
    "mawps": "numeric",
    "tabmwp": "numeric",
    "numglue": "numeric",
    "tatqa": "numeric-rounded",
    "aqua": "choice",
    "math": "symbolic-numeric",
    "math500": "symbolic-numeric",
    "theoremqa": "symbolic-numeric",
}


def canonical_dataset(name: str) -> str:
    """The canonical spelling: "GSM8K", "gsm_hard", "MATH-500" -> gsm8k, gsm-hard, math500."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def default_comparator(dataset: str) -> str:
    """The comparator name `auto` uses for a dataset.

    tatqa gets numeric-rounded, not numeric: its golds are rounded to two places, so a correct
    program's 23.2330 would miss "23.23" at the 1e-4 tolerance.

    Raises:
        UnknownDataset: no default is defined; pass a comparator name explicitly.
    """
    name = canonical_dataset(dataset)
    if name not in _DEFAULT_COMPARATORS:
        known = ", ".join(sorted(_DEFAULT_COMPARATORS))
        raise UnknownDataset(f"no default comparator for dataset {dataset!r}; known: {known}")
    return _DEFAULT_COMPARATORS[name]


def load_gold(path: str | Path, dataset: str = "generic") -> Iterator[GoldItem]:
    """Gold items from a file in `dataset`'s public format, in file order.

    `generic` reads JSONL rows with `id` and `gold` (and optional `options`, `dataset`,
    `question`). JSON arrays are accepted as well as JSON Lines.

    Raises:
        UnknownDataset: no loader for `dataset`.
        BadRecord: a row is not JSON or lacks a required field.
    """
    name = canonical_dataset(dataset)
    converter = _CONVERTERS.get(name)
    if converter is None:
        raise UnknownDataset(f"no loader for dataset {dataset!r}; known: {', '.join(_CONVERTERS)}")
    return _items(Path(path), name, converter)


def _items(path: Path, name: str, converter: Callable[[Row, int], GoldItem]) -> Iterator[GoldItem]:
    for number, row in enumerate(_rows(path)):
        try:
            yield converter(row, number)
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            problem = f"not a {name} record ({type(error).__name__}: {error})"
            raise BadRecord(f"{path}:{number + 1}", problem) from None


def _rows(path: Path) -> Iterator[Row]:
    """Rows of a JSON Lines file, or of a file holding one JSON array."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            yield from json.loads(text)
        except json.JSONDecodeError as error:
            raise BadRecord(f"{path}:{error.lineno}", f"invalid JSON: {error.msg}") from None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            raise BadRecord(f"{path}:{number}", f"invalid JSON: {error.msg}") from None


def _row_id(row: Row, index: int, *keys: str) -> str:
    """The first of `keys` the row has, else its row index."""
    return next((str(row[key]) for key in keys if row.get(key) is not None), str(index))


def _gsm8k(row: Row, index: int) -> GoldItem:
    gold = row["gold"] if "gold" in row else row["answer"].split("####")[-1].strip()
    return GoldItem(_row_id(row, index, "idx"), "gsm8k", gold, None, row["question"])


def _gsm_hard(row: Row, index: int) -> GoldItem:
    return GoldItem(_row_id(row, index, "idx"), "gsm-hard", row["target"], None, row["input"])


def _math(row: Row, index: int) -> GoldItem:
    gold = row["gold"] if "gold" in row else last_boxed(row["solution"])
    if gold is None:
        raise KeyError("no gold and no \\boxed{} in the solution")
    return GoldItem(_row_id(row, index, "idx"), "math", gold.strip(), None, row["problem"])


def _math500(row: Row, index: int) -> GoldItem:
    return GoldItem(
        _row_id(row, index, "unique_id"), "math500", row["answer"].strip(), None, row["problem"]
    )


def _svamp(row: Row, index: int) -> GoldItem:
    question = row.get("question_full") or f"{row['Body'].strip()} {row['Question'].strip()}"
    return GoldItem(_row_id(row, index, "ID"), "svamp", row["Answer"], None, question)


def _aqua(row: Row, index: int) -> GoldItem:
    options = tuple(row["options"])
    return GoldItem(str(index), "aqua", row["correct"], options, row["question"])


def _multiarith(row: Row, index: int) -> GoldItem:
    gold = row["gold"] if "gold" in row else _plain_number(row["lSolutions"][0])
    question = row.get("question") or row["sQuestion"].strip()
    return GoldItem(_row_id(row, index, "idx", "iIndex"), "multiarith", gold, None, question)


def _theoremqa(row: Row, index: int) -> GoldItem:
    return GoldItem(_row_id(row, index, "id"), "theoremqa", row["Answer"], None, row["Question"])


def _generic(row: Row, index: int) -> GoldItem:
    options = row.get("options")
    dataset = canonical_dataset(row.get("dataset") or "generic")
    return GoldItem(
        str(row["id"]),
        dataset,
        row["gold"],
        tuple(options) if options else None,
        row.get("question", ""),
    )


def _numglue(row: Row, index: int) -> GoldItem:
    """NumGLUE's eight task types (allenai/numglue data/*.json); MAmmoTH's flat copy too."""
    kind = row.get("type")
    answer = row["answer"]
    if kind == "Type_3":
        choices = (str(row["Option1"]), str(row["Option2"]))
        return GoldItem(
            str(index), "numglue", row[answer.replace(" ", "")], choices, row["question"]
        )
    if kind == "Type_7":
        options = tuple(_nli_options(row["options"]))
        question = f"{row['statement1']}\n{row['statement2']}\n{row['options'].strip()}"
        return GoldItem(str(index), "numglue", answer, options, question)
    if kind in ("Type_5", "Type_6"):
        question = f"{row['passage']}\n{row['question']}"
        return GoldItem(str(index), "numglue", _drop_answer(answer), None, question)
    return GoldItem(str(index), "numglue", answer, None, row["question"])


def _nli_options(text: str) -> list[str]:
    """NLI options from the question tail " Entailment or contradiction or neutral?"."""
    return [word.strip() for word in re.split(r"\bor\b", text.strip().rstrip("?")) if word.strip()]


def _drop_answer(answer: dict[str, Any]) -> str:
    """A DROP-style answer: the number, else the spans, else the date as "day month year"."""
    if answer.get("number"):
        return str(answer["number"])
    if answer.get("spans"):
        return ", ".join(answer["spans"])
    date = answer.get("date") or {}
    return " ".join(str(date[part]) for part in ("day", "month", "year") if date.get(part))


def _plain_number(value: float) -> int | float:
    """7.0 -> 7: MultiArith's original JSON stores integer answers as floats."""
    return int(value) if float(value).is_integer() else value


_BOX = re.compile(r"\\(?:boxed|fbox)")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...} (brace-matched), or None: MATH's gold."""
    boxes = list(_BOX.finditer(text))
    if not boxes:
        return None
    rest = text[boxes[-1].end() :]
    if not rest.startswith("{"):
        bare = re.match(r"\s*([^\s${}]+)", rest)
        return bare.group(1) if bare else None
    depth = 0
    for position, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:position]
    return None


_CONVERTERS: dict[str, Callable[[Row, int], GoldItem]] = {
    "gsm8k": _gsm8k,
    "gsm-hard": _gsm_hard,
    "math": _math,
    "math500": _math500,
    "svamp": _svamp,
    "aqua": _aqua,
    "multiarith": _multiarith,
    "theoremqa": _theoremqa,
    "numglue": _numglue,
    "generic": _generic,
}


def dataset_names() -> Sequence[str]:
    """Every dataset name `load_gold` reads."""
    return tuple(_CONVERTERS)
