"""An asyncio eval loop: model replies in, program answers scored against the gold, out.

The replies here are the sample's real programs wrapped the way a chat model answers (prose and
a fenced ```python block). Each reply's program is extracted, run with `AsyncSandboxClient.run`
(many at once, bounded by a semaphore, as an async generation service would), and the answers
are judged in an `AnswerJudge` off the event loop. `potsandbox eval` is the file-based version.

    python examples/async_eval_loop.py [IN.jsonl] [--target HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
from pathlib import Path
from typing import Any

from potsandbox.client.answers import AnswerJudge, Comparison
from potsandbox.client.client import AsyncSandboxClient
from potsandbox.client.generations import extract_program
from potsandbox.executor.result import Result

SAMPLE = Path(__file__).resolve().parent / "data" / "pot_sample.jsonl"
IN_FLIGHT = 32


def as_reply(record: dict[str, Any]) -> str:
    """A chat-style reply around the record's program (what a model would send back)."""
    return (
        "Let's solve this with a short program.\n\n"
        f"```python\n{record['program'].rstrip()}\n```\n\n"
        "Running it gives the answer."
    )


async def run_replies(
    sandbox: AsyncSandboxClient, records: list[dict[str, Any]]
) -> list[Result | None]:
    """Run every reply's program concurrently; None where a reply holds no program."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(record: dict[str, Any]) -> Result | None:
        program = extract_program(as_reply(record))
        if program is None:
            return None
        async with gate:
            return await sandbox.run(
                program,
                prelude=record["prelude"],
                convention=record["convention"],
                name=record["entrypoint"],
            )

    return await asyncio.gather(*(one(record) for record in records))


async def main_async(path: str, target: str | None) -> int:
    with Path(path).open() as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    async with AsyncSandboxClient(target) as sandbox:
        results = await run_replies(sandbox, records)
    comparisons = [
        Comparison(
            _answer(result),
            record["gold"],
            "choice" if record["dataset"] == "aqua" else "numeric",
            record["dataset"],
            record["options"],
        )
        for record, result in zip(records, results, strict=True)
    ]
    with AnswerJudge() as judge:  # sympy-backed comparisons get a hard deadline
        verdicts = await asyncio.to_thread(judge.compare_many, comparisons)

    correct: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for record, verdict in zip(records, verdicts, strict=True):
        total[record["dataset"]] += 1
        correct[record["dataset"]] += verdict.correct
    print(f"{'dataset':<12}{'items':>7}{'accuracy':>10}")
    for name in sorted(total):
        print(f"{name:<12}{total[name]:>7}{100 * correct[name] / total[name]:>9.1f}%")
    overall = sum(correct.values())
    recorded = sum(bool(record["observed_matches_gold"]) for record in records)
    print(f"{'all':<12}{len(records):>7}{100 * overall / len(records):>9.1f}%")
    print(f"(plain Python, as recorded in the corpus: {100 * recorded / len(records):.1f}%)")
    return 0 if abs(overall - recorded) <= 0.02 * len(records) else 1


def _answer(result: Result | None) -> str | None:
    if result is None or not result.ok:
        return None
    return result.stdout.strip() if result.convention == "stdout" else result.answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", default=str(SAMPLE))
    parser.add_argument("--target", help="host:port of a running server (default: embedded)")
    args = parser.parse_args()
    return asyncio.run(main_async(args.input, args.target))


if __name__ == "__main__":  # the judge's workers re-import this script
    sys.exit(main())
