"""Programs run under potsandbox exactly as under plain CPython (shared/corpus `observed`)."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

from potsandbox.executor import AsyncExecutor, PoolConfig, Result

from corpus import (
    REFERENCE_LIMITS,
    SAMPLE,
    convention_of,
    difference,
    known_differences,
    records,
    require_corpus,
)

REFERENCE_PARALLELISM = 2
"""The reference ran two programs at a time; more would stretch wall clocks."""


async def _run_all(rows: list[dict[str, Any]]) -> list[Result]:
    config = PoolConfig(max_in_flight=REFERENCE_PARALLELISM)
    async with AsyncExecutor(config) as executor:
        return await asyncio.gather(
            *(
                executor.run(
                    row["program"],
                    prelude=row["prelude"],
                    convention=convention_of(row),
                    limits=REFERENCE_LIMITS,
                    task_id=row["id"],
                )
                for row in rows
            )
        )


def _check(path: Path) -> None:
    rows = list(records(path))
    results = asyncio.run(_run_all(rows))
    known = known_differences()
    unexplained = {}
    explained = collections.Counter()
    for row, result in zip(rows, results, strict=True):
        assert result.task_id == row["id"]
        diff = difference(row, result)
        if diff is None:
            continue
        if row["id"] in known:
            explained[known[row["id"]]] += 1
        else:
            unexplained[row["id"]] = diff
    print(
        f"\n{len(rows)} programs, {sum(explained.values())} listed differences: {dict(explained)}"
    )
    assert not unexplained, f"{len(unexplained)} unexplained differences: {unexplained}"


def test_shipped_sample_matches_plain_cpython() -> None:
    _check(SAMPLE)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_public_corpus_matches_plain_cpython() -> None:
    _check(require_corpus())
