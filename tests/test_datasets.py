"""Gold loaders: the shared copies, NumGLUE's public format, the generic JSONL, bad input."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from potsandbox.client.datasets import (
    BadRecord,
    GoldItem,
    UnknownDataset,
    canonical_dataset,
    dataset_names,
    default_comparator,
    last_boxed,
    load_gold,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATASETS = SHARED / "datasets"


def require(path: Path) -> Path:
    """The shared file, or skip: a user's clone has no ../shared beside it."""
    if not path.exists():
        pytest.skip(f"{path} not found (../shared is only beside CI and dev clones)")
    return path


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# name, file, rows, first item as (id, gold, options)
SHARED_SETS = [
    ("gsm8k", "gsm8k_test.jsonl", 1319, ("0", "18", None)),
    ("gsm-hard", "gsm_hard_test.jsonl", 1319, ("0", -9867630.0, None)),
    ("math", "math_test.jsonl", 5000, ("0", "2", None)),
    ("math500", "math500_test.jsonl", 500, ("test/precalculus/807.json", None, None)),
    ("svamp", "svamp_test.jsonl", 1000, ("chal-777", 145.0, None)),
    ("multiarith", "multiarith_test.jsonl", 600, ("0", "39", None)),
    ("theoremqa", "theoremqa_test.jsonl", 800, ("jianyu_xu/Lah_number_6.json", 11760, None)),
    ("aqua", "aqua_test.jsonl", 254, ("0", "A", ("A)5(√3 + 1)", "B)6(√3 + √2)"))),
]


@pytest.mark.parametrize(("dataset", "name", "count", "first"), SHARED_SETS)
def test_shared_copies_load_with_unique_ids(
    dataset: str, name: str, count: int, first: tuple[str, Any, Any]
) -> None:
    items = list(load_gold(require(DATASETS / name), dataset))
    assert len(items) == count
    assert len({item.id for item in items}) == count
    assert {item.dataset for item in items} == {dataset}
    assert all(item.question for item in items)
    head = items[0]
    identifier, gold, options = first
    assert head.id == identifier
    if gold is not None:
        assert head.gold == gold
    if options is not None:
        assert head.options is not None and head.options[:2] == options


def test_math500_gold_is_the_answer_field() -> None:
    head = next(load_gold(require(DATASETS / "math500_test.jsonl"), "math500"))
    assert head.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_theoremqa_keeps_typed_golds() -> None:
    golds = [
        item.gold for item in load_gold(require(DATASETS / "theoremqa_test.jsonl"), "theoremqa")
    ]
    kinds = {type(gold).__name__ for gold in golds}
    assert kinds == {"int", "float", "bool", "list", "str"}
    assert "(c)" in golds


def test_svamp_question_joins_body_and_question() -> None:
    head = next(load_gold(require(DATASETS / "svamp_test.jsonl"), "svamp"))
    assert head.question.startswith("There are 87 oranges")
    assert head.question.endswith("How big is each group of bananas?")


def test_original_formats_without_our_gold_column(tmp_path: Path) -> None:
    gsm8k = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "2+2=4\n#### 1,000"}])
    math = write_jsonl(
        tmp_path / "m.jsonl", [{"problem": "p", "solution": "so $\\boxed{\\frac{1}{2}}$."}]
    )
    multiarith = tmp_path / "ma.json"
    multiarith.write_text(json.dumps([{"iIndex": 7, "sQuestion": " q ", "lSolutions": [39.0]}]))
    assert next(load_gold(gsm8k, "gsm8k")).gold == "1,000"
    assert next(load_gold(math, "math")).gold == "\\frac{1}{2}"
    item = next(load_gold(multiarith, "multiarith"))
    assert (item.id, item.gold, item.question) == ("7", 39, "q")


def test_numglue_types_map_to_one_gold_each(tmp_path: Path) -> None:
    drop = {"number": "", "date": {"day": "24", "month": "April", "year": ""}, "spans": []}
    rows = [
        {
            "question": "Joan has 9 apples and eats 2. How many are left?",
            "answer": 7,
            "type": "Type_1",
        },
        {
            "question": "Which is heavier?",
            "Option1": "a brick",
            "Option2": "a feather",
            "answer": "Option 1",
            "type": "Type_3",
        },
        {
            "passage": "P",
            "question": "How many?",
            "answer": {"number": "10", "spans": []},
            "type": "Type_5",
        },
        {"passage": "P", "question": "When?", "answer": drop, "type": "Type_5"},
        {
            "passage": "P",
            "question": "Who?",
            "answer": {"number": "", "spans": ["Ann"]},
            "type": "Type_6",
        },
        {
            "statement1": "Tom has less than 8 pens",
            "statement2": "Tom has 3 pens",
            "options": " Entailment or contradiction or neutral?",
            "answer": "neutral",
            "type": "Type_7",
        },
    ]
    items = list(load_gold(write_jsonl(tmp_path / "NumGLUE_test.json", rows), "numglue"))
    assert [item.gold for item in items] == [7, "a brick", "10", "24 April", "Ann", "neutral"]
    assert [item.id for item in items] == ["0", "1", "2", "3", "4", "5"]
    assert items[1].options == ("a brick", "a feather")
    assert items[5].options == ("Entailment", "contradiction", "neutral")
    assert items[2].question == "P\nHow many?"


def test_generic_jsonl_reads_id_gold_and_optional_fields(tmp_path: Path) -> None:
    rows = [
        {"id": "q1", "gold": "18"},
        {"id": 2, "gold": "B", "options": ["A)1", "B)2"], "dataset": "AQuA-RAT", "question": "?"},
    ]
    items = list(load_gold(write_jsonl(tmp_path / "gold.jsonl", rows)))
    assert items == [
        GoldItem("q1", "generic", "18", None, ""),
        GoldItem("2", "aqua", "B", ("A)1", "B)2"), "?"),
    ]


def test_missing_field_names_file_and_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gold.jsonl", [{"id": "a", "gold": 1}, {"id": "b"}])
    with pytest.raises(BadRecord, match=r"gold\.jsonl:2: not a generic record") as error:
        list(load_gold(path))
    assert error.value.where.endswith("gold.jsonl:2")


def test_invalid_json_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text('{"id": "a", "gold": 1}\n{"id": \n')
    with pytest.raises(BadRecord, match=r"gold\.jsonl:2: invalid JSON"):
        list(load_gold(path))


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(UnknownDataset, match="mystery"):
        load_gold("unused.jsonl", "mystery")
    with pytest.raises(UnknownDataset, match="mystery"):
        default_comparator("mystery")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("GSM8K", "gsm8k"), ("gsm_hard", "gsm-hard"), ("MATH-500", "math500"), ("AQuA-RAT", "aqua")],
)
def test_dataset_aliases_are_canonicalised(name: str, canonical: str) -> None:
    assert canonical_dataset(name) == canonical


def test_every_loadable_set_but_generic_has_a_default_comparator() -> None:
    for name in dataset_names():
        if name != "generic":
            assert default_comparator(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed 5$", "5"),
        ("\\fbox{7}", "7"),
        ("\\boxed{unclosed", None),
        ("no box", None),
    ],
)
def test_last_boxed_brace_matches(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected
