"""The integration examples run as users run them: a script on the sample, an embedded server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RUN_TIMEOUT_S = 600


def run_example(name: str, tmp_path: Path) -> str:
    """Run an example script in a scratch directory; returns its stdout (fails on exit != 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTSANDBOX_")}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf-cache")  # keep the map cache out of $HOME
    env["HF_HUB_OFFLINE"] = "1"
    process = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert process.returncode == 0, f"{name} failed:\n{process.stdout}\n{process.stderr[-3000:]}"
    return process.stdout


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_run_many_loop_scores_the_sample_like_plain_python(tmp_path: Path) -> None:
    out = run_example("run_many_loop.py", tmp_path)
    assert "statuses: ok" in out
    assert "same verdict as the corpus's plain-Python run" in out


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_async_eval_loop_reports_accuracy_per_dataset(tmp_path: Path) -> None:
    out = run_example("async_eval_loop.py", tmp_path)
    for dataset in ("gsm8k", "svamp", "aqua", "theoremqa"):
        assert dataset in out
    assert "plain Python, as recorded in the corpus" in out


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_datasets_map_filter_keeps_the_right_rationales(tmp_path: Path) -> None:
    if importlib.util.find_spec("datasets") is None:
        pytest.skip("Hugging Face `datasets` is not installed (pip install datasets)")
    out = run_example("filter_with_datasets_map.py", tmp_path)
    assert "kept" in out and "agrees with the recorded plain-Python verdict" in out
