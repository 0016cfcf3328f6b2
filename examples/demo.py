"""The main job on the embedded default: 302 real PoT programs through the service.

Starts a local potsandbox server (no target given), streams the shipped sample of
model-written programs through it, and prints a status table, agreement with plain
CPython (the records' `observed` field) and the rate.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

from potsandbox.client import Result, SandboxClient

SAMPLE = Path(__file__).resolve().parent / "data" / "pot_sample.jsonl"


def main() -> int:
    """Run the sample and print what happened."""
    records = [json.loads(line) for line in SAMPLE.open() if line.strip()]
    started = time.perf_counter()
    with SandboxClient() as client:
        info = client.info()  # the embedded server starts on first use
        ready = time.perf_counter()
        results = client.run_many(records, progress=True)
        finished = time.perf_counter()
    statuses = collections.Counter(r.status.value for r in results)
    agree = sum(_agrees(rec, res) for rec, res in zip(records, results, strict=True))
    print(f"\npotsandbox {info.version}: isolation {', '.join(info.isolation)}")
    print(f"{'status':<14}{'programs':>9}")
    for status, count in statuses.most_common():
        print(f"{status:<14}{count:>9}")
    print(f"{'total':<14}{len(results):>9}")
    print(f"same status and answer as plain CPython: {agree}/{len(records)}")
    print(
        f"server start {ready - started:.1f} s; {len(results)} programs in "
        f"{finished - ready:.1f} s ({len(results) / (finished - ready):.0f}/s; the time includes "
        "the programs that run into the 5 s limit)"
    )
    return 0 if agree >= len(records) - 15 else 1


def _agrees(record: dict[str, Any], result: Result) -> bool:
    """Same status and answer as the record's plain-CPython run (syntax errors count as errors)."""
    status = {"crash": "crashed"}.get(record["observed_status"], record["observed_status"])
    ours = result.status.value
    ours = "error" if ours in ("syntax_error", "memory_limit") else ours
    if ours != status:
        return False
    if status != "ok":
        return True
    answer = result.stdout.strip() if record["convention"] == "stdout" else result.answer
    return bool(answer == record["observed"])


if __name__ == "__main__":
    sys.exit(main())
