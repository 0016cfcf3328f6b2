"""The shared PoT corpus: where it lives, and how a Result is compared with plain CPython."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from potsandbox.executor import Convention, Limits, Result, Status

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus" / "pot_public.jsonl"
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "pot_sample.jsonl"
KNOWN_DIFFERENCES = Path(__file__).resolve().parent / "data" / "fidelity_differences.json"

REFERENCE_LIMITS = Limits(timeout_s=5.0, cpu_s=10.0, memory_mb=4096)
"""The reference run's limits (corpus README): 5 s wall clock, 4 GiB."""

_STATUS_OF_OBSERVED = {
    "ok": "ok",
    "error": "error",
    "no_answer": "no_answer",
    "timeout": "timeout",
    "crash": "crashed",
}


def require_corpus() -> Path:
    """The full corpus, or skip: a user's clone has no ../shared beside it."""
    if not CORPUS.exists():
        pytest.skip(
            f"full corpus not found at {CORPUS} (../shared is only beside CI and dev clones)"
        )
    return CORPUS


def records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def convention_of(record: dict[str, Any]) -> Convention:
    return Convention.parse(record["convention"], record.get("entrypoint"))


NEAR_LIMIT = 0.4
"""A run that took 40% of the wall-clock limit may land on either side of it on a busy machine."""

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def difference(record: dict[str, Any], result: Result) -> str | None:
    """How our Result differs from the recorded plain-CPython run, or None."""
    ours = _comparable_status(result)
    theirs = _STATUS_OF_OBSERVED.get(record["observed_status"], record["observed_status"])
    if ours != theirs:
        if _near_limit(record, result):
            return None
        return f"status {ours} != {theirs}"
    if theirs != "ok":
        return None
    answer = result.stdout.strip() if record["convention"] == "stdout" else result.answer
    if _ADDRESS.sub(" at 0x", answer or "") != _ADDRESS.sub(" at 0x", record["observed"]):
        return f"answer {answer!r:.80} != {record['observed']!r:.80}"
    return None


def _near_limit(record: dict[str, Any], result: Result) -> bool:
    """Timeout on one side only, for a program that ran close to the limit on the other."""
    limit = REFERENCE_LIMITS.timeout_s
    if result.status is Status.TIMEOUT:
        return bool(record["observed_time_s"] >= NEAR_LIMIT * limit)
    if record["observed_status"] == "timeout":
        return result.wall_time_s >= NEAR_LIMIT * limit
    return False


def _comparable_status(result: Result) -> str:
    """The corpus folds syntax errors and MemoryError into `error`."""
    if result.status in (Status.SYNTAX_ERROR, Status.MEMORY_LIMIT):
        return "error"
    return result.status.value


def known_differences() -> dict[str, str]:
    """Checked-in list of corpus ids whose difference is understood, with the reason."""
    if not KNOWN_DIFFERENCES.exists():
        return {}
    return dict(json.loads(KNOWN_DIFFERENCES.read_text()))


def run_as_script(program: str, directory: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Plain `python3 -I` running `program` as a script file in `directory`: what the
    sandbox must match. Its stderr names the file as the sandbox names the program."""
    script = directory / "program.py"
    script.write_text(program)
    done = subprocess.run(
        [sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=60, **kwargs
    )
    done.stderr = done.stderr.replace(str(script), "<program>")
    return done
