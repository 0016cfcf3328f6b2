"""`pip install potsandbox[server]` into a fresh venv, then `SandboxClient()` just works."""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "executor", "client", "proto")
"""What the wheel is built from; copied so the build leaves nothing in the checkout."""

IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*")

PROGRAM = """
from potsandbox.client import SandboxClient
print(SandboxClient().run('print(1+1)').answer)
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_embedded_client_works_from_a_fresh_venv(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=IGNORED)
        else:
            shutil.copy2(ROOT / name, source / name)
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", f"{source}[server]"]
    subprocess.run(install, check=True, timeout=1500)

    scratch = tmp_path / "scratch"  # the embedded server's files go here
    scratch.mkdir()
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(scratch), "HOME": str(tmp_path)}
    done = subprocess.run(
        [str(python), "-c", PROGRAM],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,  # not the checkout: the installed package must be used
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert list(scratch.iterdir()) == [], "the embedded server was not cleaned up at exit"
