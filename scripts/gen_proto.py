#!/usr/bin/env python3
"""Regenerate the committed gRPC stubs from proto/potsandbox/v1/sandbox.proto.

The one way the stubs are made, so that a fresh checkout and CI produce the same
bytes. Run from any directory with the dev environment's python:

    python scripts/gen_proto.py          # rewrite the stubs next to the .proto
    python scripts/gen_proto.py --check  # exit 1 if the committed stubs are stale

Needs grpcio-tools (protoc and the gRPC plugin) and mypy-protobuf (the .pyi
plugins), both in the `dev` extra. The protobuf/grpcio versions the stubs are
generated with become the runtime floors of the package (see
tests/test_proto.py), so regenerate with the pinned tools only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = Path("proto")
"""Include root, relative to ROOT: imports come out as `from potsandbox.v1 import ...`."""
PROTO = Path("potsandbox/v1/sandbox.proto")
"""The contract, relative to INCLUDE."""
GENERATED = ("sandbox_pb2.py", "sandbox_pb2_grpc.py", "sandbox_pb2.pyi", "sandbox_pb2_grpc.pyi")
"""Files protoc writes next to the .proto; nothing else there is generated."""


def find_plugin(name: str) -> Path:
    """Locate a protoc plugin next to this interpreter first, so an unactivated venv works.

    Raises:
        SystemExit: the plugin is not installed.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install mypy-protobuf (pip install -e '.[dev]')")
    return Path(found)


def generate(out_root: Path) -> None:
    """Run protoc once, writing every stub under `out_root`/potsandbox/v1/.

    Raises:
        SystemExit: protoc failed (its own message is copied to stderr).
    """
    out = str(out_root)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{INCLUDE}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={find_plugin('protoc-gen-mypy')}",
        f"--mypy_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={find_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_grpc_out={out}",
        str(PROTO),
    ]
    # Captured because mypy-protobuf chatters ("Writing mypy to ...") on success.
    done = subprocess.run(command, cwd=ROOT, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"protoc failed with exit status {done.returncode}: {' '.join(command)}")


def stale_files(fresh_dir: Path, committed_dir: Path) -> list[str]:
    """Names of generated files that are missing or differ from a fresh generation."""
    stale = []
    for name in GENERATED:
        fresh, committed = fresh_dir / name, committed_dir / name
        if not committed.exists() or fresh.read_bytes() != committed.read_bytes():
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Regenerate the stubs in place, or with --check only compare them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate into a temporary directory and exit 1 if the committed stubs differ",
    )
    args = parser.parse_args(argv)
    committed_dir = ROOT / INCLUDE / PROTO.parent
    if not args.check:
        generate(ROOT / INCLUDE)
        print(f"wrote {', '.join(GENERATED)} to {committed_dir.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="gen_proto.") as tmp:
        generate(Path(tmp))
        stale = stale_files(Path(tmp) / PROTO.parent, committed_dir)
    if stale:
        print(
            f"stale generated stubs in {committed_dir.relative_to(ROOT)}: {', '.join(stale)}; "
            "run python scripts/gen_proto.py",
            file=sys.stderr,
        )
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
