"""The eval loop on real model outputs: corpus programs as records, bare generations and fenced
replies; hybrid fallback; CoT; MAmmoTH's scoring; MATH and NumGLUE golds; the CLI.

Runs against a real server subprocess (module-scoped); no mocks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from potsandbox.client.evaluate import EvalFields, evaluate
from potsandbox.client.generations import extract_program
from potsandbox.client.jobs_cli import add_eval_command, add_filter_command

from servers import Server, running

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "pot_sample.jsonl"
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus" / "pot_public.jsonl"
DATASETS = SHARED / "datasets"
CORPUS_RULE = ["numeric", "aqua=choice"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("eval-server")) as srv:
        yield srv


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (../shared is only beside CI and dev clones)")
    return path


def jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def cli(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="potsandbox")
    commands = parser.add_subparsers(required=True)
    add_filter_command(commands)
    add_eval_command(commands)
    args = parser.parse_args([str(arg) for arg in argv])
    code: int = args.func(args)
    return code


def fenced_reply(program: str) -> str:
    """A chat model's reply around a program (no numbers in the prose)."""
    return (
        "We can compute this directly.\n\n"
        f"```python\n{program.rstrip()}\n```\n\n"
        "Running the program gives the result."
    )


def generation_record(record: dict[str, Any], generation: str) -> dict[str, Any]:
    """A model-output record: id, generation and the answer convention, no gold."""
    keys = ("id", "dataset", "prelude", "convention", "entrypoint")
    return {"generation": generation, **{key: record[key] for key in keys}}


def gold_file(path: Path, records: list[dict[str, Any]]) -> Path:
    """The records' gold answers as a generic gold JSONL (id, gold, options, dataset)."""
    keys = ("id", "gold", "options", "dataset")
    return write_jsonl(path, [{key: record[key] for key in keys} for record in records])


def verdicts(path: Path) -> dict[str, bool]:
    return {item["id"]: item["correct"] for item in jsonl(path)}


# --------------------------------------------------------------------------- real outputs


def test_corpus_records_bare_programs_and_fenced_replies_score_alike(
    server: Server, tmp_path: Path
) -> None:
    records = jsonl(SAMPLE)
    gold = gold_file(tmp_path / "gold.jsonl", records)
    as_records = evaluate(
        records, comparator=CORPUS_RULE, targets=server.address, output=tmp_path / "a.jsonl"
    )
    bare = write_jsonl(
        tmp_path / "bare.jsonl", [generation_record(r, r["program"]) for r in records]
    )
    as_bare = evaluate(
        bare, gold=gold, comparator=CORPUS_RULE, targets=server.address, output=tmp_path / "b.jsonl"
    )
    fenced = write_jsonl(
        tmp_path / "fenced.jsonl",
        [generation_record(r, fenced_reply(r["program"])) for r in records],
    )
    as_fenced = evaluate(
        fenced,
        gold=gold,
        comparator=CORPUS_RULE,
        targets=server.address,
        output=tmp_path / "c.jsonl",
    )
    recorded = sum(r["observed_matches_gold"] is True for r in records)
    assert abs(as_records.overall.correct - recorded) <= 2  # 2 = a near-limit timeout
    assert as_records.overall.items == as_bare.overall.items == as_fenced.overall.items == 302
    first, second, third = (verdicts(tmp_path / f"{n}.jsonl") for n in "abc")
    assert sum(first[k] != second[k] for k in first) <= 2
    assert sum(first[k] != third[k] for k in first) <= 2
    assert as_fenced.programs == 302  # a fence always holds the program
    unparsable = sum(extract_program(r["program"]) is None for r in records)
    assert as_bare.by_status["no_program"] == unparsable > 0
    assert as_records.execution_rate > 85


def test_items_say_why_each_verdict_was_given(server: Server, tmp_path: Path) -> None:
    records = jsonl(SAMPLE)[:60]
    evaluate(records, comparator=CORPUS_RULE, targets=server.address, output=tmp_path / "i.jsonl")
    for item in jsonl(tmp_path / "i.jsonl"):
        assert item["reason"], item
        assert item["status"] in {"ok", "error", "syntax_error", "timeout", "no_answer"}
        if item["status"] == "ok":
            assert item["answer_source"] == "pot" and item["comparator"]
        else:
            assert item["correct"] is False and item["predicted"] is None


def test_hybrid_falls_back_to_the_cot_answer_when_the_program_fails(
    server: Server, tmp_path: Path
) -> None:
    rows = [
        {"id": "fenced-fails", "gold": "18",
         "generation": fenced_reply("ans = eggs * 2") + "\nSo the answer is 18."},
        {"id": "bare-fails", "gold": "18", "generation": "ans = eggs * 2\n"},
        {"id": "second-generation", "gold": "7", "generation": "ans = apples + 3\n",
         "cot": "She had 4 apples and got 3 more, 4 + 3 = 7. The answer is 7."},
        {"id": "cot-only", "gold": "7", "generation": "4 + 3 = 7 apples. The answer is 7."},
        {"id": "program-right", "gold": "5",
         "generation": fenced_reply("ans = 2 + 3") + "\nThe answer is 6."},
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    results = {}
    for mode in ("pot", "hybrid", "cot"):
        report = evaluate(
            source,
            mode=mode,  # type: ignore[arg-type]
            comparator="numeric",
            targets=server.address,
            output=tmp_path / f"{mode}.jsonl",
        )
        results[mode] = verdicts(tmp_path / f"{mode}.jsonl")
        if mode == "hybrid":
            assert report.fallbacks == 3  # bare-fails has no text to fall back to
            assert report.by_source == {"cot": 3, "pot": 1, "none": 1}
        if mode == "cot":
            assert report.programs == 0 and report.executed == 0
    assert results["pot"] == {
        "fenced-fails": False, "bare-fails": False, "second-generation": False,
        "cot-only": False, "program-right": True,
    }  # fmt: skip
    assert results["hybrid"] == {
        "fenced-fails": True, "bare-fails": False, "second-generation": True,
        "cot-only": True, "program-right": True,
    }  # fmt: skip
    assert results["cot"]["program-right"] is False  # the prose says 6
    assert results["cot"]["cot-only"] is True and results["cot"]["fenced-fails"] is True


def test_cot_mode_scores_the_gsm8k_reference_solutions_through_the_loader(
    tmp_path: Path,
) -> None:
    path = require(DATASETS / "gsm8k_test.jsonl")
    rows = jsonl(path)[:200]
    predictions = write_jsonl(
        tmp_path / "p.jsonl", [{"id": str(r["idx"]), "generation": r["answer"]} for r in rows]
    )
    report = evaluate(predictions, gold=path, dataset="gsm8k", mode="cot")
    assert (report.overall.items, report.overall.correct) == (200, 200)
    assert report.gold_without_prediction == 1319 - 200
    by_name = evaluate(predictions, dataset="gsm8k", data_dir=DATASETS, mode="cot")
    assert by_name.overall.correct == 200
    assert by_name.comparators == {"numeric@1"}


# --------------------------------------------------------------------------- MAmmoTH


def test_mammoth_comparator_scores_programs_as_mammoth_did(server: Server, tmp_path: Path) -> None:
    """Hand-checked against MAmmoTH's run_open.py / run_choice.py rules (peers.md §2)."""
    cases = [  # id, dataset, gold, generation, MAmmoTH's verdict
        ("first-number", "gsm8k", "18", 'print("Step 1: 3, total 18")', False),  # takes "1"
        ("float-zero", "gsm8k", "18", "print(18.0)", True),  # delete_extra_zero
        ("in-words", "gsm8k", "18", 'x = 18\nprint(f"The total is {x}")', True),
        ("commas", "gsm8k", "1234", 'print("1,234")', True),
        ("no-tolerance", "gsm8k", "18", "print(17.999999999)", False),
        ("no-print", "gsm8k", "18", "ans = 18", False),  # not a program without print(
        ("fenced", "gsm8k", "18", "```python\nprint(18)\n```", False),  # fences stay: error
        ("raises", "gsm8k", "18", "print(18)\nraise ValueError", False),  # output lost
        ("aqua-empty-is-A", "aqua", "A", "print(undefined)", True),  # '' -> random -> "A"
        ("aqua-empty-not-B", "aqua", "B", "print(undefined)", False),
        ("aqua-letter", "aqua", "C", 'print("The answer is C")', True),
        ("math-string", "math", "\\frac{1}{2}", 'print("\\\\frac{1}{2}")', True),
        ("math-band", "math", "\\frac{1}{2}", "print(0.51)", True),  # within ±4%
        ("math-outside", "math", "\\frac{1}{2}", "print(0.53)", False),
        ("math-int", "math", "10", "print(10.4)", True),  # round() for integer golds
    ]
    rows = [
        {"id": cid, "dataset": ds, "gold": gold, "generation": gen, "options": None}
        for cid, ds, gold, gen, _ in cases
    ]
    for row in rows:
        if row["dataset"] == "aqua":
            row["options"] = ["A)1", "B)2", "C)3", "D)4", "E)5"]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = evaluate(
        source, comparator="mammoth", targets=server.address, output=tmp_path / "pot.jsonl"
    )
    assert verdicts(tmp_path / "pot.jsonl") == {cid: want for cid, *_, want in cases}
    assert report.comparators == {"mammoth@1"}
    items = {item["id"]: item for item in jsonl(tmp_path / "pot.jsonl")}
    assert items["first-number"]["canonical"] == "1"
    assert items["no-print"]["status"] == "no_program"
    assert items["fenced"]["status"] == "syntax_error"

    # Hybrid: every item whose PoT answer was empty falls back to a CoT generation.
    for row in rows:
        row["cot"] = f"Let's think. The answer is {row['gold']}"
    write_jsonl(source, rows)
    evaluate(
        source,
        mode="hybrid",
        comparator="mammoth",
        targets=server.address,
        output=tmp_path / "hybrid.jsonl",
    )
    fell_back = {i["id"] for i in jsonl(tmp_path / "hybrid.jsonl") if i["fallback"]}
    assert fell_back == {"no-print", "fenced", "raises", "aqua-empty-is-A", "aqua-empty-not-B"}
    assert all(verdicts(tmp_path / "hybrid.jsonl")[cid] for cid in fell_back)


# --------------------------------------------------------------------------- MATH and NumGLUE


def test_math500_programs_are_scored_symbolically_through_the_loader(
    server: Server, tmp_path: Path
) -> None:
    path = require(DATASETS / "math500_test.jsonl")
    programs = {  # sympy programs in the style of PoT answers to MATH
        "test/precalculus/807.json": ("from sympy import pi\nans = (3, pi / 2)", True),
        "test/algebra/2584.json": ("from sympy import Rational\nans = Rational(14, 3)", True),
        "test/algebra/2036.json": ("from sympy import sqrt\nans = 3 * sqrt(13)", True),
        "test/precalculus/1199.json": ("import sympy\nans = sympy.pi", True),
        "test/precalculus/990.json": ("from sympy import I\nans = 6 - 5 * I", True),
        "test/prealgebra/1622.json": ("ans = 6 * 7", True),
        "test/intermediate_algebra/1197.json": ("ans = 3 / 57", False),
    }
    rows = [{"id": uid, "generation": code} for uid, (code, _) in programs.items()]
    report = evaluate(
        write_jsonl(tmp_path / "p.jsonl", rows),
        gold=path,
        dataset="math500",
        targets=server.address,
        output=tmp_path / "items.jsonl",
    )
    assert verdicts(tmp_path / "items.jsonl") == {uid: ok for uid, (_, ok) in programs.items()}
    assert report.comparators == {"symbolic-numeric@1"}


def test_numglue_golds_load_from_its_public_format(server: Server, tmp_path: Path) -> None:
    numglue = tmp_path / "numglue.json"
    numglue.write_text(
        json.dumps(
            [
                {"type": "Type_1", "question": "A pack has 12 pens; 3 packs?", "answer": "36"},
                {"type": "Type_1", "question": "Half of 9?", "answer": "4.5"},
                {"type": "Type_2", "question": "Tom has 5 apples, eats 2.", "answer": "3"},
            ]
        )
    )
    rows = [
        {"id": "0", "generation": "ans = 12 * 3"},
        {"id": "1", "generation": "print(9 / 2)"},
        {"id": "2", "generation": "ans = 5 + 2"},
    ]
    report = evaluate(
        write_jsonl(tmp_path / "p.jsonl", rows),
        gold=numglue,
        dataset="numglue",
        targets=server.address,
    )
    assert (report.overall.items, report.overall.correct) == (3, 2)
    assert report.by_dataset["numglue"].correct == 2


# --------------------------------------------------------------------------- CLI


def test_cli_eval_writes_the_items_and_the_report(server: Server, tmp_path: Path) -> None:
    records = jsonl(SAMPLE)[:30]
    gold = gold_file(tmp_path / "gold.jsonl", records)
    predictions = write_jsonl(
        tmp_path / "p.jsonl",
        [generation_record(r, fenced_reply(r["program"])) for r in records],
    )
    code = cli(
        "eval", predictions, "--gold", gold, "--mode", "hybrid", "--comparator", "numeric",
        "--comparator", "aqua=choice", "--json", tmp_path / "r.json", "-o",
        tmp_path / "items.jsonl", "--target", server.address, "--no-progress",
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["items"] == 30 and report["mode"] == "hybrid"
    assert set(report["by_dataset"]) == {r["dataset"] for r in records}
    assert 0 <= report["pot"]["execution_rate"] <= 100
    assert len(jsonl(tmp_path / "items.jsonl")) == 30
    assert cli("eval", predictions, "--dataset", "no-such-set", "--gold", gold) == 2
    fields = EvalFields.parse(["generation=completion", "id=idx"])
    assert (fields.generation, fields.id) == ("completion", "idx")


# --------------------------------------------------------------------------- the corpus


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_corpus_gsm8k_stdout_programs_score_what_observed_matches_gold_implies(
    server: Server, tmp_path: Path
) -> None:
    records = [
        r for r in jsonl(require(CORPUS)) if r["dataset"] == "gsm8k" and r["convention"] == "stdout"
    ]
    report = evaluate(
        write_jsonl(tmp_path / "in.jsonl", records),
        targets=server.address,
        report=tmp_path / "r.json",
    )
    implied = 100.0 * sum(r["observed_matches_gold"] is True for r in records) / len(records)
    print(f"gsm8k stdout programs: measured {report.accuracy:.2f}%, implied {implied:.2f}%")
    assert len(records) == 1688
    assert abs(report.accuracy - implied) <= 0.2
