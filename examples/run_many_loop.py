"""A plain-Python loop: run a list of PoT records with `run_many`, then score the answers.

`run_many` takes the corpus records as they are (program, prelude, convention, entrypoint) and
returns one Result per record, in input order, with a progress bar. The answers are judged in an
`AnswerJudge` and the script prints statuses and accuracy.

    python examples/run_many_loop.py [IN.jsonl] [--target HOST:PORT]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from potsandbox.client.answers import AnswerJudge, Comparison
from potsandbox.client.client import SandboxClient

SAMPLE = Path(__file__).resolve().parent / "data" / "pot_sample.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", default=str(SAMPLE))
    parser.add_argument("--target", help="host:port of a running server (default: embedded)")
    args = parser.parse_args()

    with Path(args.input).open() as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    with SandboxClient(args.target) as sandbox:
        results = sandbox.run_many(records, progress=True)

    comparisons = []
    for record, result in zip(records, results, strict=True):
        answer = None
        if result.ok:  # stdout programs are judged on what they printed
            answer = result.stdout.strip() if result.convention == "stdout" else result.answer
        comparator = "choice" if record["dataset"] == "aqua" else "numeric"
        comparisons.append(
            Comparison(answer, record["gold"], comparator, record["dataset"], record["options"])
        )
    with AnswerJudge() as judge:
        verdicts = judge.compare_many(comparisons)

    statuses = collections.Counter(result.status.value for result in results)
    correct = sum(verdict.correct for verdict in verdicts)
    agree = sum(
        verdict.correct == bool(record["observed_matches_gold"])
        for record, verdict in zip(records, verdicts, strict=True)
    )
    print("statuses: " + ", ".join(f"{name} {count}" for name, count in statuses.most_common()))
    print(f"correct: {correct}/{len(records)} ({100 * correct / len(records):.1f}%)")
    print(f"same verdict as the corpus's plain-Python run: {agree}/{len(records)}")
    return 0 if agree >= 0.98 * len(records) else 1


if __name__ == "__main__":  # the judge's workers re-import this script
    sys.exit(main())
