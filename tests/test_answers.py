"""Answer extraction, the comparators and the judge, on real gold/answer pairs.

Pairs marked with a corpus id come from shared/corpus/pot_public.jsonl (`observed` vs `gold`);
the others are golds of shared/datasets with the renderings programs produce.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from potsandbox.client.answers import (
    AnswerJudge,
    ChoiceComparator,
    Comparison,
    Gold,
    JudgeClosed,
    NumericComparator,
    UnknownComparator,
    Verdict,
    comparator_names,
    extract_number,
    get_comparator,
    parse_number,
    read_sympy_text,
)
from potsandbox.client.datasets import load_gold

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus" / "pot_public.jsonl"
DATASETS = SHARED / "datasets"


def require(path: Path) -> Path:
    """The shared file, or skip: a user's clone has no ../shared beside it."""
    if not path.exists():
        pytest.skip(f"{path} not found (../shared is only beside CI and dev clones)")
    return path


def corpus_records() -> Iterator[dict[str, Any]]:
    with require(CORPUS).open() as lines:
        for line in lines:
            yield json.loads(line)


# --------------------------------------------------------------------------- extraction

EXTRACT_LAST = [
    ("18", "18"),
    ("Janet makes $18 every day.", "18"),
    ("The total is $1,234.50.", "1234.50"),
    ("12%", "12"),
    ("Rs. 4000", "4000"),
    ("3/4", "3/4"),
    ("2.5e3", "2.5e3"),
    ("2.010666990518096e-06", "2.010666990518096e-06"),  # pal_gsmhard-00218
    ("-0.0", "-0.0"),
    ("−7", "-7"),
    ("x = -5", "-5"),
    ("Step 1\n42", "42"),
    ("18\nDone", None),  # the last line is the answer, and it has no number
    ("5*sqrt(10)", "15.811388300841896"),  # pot_aqua_fs-00034: a sympy value
    ("[exp(5/6)]", "2.300975890892825"),  # tqa_gpt4_0615-00251: a one-item list
    ("(2, 0)", None),  # tora70b_gsm8k-01001: a tuple is not a number
    ("2500/y", None),  # pot_aqua_fs-00243: symbolic
    ("2*I", None),  # complex
    ("m - 35", None),  # toracode34b_gsm8k-01129
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_LAST)
def test_extract_number_last_reads_the_corpus_rule(text: str | None, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1: 3, total 18", "1"),  # peers.md §2.3: MAmmoTH answers "1" here
        ("The answer is 1,000 apples and 3 pears", "1000"),
        ("x - 4 = 6", "4"),
        ("no digits", None),
    ],
)
def test_extract_number_first_takes_the_first_number(text: str, expected: str | None) -> None:
    assert extract_number(text, mode="first") == expected


def test_parse_number_strict_refuses_unit_words_that_lenient_strips() -> None:
    assert parse_number("22 dollars") == 22
    assert parse_number("22 dollars", lenient=False) is None
    assert parse_number("5x", lenient=False) is None
    assert parse_number("\\frac{3}{4}", lenient=False) == parse_number("0.75")


def test_runaway_exponent_is_no_number_instead_of_a_hang() -> None:
    started = time.monotonic()
    assert parse_number("1e999999999") is None
    assert time.monotonic() - started < 1


def test_huge_integer_compares_exactly() -> None:
    big = "633825300114114700748351602688"  # tqa_gpt4_0615-00432's observed (2**99)
    assert parse_number(big) == 2**99


# --------------------------------------------------------------------------- numeric

NUMERIC = [
    ("2125.0", "2,125", True),  # tora70b_gsm8k-00146: thousands comma in the gold
    ("7250000.0", "1,450,000", False),  # tora70b_gsm8k-00611
    ("145", 145.0, True),  # svamp chal-777: gold is a JSON float
    ("-9867630", -9867630.0, True),  # gsm-hard idx 0
    ("13919358.399999999", "13919358.399999999", True),  # pal_gsmhard
    ("2.010666990518096e-06", "2.0107e-06", True),  # pal_gsmhard-00218: tolerance on 1
    ("-0.0", "0", True),  # negative zero
    ("-0.0", "30.15928896", False),  # tqa_gpt3-00361
    ("633825300114114700748351602689", "633825300114114700748351602688", True),  # relative tol
    ("840/13", "42", False),  # tora70b_gsm8k-00116: a printed sympy Rational
    ("45/2", "22.5", True),  # fraction against decimal
    ("-12.600000000000001", "-12.6", True),  # pot_tatqa_fs-00004
    ("-22.222222222222225", "-22.22", False),  # pot_tatqa_fs-00005: rounded gold, see below
    ("$16.4 million", "16.4", True),  # pot_tatqa_fs-00497: currency and unit word
    ("12%", "12", True),
    ("Janet makes $18 every day.", "18", True),  # stdout prose
    ("(2, 0)", "2", False),  # tora70b_gsm8k-01001
    ("None", "56", False),  # multiarith: `ans` was None
    ("[4.0, 2.0]", "[4, 2]", True),  # theoremqa list gold, element-wise
    ("[1, 4]", "[4, 1]", False),  # order matters
    ("[4.0, 2.0]", [4, 2], True),  # list gold as JSON
    ("[4, 2, 0]", [4, 2], False),
    ("True", True, True),  # theoremqa bool
    ("False", True, False),
    ("yes", "yes", True),  # tabmwp text gold
    ("no", "yes", False),
    ("5:45 P.M.", "5:45 P.M.", True),  # tabmwp: text, not 45
    ("4:20 P.M.", "snowman competition", False),
    (None, "18", False),
]


@pytest.mark.parametrize(("predicted", "gold", "correct"), NUMERIC)
def test_numeric_verdicts_on_real_pairs(predicted: str | None, gold: Gold, correct: bool) -> None:
    assert get_comparator("numeric")(predicted, gold).correct is correct


def test_numeric_canonical_spelling_votes_equal_values_together() -> None:
    numeric = NumericComparator()
    spellings = {numeric(text, "18").canonical for text in ("18", "18.0", "36/2", "$18")}
    assert spellings == {"18"}


def test_numeric_tolerance_is_relative_above_one_and_absolute_below() -> None:
    numeric = NumericComparator()
    assert numeric("1000.09", "1000").correct
    assert not numeric("1000.2", "1000").correct
    assert numeric("0.00009", "0").correct
    assert not numeric("0.0002", "0").correct


ROUNDED = [
    ("-22.222222222222225", "-22.22", True),  # pot_tatqa_fs-00005
    ("-8.108108108108116", "-8.11", True),  # pot_tatqa_fs-00017
    ("6.666666666666667", "6.67", True),
    ("-8.2", "-8.11", False),
    ("4.5", "5", False),  # a gold without decimals is not a rounded gold
    ("22", "22", True),
]


@pytest.mark.parametrize(("predicted", "gold", "correct"), ROUNDED)
def test_numeric_rounded_accepts_tatqa_two_place_golds(
    predicted: str, gold: str, correct: bool
) -> None:
    assert get_comparator("numeric-rounded")(predicted, gold).correct is correct


# --------------------------------------------------------------------------- multiple choice

SELLING = ["A)$5102", "B)$618", "C)$216", "D)$202", "E)$200"]
SALARY = ["A)$45,000", "B)$50,000", "C)$54,000", "D)$59,000", "E)$62,000"]
ROOTS = ["A) 13.3542", "B) 15.8113", "C) 18.3451", "D) 19.5667", "E) 20.8888"]
DOLLARS = ["A)22 dollars", "B)15 dollars", "C)20 dollars", "D)18 dollars", "E)10 dollars"]
TOWER = ["A)5(√3 + 1)", "B)6(√3 + √2)", "C)7(√3 – 1)", "D)8(√3 – 2)", "E)None of these"]
SYMBOLS = ["A)y/400", "B)4y", "C)50y", "D)2500/y", "E)5000/y"]
METRES = ["A)50 m", "B)75 m", "C)100 m", "D)125 m", "E)150 m"]
ROUNDS = ["A)270", "B)300", "C)280", "D)320", "E)315"]

CHOICE = [
    ("618.0000000000009", "B", SELLING, True, "number equals the gold option"),
    ("50000.0", "B", SALARY, True, "number equals the gold option"),
    ("5*sqrt(10)", "B", ROOTS, True, "number equals the gold option"),  # pot_aqua_fs-00034
    ("20.0", "B", DOLLARS, False, "number is not the gold option"),
    ("30.0", "A", TOWER, False, "gold option is not a number"),  # pal_aqua-00000
    ("2500/y", "D", SYMBOLS, True, "option matches"),  # the option's own text
    ("B", "B", SELLING, True, "option matches"),
    ("(b)", "B", SELLING, True, "option matches"),
    ("C", "B", SELLING, False, "option differs"),
    ("c", "(c)", None, True, "option matches"),  # theoremqa option gold, options in the question
    (None, "B", SELLING, False, "no answer"),
]


@pytest.mark.parametrize(("predicted", "gold", "options", "correct", "reason"), CHOICE)
def test_choice_is_strict_about_the_gold_option(
    predicted: str | None, gold: str, options: list[str] | None, correct: bool, reason: str
) -> None:
    verdict = get_comparator("choice")(predicted, gold, options=options)
    assert (verdict.correct, verdict.reason) == (correct, reason)


NEAREST = [
    ("20.0", "C", DOLLARS, True),
    ("20.9", "C", DOLLARS, True),  # nearest, not equal
    ("87.5", "C", METRES, False),  # tie between 75 and 100: the earlier option (B) wins
    ("288.0", "B", ROUNDS, False),  # 280 (C) is nearer than 300 (B)
    ("30.0", "A", TOWER, False),  # no option is a plain number
    ("A", "A", TOWER, True),
]


@pytest.mark.parametrize(("predicted", "gold", "options", "correct"), NEAREST)
def test_choice_nearest_picks_the_closest_option(
    predicted: str, gold: str, options: list[str], correct: bool
) -> None:
    assert get_comparator("choice-nearest")(predicted, gold, options=options).correct is correct


# --------------------------------------------------------------------------- symbolic

SYMBOLIC = [
    ("sqrt(2)/2", "\\frac{\\sqrt{2}}{2}", True),
    ("0.7071067811865476", "\\frac{\\sqrt{2}}{2}", True),
    ("2*sqrt(3)", "\\sqrt{12}", True),
    ("(3, pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),  # math500 test/precalculus/807
    ("Interval.Lopen(3, 4)", "(3,4]", True),
    ("Interval.open(-oo, 0)", "(-\\infty, 0)", True),
    ("{1, 2}", "\\{1,2\\}", True),
    ("Matrix([[1], [2]])", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    ("6 - 5*I", "6 - 5i", True),  # math500 complex gold
    ("x**5 - x**4 + x**3 - x**2 + x - 1", "x^5 - x^4 + x^3 - x^2 + x - 1", True),
    ("18.9", "\\$18.90", True),
    ("33", "33\\%", True),
    ("\\dfrac{1}{3}", "\\frac13", True),
    ("0.5", "\\frac{1}{3}", False),
    ("x**2 + 1", "x^2 - 1", False),
]


@pytest.mark.parametrize(("predicted", "gold", "correct"), SYMBOLIC)
def test_symbolic_equivalence_of_latex_golds(predicted: str, gold: str, correct: bool) -> None:
    assert get_comparator("symbolic")(predicted, gold).correct is correct


LAPLACIAN = (
    "2*y/(x**3*(1 + y**2/x**2)) - 2*y/(x**3*(1 + y**2/x**2)**2) - 2*y**3/(x**5*(1 + y**2/x**2)**2)"
)
SYMBOLIC_NUMERIC = [
    ("10.0", "10", True, "numbers match"),
    ("0.5", "\\frac{1}{2}", True, "numbers match"),
    ("32348", "\\$32,\\!348", True, "numbers match"),  # math500 gold with LaTeX thousands
    ("5", "5x", False, "symbolically different"),  # a strict number: "5x" is not 5
    ("[4.0, 2.0]", "[4, 2]", True, "lists match"),  # theoremqa
    ("True", True, True, "booleans match"),  # theoremqa
    ("1.6666666666666667", "1.67", False, "numbers differ"),  # theoremqa's rounded gold
    ("Interval.open(4, 5)", "(4,5)", True, "symbolically equal"),  # a tuple gold as interval
    ("sqrt(2)/2", "\\frac{\\sqrt{2}}{2}", True, "symbolically equal"),
    ("sqrt(2)/2", "0.70710678", True, "numbers match"),  # a sympy value against a decimal
    ("[exp(5/6)]", "2.301", True, "numbers match"),  # tqa_gpt4_0615-00251
    ("[0.2, 0.99, 1.01, 0.99, 1.0", "1", False, "no number in prediction"),  # cut-off list
    (LAPLACIAN, "0", True, "symbolically equal"),  # tqa_gpt4_0615-00208: simplifies to 0
]


@pytest.mark.parametrize(("predicted", "gold", "correct", "reason"), SYMBOLIC_NUMERIC)
def test_symbolic_numeric_takes_the_cheap_path_for_plain_numbers(
    predicted: str, gold: Gold, correct: bool, reason: str
) -> None:
    verdict = get_comparator("symbolic-numeric")(predicted, gold)
    assert (verdict.correct, verdict.reason) == (correct, reason)


def test_sympy_text_reader_builds_values_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    assert read_sympy_text(hostile) is None
    assert read_sympy_text("(1).__class__") is None
    assert read_sympy_text("2**100000") is None
    assert not get_comparator("symbolic")(hostile, "1").correct
    assert not marker.exists()
    assert str(read_sympy_text("sqrt(8)/2")) == "sqrt(2)"


def test_math500_golds_are_equal_to_themselves() -> None:
    items = list(load_gold(require(DATASETS / "math500_test.jsonl"), "math500"))
    with AnswerJudge(workers=2, timeout_s=10) as judge:
        verdicts = judge.compare_many(
            Comparison(str(item.gold), item.gold, "auto", dataset="math500") for item in items
        )
    wrong = [(item.gold, verdict) for item, verdict in zip(items, verdicts, strict=True)]
    assert [pair for pair in wrong if not pair[1].correct] == []


@pytest.mark.slow
def test_math_golds_are_equal_to_themselves() -> None:
    items = list(load_gold(require(DATASETS / "math_test.jsonl"), "math"))
    with AnswerJudge(workers=os.cpu_count(), timeout_s=10) as judge:
        verdicts = judge.compare_many(
            Comparison(str(item.gold), item.gold, "auto", dataset="math") for item in items
        )
    failed = [
        item.gold for item, verdict in zip(items, verdicts, strict=True) if not verdict.correct
    ]
    assert failed == []


# --------------------------------------------------------------------------- MAmmoTH

MAMMOTH = [
    # peers.md §2.3: an executed program's answer is the FIRST number of its stdout.
    ("gsm8k", "Step 1: 3, total 18", "18", False, "1"),
    ("gsm8k", "Step 1: 3, total 18", "1", True, "1"),
    # §2.5: exact string after delete_extra_zero; no tolerance.
    ("gsm8k", "18.0", "18", True, "18"),
    ("gsm8k", "17.999999999", "18", False, "17.999999999"),
    ("gsm8k", "0.50", "0.5", True, "0.5"),
    ("gsm8k", "-0.0", "0", True, "0"),
    ("gsm8k", "1,000", "1,000", True, "1000"),
    ("gsm8k", "1/2", "0.5", False, "1/2"),  # "1/2" is left as is
    ("gsm8k", "x = 5\ny = 7", "7", True, "7"),  # the part after the last "="
    ("gsm8k", "", "0", False, ""),  # every failure is ''
    ("gsm8k", None, "0", False, ""),
    ("svamp", "145.0", 145.0, True, "145"),  # SVAMP gold: str(Answer) minus ".0"
    # MATH: string match after _strip_string, else round() for integer golds, else ±4 %.
    ("math", "1/2", "\\frac{1}{2}", True, "\\frac{1}{2}"),
    ("math", "\\dfrac{1}{2}", "\\frac12", True, "\\frac{1}{2}"),
    ("math", "x = 3", "3", True, "3"),
    ("math", "0.51", "\\frac{1}{2}", True, "0.51"),
    ("math", "0.53", "\\frac{1}{2}", False, "0.53"),
    ("math", "10.4", "10", True, "10.4"),
    ("math", "10.6", "10", False, "10.6"),
    ("math", "sqrt(2)/2", "\\frac{\\sqrt{2}}{2}", False, "sqrt(2)/2"),  # no sympy in MAmmoTH
    # AQuA: a letter, and anything that is not a letter becomes "A" (--match_answer random).
    ("aqua", "The answer is B", "B", True, "B"),
    ("aqua", "b", "B", True, "B"),
    ("aqua", "42", "A", True, "A"),
    ("aqua", "42", "B", False, "A"),
    ("aqua", None, "A", True, "A"),
]


@pytest.mark.parametrize(("dataset", "stdout", "gold", "correct", "answer"), MAMMOTH)
def test_mammoth_reproduces_its_hand_checked_rules(
    dataset: str, stdout: str | None, gold: Gold, correct: bool, answer: str
) -> None:
    verdict = get_comparator("mammoth", dataset=dataset)(stdout, gold)
    assert (verdict.correct, verdict.canonical) == (correct, answer)


def test_mammoth_has_no_rules_for_theoremqa() -> None:
    with pytest.raises(UnknownComparator, match="theoremqa"):
        get_comparator("mammoth", dataset="theoremqa")


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("dataset", "spec"),
    [
        ("GSM8K", "numeric@1"),
        ("gsm_hard", "numeric@1"),
        ("svamp", "numeric@1"),
        ("tatqa", "numeric-rounded@1"),
        ("aqua", "choice@1"),
        ("MATH-500", "symbolic-numeric@1"),
        ("theoremqa", "symbolic-numeric@1"),
    ],
)
def test_auto_resolves_to_a_named_comparator(dataset: str, spec: str) -> None:
    assert get_comparator("auto", dataset=dataset).spec == spec


@pytest.mark.parametrize(
    ("name", "dataset"),
    [("numeric@2", None), ("nope", None), ("auto", None), ("auto", "mystery"), ("mammoth", None)],
)
def test_unknown_comparators_are_refused(name: str, dataset: str | None) -> None:
    with pytest.raises(UnknownComparator):
        get_comparator(name, dataset=dataset)


def test_spec_names_version_and_non_default_settings() -> None:
    assert get_comparator("numeric@1").spec == "numeric@1"
    assert NumericComparator(rel_tol=1e-6).spec == "numeric@1(rel_tol=1e-06)"
    assert get_comparator("mammoth", dataset="gsm8k").spec == "mammoth@1"
    assert set(comparator_names()) >= {"numeric", "choice", "symbolic", "mammoth", "auto"}


# --------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class Sleeper:
    """A comparison that never finishes in time."""

    name: ClassVar[str] = "sleeper"
    version: ClassVar[int] = 1
    spec: ClassVar[str] = "sleeper@1"

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        time.sleep(60)
        return Verdict(True, "woke up")


@dataclass(frozen=True)
class Suicide:
    """A comparison whose worker process dies."""

    name: ClassVar[str] = "suicide"
    version: ClassVar[int] = 1
    spec: ClassVar[str] = "suicide@1"

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        os._exit(3)


@dataclass(frozen=True)
class Broken:
    """A comparison that raises."""

    name: ClassVar[str] = "broken"
    version: ClassVar[int] = 1
    spec: ClassVar[str] = "broken@1"

    def __call__(
        self, predicted: str | None, gold: Gold, *, options: Sequence[str] | None = None
    ) -> Verdict:
        raise RuntimeError("bug")


def test_compare_many_keeps_input_order() -> None:
    items = [
        Comparison("18", "18", "numeric"),
        Comparison("B", "B", "choice", options=SELLING),
        Comparison("17", "18", "auto", dataset="gsm8k"),
        Comparison("sqrt(2)/2", "\\frac{\\sqrt{2}}{2}", "auto", dataset="math"),
        Comparison("18.0", "18", "mammoth", dataset="gsm8k"),
    ]
    with AnswerJudge(workers=2) as judge:
        verdicts = judge.compare_many(items)
    assert [verdict.correct for verdict in verdicts] == [True, True, False, True, True]


def test_hung_comparison_times_out_and_the_pool_recovers() -> None:
    with AnswerJudge(workers=1, timeout_s=0.5) as judge:
        started = time.monotonic()
        verdict = judge.compare("18", "18", comparator=Sleeper())
        assert verdict == Verdict(False, "comparison timeout")
        assert time.monotonic() - started < 10
        assert judge.compare("18", "18", comparator="numeric").correct


def test_sympy_blowup_times_out_instead_of_hanging() -> None:
    huge = "10^{10^{10^{10}}}"
    with AnswerJudge(workers=1, timeout_s=2) as judge:
        verdict = judge.compare("\\boxed{" + huge + "+1}", huge, comparator="symbolic")
    assert verdict.reason == "comparison timeout"


def test_dying_worker_is_a_crash_verdict() -> None:
    with AnswerJudge(workers=1) as judge:
        assert (
            judge.compare("1", "1", comparator=Suicide()).reason
            == "comparison crashed (exit code 3)"
        )
        assert judge.compare("1", "1", comparator="numeric").correct


def test_raising_comparator_is_an_error_verdict_not_a_lost_batch() -> None:
    with AnswerJudge(workers=1) as judge:
        verdicts = judge.compare_many(
            [Comparison("1", "1", Broken()), Comparison("1", "1", "numeric")]
        )
    assert verdicts[0] == Verdict(False, "comparison error: RuntimeError: bug")
    assert verdicts[1].correct


def test_unknown_comparator_is_refused_before_any_work() -> None:
    with AnswerJudge(workers=1) as judge, pytest.raises(UnknownComparator):
        judge.compare_many([Comparison("1", "1", "numeric"), Comparison("1", "1", "nope")])


def test_closed_judge_raises_judge_closed() -> None:
    judge = AnswerJudge(workers=1)
    with pytest.raises(JudgeClosed):
        judge.compare("1", "1", comparator="numeric")


# --------------------------------------------------------------------------- the corpus


def corpus_verdict(record: dict[str, Any]) -> bool | None:
    """Our reading of `observed_matches_gold`: None where the gold option is not a number."""
    if record["dataset"] == "aqua":
        verdict = ChoiceComparator()(record["observed"], record["gold"], options=record["options"])
        return None if verdict.reason == "gold option is not a number" else verdict.correct
    return NumericComparator()(record["observed"], record["gold"]).correct


def test_numeric_and_choice_reproduce_observed_matches_gold() -> None:
    """Recomputes the corpus's own verdicts; prints where and why we differ."""
    total, categories = 0, Counter[str]()
    for record in corpus_records():
        total += 1
        ours, theirs = corpus_verdict(record), record["observed_matches_gold"]
        if ours != theirs:
            observed = str(record["observed"])[:40]
            categories[
                f"{record['dataset']:9s} corpus={theirs!s:5s} ours={ours!s:5s} {observed!r}"
            ] += 1
    disagreements = sum(categories.values())
    print(f"\nagreement {total - disagreements}/{total} = {1 - disagreements / total:.4%}")
    for category, count in categories.most_common():
        print(f"  {count:3d}  {category}")
    assert total == 13485
    assert 1 - disagreements / total >= 0.995
