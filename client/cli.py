"""`potsandbox`: serve, run one program, run a JSONL batch, describe a server.

    potsandbox serve --port 50051 --token-file token
    potsandbox run solution.py --convention stdout
    potsandbox batch corpus.jsonl -o results.jsonl --concurrency 64
    potsandbox info --target sandbox:50051

Without --target, run and batch start an embedded local server for the command's
lifetime. A subcommand is one `add_*_command(subparsers)` function in SUBCOMMANDS,
which adds its parser and sets `func`, the function that runs it and returns the
exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeAlias

from tqdm.auto import tqdm

from potsandbox.client.client import SandboxClient, TLSConfig
from potsandbox.client.errors import SandboxError
from potsandbox.client.jobs_cli import add_eval_command, add_filter_command
from potsandbox.executor.result import Result, Status

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_connection(parser: argparse.ArgumentParser) -> None:
    """Where the server is and how to authenticate; no --target starts an embedded server."""
    group = parser.add_argument_group("connection")
    group.add_argument("--target", help="host:port, several comma-separated, or dns:///name:port")
    group.add_argument("--token-file", type=Path, help="file holding the bearer token")
    group.add_argument("--tls-ca", type=Path, help="CA certificate of the server (PEM)")
    group.add_argument("--tls-cert", type=Path, help="client certificate for mTLS (PEM)")
    group.add_argument("--tls-key", type=Path, help="client private key for mTLS (PEM)")
    group.add_argument("--tls-server-name", help="name to verify in the server certificate")


def _add_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, help="wall-clock limit per program, seconds")
    parser.add_argument("--memory-mb", type=int, help="memory budget per program, MiB")


def _client(args: argparse.Namespace) -> SandboxClient:
    """A client from the connection flags."""
    token = args.token_file.read_text().strip() if args.token_file else None
    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name:
        tls = TLSConfig(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    return SandboxClient(args.target, token=token, tls=tls)


def add_serve_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    """`serve`: the flags of potsandbox.executor.config, handed to the server unchanged."""
    from potsandbox.executor.config import build_parser

    parser = subparsers.add_parser("serve", help="run the sandbox gRPC service")
    build_parser(parser)
    parser.set_defaults(func=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    """Hand the flags to the server unchanged (it needs the `server` extra)."""
    try:
        from potsandbox.executor import server
    except ImportError as exc:
        print(
            f"potsandbox serve needs the server extra ({exc}): pip install 'potsandbox[server]'",
            file=sys.stderr,
        )
        return 1
    return server.main(args.serve_argv)


def add_run_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    """`run FILE|-`: one program; prints its answer."""
    parser = subparsers.add_parser("run", help="run one program and print its answer")
    parser.add_argument("file", help="program file, or - for standard input")
    parser.add_argument("--convention", default="auto", help="stdout, ans, solution, auto, ...")
    parser.add_argument("--name", help="function or variable the convention reads")
    parser.add_argument("--prelude", type=Path, help="file run first in the same namespace")
    parser.add_argument("--json", action="store_true", help="print the whole Result as JSON")
    _add_limits(parser)
    _add_connection(parser)
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    """Print the answer (or the Result as JSON); exit 0 only when the status is ok."""
    program = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    prelude = args.prelude.read_text() if args.prelude else None
    with _client(args) as client:
        result = client.run(
            program,
            prelude=prelude,
            convention=args.convention,
            name=args.name,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
        )
    if args.json:
        print(json.dumps(result.to_dict()))
    elif result.ok:
        print(result.answer)
    else:
        print(
            f"{result.status.value}: {result.error_type}: {result.error_message}", file=sys.stderr
        )
    return 0 if result.ok else 1


def add_batch_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    """`batch IN.jsonl`: records in, one Result line per record out, in input order."""
    parser = subparsers.add_parser("batch", help="run a JSONL file of records, in input order")
    parser.add_argument("input", help="JSONL of records with `program` (corpus fields), or -")
    parser.add_argument("-o", "--output", type=Path, help="JSONL of results (default stdout)")
    parser.add_argument("--concurrency", type=int, help="programs in flight at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_limits(parser)
    _add_connection(parser)
    parser.set_defaults(func=_batch)
    return parser


def _batch(args: argparse.Namespace) -> int:
    """One output line per input line, in input order; a bad line is reported and skipped."""
    invalid: dict[int, Result] = {}
    total = None if args.input == "-" else _count_lines(Path(args.input))
    with (
        _open_input(args.input) as lines,
        _open_output(args.output) as out,
        _client(args) as client,
        tqdm(total=total, unit="program", disable=args.no_progress, file=sys.stderr) as bar,
    ):
        results = client.iter_results(
            _records(lines, args.input, invalid),
            ordered=True,
            concurrency=args.concurrency,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
        )
        for position, result in enumerate(results):
            result = invalid.pop(position, result)
            out.write(json.dumps({"id": result.task_id or None, **result.to_dict()}) + "\n")
            bar.update(1)
    return 0


def _records(lines: IO[str], source: str, invalid: dict[int, Result]) -> Iterator[dict[str, Any]]:
    """Records, read lazily; a malformed line yields a stand-in and its InvalidRecord Result."""
    position = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record, problem = _parse_record(line)
        if problem is not None:
            print(f"potsandbox batch: {source}:{number}: {problem}", file=sys.stderr)
            record_id = str(record["id"]) if record.get("id") is not None else ""
            invalid[position] = Result(
                status=Status.ERROR,
                error_type="InvalidRecord",
                error_message=f"line {number}: {problem}",
                task_id=record_id,
            )
            record = {"id": record_id, "program": ""}  # refused locally, never sent
        position += 1
        yield record


def _parse_record(line: str) -> tuple[dict[str, Any], str | None]:
    """The record of one JSONL line, and what is wrong with it (None when it can run)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON ({exc})"
    if not isinstance(record, dict):
        return {}, "not a JSON object"
    if not isinstance(record.get("program"), str):
        return record, "no `program` string"
    return record, None


def _count_lines(path: Path) -> int | None:
    """Non-blank lines, for the progress bar's total (read once, never held)."""
    try:
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[IO[str]]:
    if name == "-":
        yield sys.stdin
        return
    with open(name, encoding="utf-8") as f:
        yield f


@contextlib.contextmanager
def _open_output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8") as f:
        yield f


def add_info_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    """`info`: the server's GetInfo."""
    parser = subparsers.add_parser("info", help="print the server's GetInfo as JSON")
    _add_connection(parser)
    parser.set_defaults(func=_info)
    return parser


def _info(args: argparse.Namespace) -> int:
    """GetInfo as JSON (the proto3 JSON mapping, as grpcurl prints it)."""
    from google.protobuf.json_format import MessageToDict

    with _client(args) as client:
        info = client.info()
    print(json.dumps(MessageToDict(info, preserving_proto_field_name=True), indent=2))
    return 0


SUBCOMMANDS: list[Callable[[Subparsers], argparse.ArgumentParser]] = [
    add_serve_command,
    add_run_command,
    add_batch_command,
    add_info_command,
    add_filter_command,
    add_eval_command,
]
"""Each adds one subparser setting `func` (args -> exit code)."""


def build_parser() -> argparse.ArgumentParser:
    """The `potsandbox` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="potsandbox", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in SUBCOMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `potsandbox` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        args.serve_argv = argv[argv.index("serve") + 1 :]
    try:
        code: int = args.func(args)
    except (SandboxError, OSError, ValueError) as exc:  # ours, a file, or a bad flag value
        print(f"potsandbox {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
