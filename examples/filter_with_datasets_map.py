"""Filter PoT rationales inside a Hugging Face `datasets.map` (batched).

Each batch of records goes through the sandbox with `run_many` (one streaming call, input order)
and the answers are judged in an `AnswerJudge`; `Dataset.filter` then keeps the rationales whose
program gives the gold answer. For whole files with resume and dedup, `potsandbox filter` does
the same job.

    python examples/filter_with_datasets_map.py [IN.jsonl] [--target HOST:PORT]

Needs `pip install datasets`. Without --target a local sandbox server is started.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-not-found, import-untyped, unused-ignore]

from potsandbox.client.answers import AnswerJudge, Comparison
from potsandbox.client.client import SandboxClient
from potsandbox.client.filter import answer_text
from potsandbox.client.pot_scoring import get_comparator

SAMPLE = Path(__file__).resolve().parent / "data" / "pot_sample.jsonl"


def comparator_name(dataset: str) -> str:
    """The corpus's own rule: the option's value for AQuA, numbers (or exact text) otherwise."""
    return "choice" if dataset == "aqua" else "numeric"


def make_checker(sandbox: SandboxClient, judge: AnswerJudge) -> Any:
    """The batched map function: adds `keep`, `reason` and `pot_answer` columns."""

    def check(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        records = [dict(zip(batch, row, strict=True)) for row in zip(*batch.values(), strict=True)]
        results = sandbox.run_many(records)  # programs, preludes, conventions, entrypoints
        keep, reason, answers = [False] * len(records), [""] * len(records), [None] * len(records)
        to_judge, positions = [], []
        for index, (record, result) in enumerate(zip(records, results, strict=True)):
            if not result.ok:
                reason[index] = result.status.value
                continue
            comparator = get_comparator(comparator_name(record["dataset"]))
            answers[index] = answer_text(result, comparator)
            to_judge.append(
                Comparison(
                    answers[index],
                    record["gold"],
                    comparator,
                    record["dataset"],
                    record["options"],
                )
            )
            positions.append(index)
        for index, verdict in zip(positions, judge.compare_many(to_judge), strict=True):
            keep[index] = verdict.correct
            reason[index] = "kept" if verdict.correct else "wrong_answer"
        return {"keep": keep, "reason": reason, "pot_answer": answers}

    return check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", default=str(SAMPLE))
    parser.add_argument("--target", help="host:port of a running server (default: embedded)")
    args = parser.parse_args()

    ds = datasets.load_dataset("json", data_files=args.input, split="train")
    with SandboxClient(args.target) as sandbox, AnswerJudge() as judge:
        ds = ds.map(
            make_checker(sandbox, judge),
            batched=True,
            batch_size=64,
            new_fingerprint="potsandbox-pot-filter-1",  # the sandbox is not hashable state
            desc="sandbox",
        )
    kept = ds.filter(lambda keep: keep, input_columns="keep")
    flags = [bool(flag) for flag in ds["observed_matches_gold"]]
    recorded = sum(flags)
    agree = sum(keep == flag for keep, flag in zip(ds["keep"], flags, strict=True))
    print(f"kept {len(kept)} of {len(ds)} rationales (the corpus recorded {recorded} correct)")
    print(f"keep/reject agrees with the recorded plain-Python verdict for {agree}/{len(ds)}")
    return 0 if agree >= 0.98 * len(ds) else 1


if __name__ == "__main__":  # the judge's workers re-import this script
    sys.exit(main())
