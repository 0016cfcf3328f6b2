"""The `potsandbox filter` and `potsandbox eval` subcommands (wired into cli.py's parser).

    potsandbox filter IN.jsonl --kept K.jsonl --rejected R.jsonl [--resume] [--timeout S]
                      [--target HOST:PORT ...] [--comparator NAME] [--comparator aqua=choice]
    potsandbox eval PRED.jsonl [--dataset NAME | --gold GOLD.jsonl] [--mode pot|hybrid|cot]
                    [--comparator NAME] [--json REPORT.json] [-o ITEMS.jsonl] [--target ...]

Exit status: 0 done, 1 the sandbox failed (a filter run can be continued with --resume),
2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from potsandbox.client.answers import UnknownComparator
from potsandbox.client.datasets import DatasetError, dataset_names
from potsandbox.client.pot_scoring import comparator_names

TOKEN_ENV = "POTSANDBOX_TOKEN"
"""Bearer token for --target servers when --token-file is not given."""

_COMPARATOR_HELP = (
    "answer comparator: one of {names}; repeat as DATASET=NAME for per-dataset overrides "
    "(e.g. --comparator numeric --comparator aqua=choice); default auto = each dataset's own"
)


def add_filter_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add `filter` to an argparse subparsers object; sets `func`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "filter",
        help="run each record's program; keep the records whose answer equals the gold",
        description="Run every rationale's program in the sandbox and split the records into "
        "kept (answer equals the gold) and rejected (with the reason). Streams its input, "
        "writes whole flushed lines, runs identical programs once; --resume continues a "
        "killed run.",
    )
    parser.add_argument("input", help="JSONL records (shared-corpus fields by default); - = stdin")
    parser.add_argument("--kept", required=True, type=Path, help="JSONL of kept records")
    parser.add_argument("--rejected", required=True, type=Path, help="JSONL of rejected records")
    parser.add_argument(
        "--report", type=Path, help="JSON report (default: next to --kept, .report.json)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue existing outputs: drop a torn last line, skip ids already written",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="start again, truncating existing outputs"
    )
    _add_common(parser)
    parser.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=FIELD",
        help="input field names (id, program, prelude, convention, entrypoint, gold, options, "
        "dataset), e.g. --field program=code",
    )
    parser.set_defaults(func=run_filter)
    return parser


def add_eval_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add `eval` to an argparse subparsers object; sets `func`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "eval",
        help="score a model's outputs (PoT programs, CoT text, or both) against gold answers",
        description="Evaluate model outputs: pot runs the program in each generation, cot "
        "reads the stated answer, hybrid falls back from a failed program to the CoT answer "
        "(MAmmoTH's rule). Prints accuracy per dataset, statuses and the PoT execution rate.",
    )
    parser.add_argument("predictions", help="JSONL: id + generation (+ cot), or corpus records")
    gold = parser.add_argument_group("gold answers (default: the records' own `gold` field)")
    gold.add_argument(
        "--dataset",
        help=f"dataset name ({', '.join(n for n in dataset_names() if n != 'generic')}, or any "
        "label): picks the auto comparator and the --gold file's format; alone, reads "
        f"<name>_test.jsonl from --data-dir or ${'{'}POTSANDBOX_DATASETS{'}'}",
    )
    gold.add_argument("--gold", type=Path, help="gold file (generic JSONL: id, gold, options)")
    gold.add_argument("--data-dir", type=Path, help="folder of <name>_test.jsonl gold files")
    parser.add_argument("--mode", choices=("pot", "hybrid", "cot"), default="pot")
    parser.add_argument("--json", type=Path, dest="report", help="write the JSON report here")
    parser.add_argument("-o", "--output", type=Path, help="per-item JSONL: verdict and why")
    parser.add_argument(
        "--program-style",
        choices=("last", "all", "mammoth"),
        help="which code of a generation runs (default: mammoth for --comparator mammoth, "
        "else the last ```python block or the bare program)",
    )
    parser.add_argument(
        "--convention",
        help="answer convention of extracted programs (default: stdout for mammoth, else "
        "auto); a record's own `convention` wins",
    )
    _add_common(parser)
    parser.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=FIELD",
        help="input field names (id, generation, cot, program, prelude, convention, "
        "entrypoint, gold, options, dataset), e.g. --field generation=completion",
    )
    parser.set_defaults(func=run_eval)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--comparator",
        action="append",
        metavar="NAME",
        help=_COMPARATOR_HELP.format(names=", ".join(comparator_names())),
    )
    parser.add_argument(
        "--target",
        action="append",
        metavar="HOST:PORT",
        help="sandbox server; repeat to spread the load (default: start an embedded server)",
    )
    parser.add_argument("--token-file", type=Path, help=f"bearer token file (else ${TOKEN_ENV})")
    parser.add_argument("--timeout", type=float, help="wall-clock seconds per program")
    parser.add_argument("--memory-mb", type=int, help="memory budget per program")
    parser.add_argument(
        "--concurrency", type=int, help="programs in flight per target (default: 2 x its slots)"
    )
    parser.add_argument("--chunk-size", type=int, default=256, help="records per written chunk")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_filter(args: argparse.Namespace) -> int:
    """`potsandbox filter`: the summary table on stdout, the JSON report beside --kept."""
    from potsandbox.client.filter import Fields, filter_rationales

    report = args.report or args.kept.with_name(args.kept.stem + ".report.json")
    try:
        fields = Fields.parse(args.field)
        summary = filter_rationales(
            args.input,
            args.kept,
            args.rejected,
            comparator=args.comparator or "auto",
            targets=args.target,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
            fields=fields,
            resume=args.resume,
            overwrite=args.overwrite,
            report=report,
            chunk_size=args.chunk_size,
            concurrency=args.concurrency,
            progress=not args.no_progress,
            client_options=_client_options(args),
        )
    except (ValueError, UnknownComparator, FileExistsError, FileNotFoundError) as error:
        return _usage_error(error)
    except Exception as error:
        return _job_error(error, resumable=True)
    print(summary.table())
    print(f"\nreport: {report}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """`potsandbox eval`: the summary table on stdout."""
    from potsandbox.client.evaluate import EvalFields, evaluate

    try:
        fields = EvalFields.parse(args.field)
        summary = evaluate(
            args.predictions,
            gold=args.gold,
            dataset=args.dataset,
            data_dir=args.data_dir,
            mode=args.mode,
            comparator=args.comparator or "auto",
            output=args.output,
            report=args.report,
            targets=args.target,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
            fields=fields,
            program_style=args.program_style,
            convention=args.convention,
            chunk_size=args.chunk_size,
            concurrency=args.concurrency,
            progress=not args.no_progress,
            client_options=_client_options(args),
        )
    except (ValueError, UnknownComparator, DatasetError, FileNotFoundError) as error:
        return _usage_error(error)
    except Exception as error:
        return _job_error(error, resumable=False)
    print(summary.table())
    if args.report:
        print(f"\nreport: {args.report}")
    return 0


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    if not args.target:
        return {}
    if args.token_file is not None:
        return {"token": args.token_file.read_text().strip()}
    token = os.environ.get(TOKEN_ENV)
    return {"token": token} if token else {}


def _usage_error(error: BaseException) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def _job_error(error: BaseException, *, resumable: bool) -> int:
    from potsandbox.client.errors import SandboxError

    if not isinstance(error, SandboxError):
        raise error
    logging.getLogger("potsandbox").debug("job failed", exc_info=error)
    hint = " (the output so far is valid; rerun with --resume to continue)" if resumable else ""
    print(f"error: the sandbox failed: {error}{hint}", file=sys.stderr)
    return 1
