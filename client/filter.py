"""Filter a PoT dataset: run every rationale's program, keep the records whose answer is right.

Built for multi-hour jobs over JSONL:

* streams its input (never holds it whole) and writes whole lines, flushed and fsync'ed per
  chunk, so a killed run leaves valid JSONL; `resume=True` drops a torn last line and skips
  every id already written to either output;
* runs identical programs once: tasks are keyed by a hash of program + prelude + convention +
  limits, and a duplicate waits for the first run's result;
* keeps every sandbox busy: requests go to the least-loaded of one or more targets (or to an
  embedded local server), with a bounded window across chunk boundaries, so one slow program
  does not stall the next chunk; output stays in input order;
* compares answers in an `AnswerJudge` (process pool, per-comparison deadline).

The task engine here (`Task`, `Sandboxes`, `ordered_results`, `JsonlSink`) also drives the eval
loop in `evaluate.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias, TypeVar

from potsandbox.client.answers import (
    AnswerJudge,
    Comparator,
    Comparison,
    UnknownComparator,
    Verdict,
)
from potsandbox.client.datasets import canonical_dataset
from potsandbox.client.pot_scoring import get_comparator
from potsandbox.executor.conventions import Convention
from potsandbox.executor.errors import ConfigError
from potsandbox.executor.result import Result, Status

log = logging.getLogger("potsandbox.filter")

Record: TypeAlias = dict[str, Any]
T = TypeVar("T")

DEFAULT_CHUNK = 256
"""Records judged and written together; also the unit of crash safety."""

DEFAULT_CACHE = 200_000
"""Results remembered for deduplication; the least recently used beyond this are forgotten
(a Result holds the program's stdout, so this bounds memory)."""

DEFAULT_CALL_DEADLINE_S = 300.0
"""Least deadline of one run call, queueing in the server included."""

CHUNKS_AHEAD = 4
"""Chunks submitted beyond the one being written: bounds memory, overlaps slow programs."""

FALLBACK_COMPARATOR = "numeric"
"""What `auto` means for a record without a dataset."""

FILTER_KEY = "filter"
"""Key of the verdict object added to each output record."""


# --------------------------------------------------------------------------- record fields


def field_overrides(fields_class: type, pairs: Iterable[str]) -> dict[str, str]:
    """Check "name=field" pairs against a field-name dataclass; the filter and eval share it.

    Raises:
        ValueError: not name=field, or an unknown name.
    """
    changes: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(fields_class)}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in names or not value:
            raise ValueError(f"--field wants NAME=FIELD with NAME in {sorted(names)}: {pair!r}")
        changes[name] = value
    return changes


@dataclass(frozen=True, slots=True)
class Fields:
    """Which input field holds each value; the shared corpus's names by default."""

    id: str = "id"
    """Stable record id (resume skips ids already written); absent = "line:N" of the input."""
    program: str = "program"
    """The Python source to run."""
    prelude: str = "prelude"
    """Code run first in the same namespace (null = none)."""
    convention: str = "convention"
    """stdout, ans, solution, variable:NAME, call:NAME, last_expr or auto (absent = auto)."""
    entrypoint: str = "entrypoint"
    """Function name for `solution`/`call` (the corpus's TheoremQA programs use `solve`)."""
    gold: str = "gold"
    """The gold answer."""
    options: str = "options"
    """Multiple-choice options, or null."""
    dataset: str = "dataset"
    """Dataset name; picks the `auto` comparator and groups the report."""

    @classmethod
    def parse(cls, pairs: Iterable[str]) -> Fields:
        """From "name=field" pairs ("program=code", "gold=answer").

        Raises:
            ValueError: not name=field, or an unknown name.
        """
        return cls(**field_overrides(cls, pairs))


def record_id(record: Record, line: int, fields: Fields) -> str:
    """The record's id as text, or "line:N" (1-based input line) when it has none."""
    value = record.get(fields.id)
    return f"line:{line}" if value is None else str(value)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True, slots=True)
class Task:
    """One program to run: everything that decides its outcome, and nothing else."""

    program: str
    prelude: str = ""
    convention: str = "auto"
    """Normalised convention ("variable:ans", "call:solve", "stdout", ...)."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any], fields: Fields = Fields()) -> Task | None:
        """The record's task, or None when it has no program text.

        Raises:
            ConfigError: the convention or entrypoint is invalid.
        """
        program = record.get(fields.program)
        if not isinstance(program, str):
            return None
        convention = Convention.parse(record.get(fields.convention), record.get(fields.entrypoint))
        return cls(program, record.get(fields.prelude) or "", str(convention))

    def key(self, timeout: float | None = None, memory_mb: int | None = None) -> str:
        """Hash of program, prelude, convention and limits: equal keys give equal results."""
        text = json.dumps(
            [self.program, self.prelude, self.convention, timeout, memory_mb], ensure_ascii=False
        )
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the request (INVALID_ARGUMENT): a property of the record, not a run."""

    message: str


Outcome: TypeAlias = Result | Refused | None
"""A run's Result, a refused request, or None when the record had no program."""


class Sandboxes:
    """One or more sandbox services behind one `run`; identical tasks run once.

    No target starts an embedded local server for the lifetime of the `async with` block.
    Each request goes to the target with the fewest requests in flight; a RPC-level failure
    that survives the client's retries raises (the job stops; its output stays resumable).
    """

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        timeout: float | None = None,
        memory_mb: int | None = None,
        concurrency: int | None = None,
        cache_size: int = DEFAULT_CACHE,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.targets = tuple(targets)
        """Where programs run; empty = an embedded local server."""
        self.timeout = timeout
        """Wall-clock seconds per program; None = the server's default."""
        self.memory_mb = memory_mb
        """Memory budget per program; None = the server's default."""
        self.concurrency = concurrency
        """Requests in flight per target; None = twice the target's worker slots."""
        self.executed = 0
        """Programs sent to a sandbox."""
        self.reused = 0
        """Tasks answered from an identical task's run."""
        self._cache_size = cache_size
        self._client_options = dict(client_options or {})
        self._clients: list[Any] = []
        self._in_flight: list[int] = []
        self._sent: list[int] = []
        self._gates: list[asyncio.Semaphore] = []
        self._deadline: float | None = None
        self._cache: collections.OrderedDict[str, asyncio.Future[Result | Refused]] = (
            collections.OrderedDict()
        )
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Sandboxes:
        from potsandbox.client.client import AsyncSandboxClient

        try:
            longest = 0.0
            for target in self.targets or (None,):
                client = await self._stack.enter_async_context(
                    AsyncSandboxClient(target, **self._client_options)
                )
                info = await client.info()  # also starts the embedded server
                window = self.concurrency or max(4, 2 * info.workers.slots)
                timeout = self.timeout or info.default_limits.timeout_s
                # The call's deadline covers queueing behind the rest of the window.
                longest = max(longest, timeout * (window / max(1, info.workers.slots) + 2))
                self._clients.append(client)
                self._in_flight.append(0)
                self._sent.append(0)
                self._gates.append(asyncio.Semaphore(window))
            self._deadline = max(DEFAULT_CALL_DEADLINE_S, 2 * longest)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for future in self._cache.values():
            future.cancel()
        await self._stack.aclose()

    def submit(self, task: Task) -> asyncio.Future[Result | Refused]:
        """The future result of `task`: a new run, or the one of an identical task."""
        key = task.key(self.timeout, self.memory_mb)
        future = self._cache.get(key)
        if future is not None and not future.cancelled():
            self._cache.move_to_end(key)
            self.reused += 1
            return future
        future = asyncio.ensure_future(self._run(task))
        self._cache[key] = future
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)  # an evicted run still finishes for its waiters
        return future

    async def run(self, task: Task) -> Result | Refused:
        """Run one task (deduplicated)."""
        return await self.submit(task)

    @property
    def by_target(self) -> dict[str, int]:
        """Programs sent to each target ("embedded" for the local server)."""
        names = self.targets or ("embedded",)
        return dict(zip(names, self._sent, strict=False))

    async def _run(self, task: Task) -> Result | Refused:
        from potsandbox.client.errors import InvalidRequest

        index = min(range(len(self._clients)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        try:
            async with self._gates[index]:
                self.executed += 1
                self._sent[index] += 1
                result: Result = await self._clients[index].run(
                    task.program,
                    prelude=task.prelude or None,
                    convention=task.convention,
                    timeout=self.timeout,
                    memory_mb=self.memory_mb,
                    deadline=self._deadline,
                )
                return result
        except InvalidRequest as error:
            return Refused(str(error))
        finally:
            self._in_flight[index] -= 1


async def ordered_results(
    items: Iterable[T],
    task_of: Callable[[T], Task | None],
    sandboxes: Sandboxes,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    on_result: Callable[[], None] | None = None,
) -> AsyncIterator[list[tuple[T, Outcome]]]:
    """Chunks of (item, outcome) in input order, while later chunks already run.

    `task_of` may return None (nothing to run) or raise ConfigError (a bad convention), which
    becomes a Refused outcome for that item.
    """
    queue: asyncio.Queue[list[tuple[T, asyncio.Future[Result | Refused] | Outcome]] | None]
    queue = asyncio.Queue(maxsize=CHUNKS_AHEAD)

    async def produce() -> None:
        chunk: list[tuple[T, asyncio.Future[Result | Refused] | Outcome]] = []
        for item in items:
            try:
                task = task_of(item)
            except ConfigError as error:
                chunk.append((item, Refused(str(error))))
            else:
                chunk.append((item, None if task is None else sandboxes.submit(task)))
            if len(chunk) >= chunk_size:
                await queue.put(chunk)
                chunk = []
            await asyncio.sleep(0)  # let finished runs be collected while we read
        if chunk:
            await queue.put(chunk)
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while True:
            pending = await _next_chunk(queue, producer)
            if pending is None:
                break
            done: list[tuple[T, Outcome]] = []
            for item, outcome in pending:
                if isinstance(outcome, asyncio.Future):
                    outcome = await outcome
                done.append((item, outcome))
                if on_result is not None:
                    on_result()
            yield done
        await producer
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producer


async def _next_chunk(queue: asyncio.Queue[T | None], producer: asyncio.Task[None]) -> T | None:
    """The next queued chunk; re-raises the producer's error (e.g. unreadable input)."""
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait({getter, producer}, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    producer.result()  # raises if the producer failed
    return await queue.get()


def answer_text(result: Result, comparator: Comparator) -> str | None:
    """What the comparator reads: stdout for `stdout` runs and for MAmmoTH, else the answer.

    An `auto` run that ends in `print(...)` has a last expression whose value is None; its
    answer is what it printed.
    """
    if comparator.name == "mammoth":
        return result.stdout.strip("\n")  # MAmmoTH's executor strips newlines from both ends
    if result.convention == "stdout":
        return result.stdout.strip()
    if result.convention == "last_expr" and result.answer == "None" and result.stdout.strip():
        return result.stdout.strip()
    return result.answer


# --------------------------------------------------------------------------- comparators


@dataclass(frozen=True, slots=True)
class ComparatorChoice:
    """A comparator name for every record, with per-dataset overrides ("aqua=choice")."""

    default: str = "auto"
    """Name for datasets without an override (`auto` = the dataset's default; numeric for
    records without a dataset)."""
    overrides: tuple[tuple[str, str], ...] = ()
    """(dataset, name) pairs."""

    @classmethod
    def parse(cls, specs: Sequence[str] | str | None) -> ComparatorChoice:
        """From ["numeric", "aqua=choice"]; a bare name sets the default.

        Raises:
            UnknownComparator: a name no comparator has.
        """
        if specs is None:
            specs = []
        elif isinstance(specs, str):
            specs = [specs]
        default, overrides = "auto", []
        for spec in specs:
            for part in (p.strip() for p in spec.split(",")):
                if "=" in part:
                    dataset, _, name = part.partition("=")
                    overrides.append((dataset.strip().lower(), name.strip()))
                elif part:
                    default = part
        choice = cls(default, tuple(overrides))
        for name in {default, *(n for _, n in overrides)}:
            base = name.partition("@")[0]
            if base not in ("auto", "mammoth"):
                get_comparator(name)  # fail at start-up, naming the comparator
        return choice

    def name_for(self, dataset: str | None) -> str:
        """The comparator name for records of `dataset`."""
        key = canonical_dataset(dataset) if dataset else ""
        for name, chosen in self.overrides:
            if canonical_dataset(name) == key:
                return chosen
        return self.default

    def __str__(self) -> str:
        return ",".join([self.default, *(f"{ds}={name}" for ds, name in self.overrides)])


class ComparatorCache:
    """Comparators resolved once per (name, dataset)."""

    def __init__(self, choice: ComparatorChoice) -> None:
        self.choice = choice
        self._resolved: dict[str | None, Comparator | UnknownComparator] = {}

    def get(self, dataset: str | None) -> Comparator | UnknownComparator:
        """The comparator for a dataset, or the error saying why there is none."""
        if dataset not in self._resolved:
            name = self.choice.name_for(dataset)
            if dataset is None and name.partition("@")[0] == "auto":
                name = FALLBACK_COMPARATOR
            try:
                self._resolved[dataset] = get_comparator(name, dataset=dataset)
            except UnknownComparator as error:
                log.warning("no comparator for dataset %r: %s", dataset, error)
                self._resolved[dataset] = error
        return self._resolved[dataset]


# --------------------------------------------------------------------------- JSONL in and out


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its 1-based number and the parsed record (None when it is not JSON)."""

    number: int
    record: Record | None
    error: str = ""


def read_jsonl(path: str | Path) -> Iterator[Line]:
    """Input lines one at a time ("-" = stdin); blank lines are skipped."""
    stream: IO[str]
    with contextlib.ExitStack() as stack:
        if str(path) == "-":
            stream = sys.stdin
        else:
            stream = stack.enter_context(Path(path).open(encoding="utf-8"))
        for number, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                yield Line(number, None, f"invalid JSON: {error.msg}")
                continue
            if not isinstance(record, dict):
                yield Line(number, None, f"a JSON {type(record).__name__}, not an object")
                continue
            yield Line(number, record)


def count_lines(path: str | Path) -> int | None:
    """Newlines in a regular file (for the progress bar's ETA), or None for stdin/pipes."""
    if str(path) == "-" or not Path(path).is_file():
        return None
    count, last = 0, b"\n"
    with Path(path).open("rb") as stream:
        while block := stream.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class JsonlSink:
    """An append-only JSONL output that a kill leaves valid but for at most a torn last line.

    Every line goes to the file in its own write() on an O_APPEND descriptor (no user-space
    buffer to lose), and each chunk is fsync'ed. A kill can cut only the line being written;
    opening with `resume` drops such a torn last line first.
    """

    def __init__(self, path: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.torn_bytes = 0
        """Bytes of a torn last line dropped on resume."""
        if self.path.exists() and self.path.stat().st_size and not (resume or overwrite):
            raise FileExistsError(
                f"{self.path} exists and is not empty: pass resume (--resume) to continue it "
                "or overwrite (--overwrite) to start again"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if resume and self.path.exists():
            self.torn_bytes = drop_torn_tail(self.path)
        else:
            flags |= os.O_TRUNC
        self._fd: int | None = os.open(self.path, flags, 0o644)

    def records(self) -> Iterator[Record]:
        """The records already in the file (read before appending; used by resume)."""
        with self.path.open(encoding="utf-8") as stream:
            for text in stream:
                if text.strip():
                    yield json.loads(text)

    def write(self, records: Sequence[Record]) -> None:
        """Append whole lines, one write each, then fsync."""
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        for record in records:
            data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "replace")
            while data:
                data = data[os.write(self._fd, data) :]
        if records:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def drop_torn_tail(path: Path) -> int:
    """Truncate a JSONL file after its last complete line; a last line that is cut short (no
    newline, or not JSON) is dropped. Returns the bytes dropped."""
    size = path.stat().st_size
    with path.open("rb+") as stream:
        keep = _last_newline_end(stream, size)
        if keep:
            start = _last_newline_end(stream, keep - 1)
            stream.seek(start)
            last = stream.read(keep - start).strip()
            if last:
                try:
                    json.loads(last)
                except ValueError:
                    keep = start
        stream.truncate(keep)
    return size - keep


def _last_newline_end(stream: IO[bytes], size: int) -> int:
    """Offset just after the last b"\\n" before `size` (0 when there is none)."""
    position = size
    while position > 0:
        begin = max(0, position - (1 << 16))
        stream.seek(begin)
        block = stream.read(position - begin)
        index = block.rfind(b"\n")
        if index >= 0:
            return begin + index + 1
        position = begin
    return 0


# --------------------------------------------------------------------------- the report


@dataclass
class Tally:
    """Counts for one group of records."""

    total: int = 0
    kept: int = 0

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.kept / self.total if self.total else 0.0


@dataclass
class FilterReport:
    """What a filter run decided: counts overall, per dataset, per reason, per status."""

    input: str = ""
    kept_path: str = ""
    rejected_path: str = ""
    comparator: str = ""
    """The comparator choice as given ("auto", "numeric,aqua=choice")."""
    comparators: set[str] = field(default_factory=set)
    """Specs of the comparators actually used (e.g. numeric@1, choice@1)."""
    total: int = 0
    kept: int = 0
    resumed: int = 0
    """Records already in the outputs when a resumed run started (included in the counts)."""
    executed: int = 0
    """Programs this run sent to a sandbox."""
    reused: int = 0
    """Records of this run answered by an identical program's run (deduplication)."""
    elapsed_s: float = 0.0
    by_target: dict[str, int] = field(default_factory=dict)
    """Programs this run sent to each target."""
    by_dataset: dict[str, Tally] = field(default_factory=dict)
    by_reason: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    by_error_type: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rejected(self) -> int:
        return self.total - self.kept

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.kept / self.total if self.total else 0.0

    def add(self, output: Record) -> None:
        """Count one output record (a fresh one, or one read back on resume)."""
        verdict = output.get(FILTER_KEY) or {}
        dataset = str(verdict.get("dataset") or "-")
        tally = self.by_dataset.setdefault(dataset, Tally())
        self.total += 1
        tally.total += 1
        if verdict.get("kept"):
            self.kept += 1
            tally.kept += 1
        else:
            self.by_reason[str(verdict.get("reason"))] += 1
        if verdict.get("status"):
            self.by_status[str(verdict["status"])] += 1
        if verdict.get("error_type"):
            self.by_error_type[str(verdict["error_type"])] += 1
        if verdict.get("comparator"):
            self.comparators.add(str(verdict["comparator"]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        fresh = self.total - self.resumed
        return {
            "input": self.input,
            "kept_path": self.kept_path,
            "rejected_path": self.rejected_path,
            "comparator": self.comparator,
            "comparators": sorted(self.comparators),
            "total": self.total,
            "kept": self.kept,
            "rejected": self.rejected,
            "kept_percent": round(self.kept_percent, 3),
            "resumed": self.resumed,
            "executed": self.executed,
            "reused": self.reused,
            "by_target": self.by_target,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(fresh / self.elapsed_s, 2) if self.elapsed_s else None,
            "by_dataset": {
                name: {"total": t.total, "kept": t.kept, "kept_percent": round(t.kept_percent, 3)}
                for name, t in sorted(self.by_dataset.items())
            },
            "by_reason": dict(self.by_reason.most_common()),
            "by_status": dict(self.by_status.most_common()),
            "by_error_type": dict(self.by_error_type.most_common()),
        }

    def table(self, *, top: int = 12) -> str:
        """The human summary printed at the end of a run."""
        lines = [
            f"kept {self.kept} of {self.total} ({self.kept_percent:.1f}%); "
            f"rejected {self.rejected}; comparator {', '.join(sorted(self.comparators)) or '-'}",
            f"ran {self.executed} programs ({self.reused} duplicates reused"
            + (f", {self.resumed} records resumed" if self.resumed else "")
            + f") in {self.elapsed_s:.1f} s",
            "",
            f"{'dataset':<16}{'records':>9}{'kept':>9}{'kept %':>9}",
        ]
        for name, t in sorted(self.by_dataset.items()):
            lines.append(f"{name:<16}{t.total:>9}{t.kept:>9}{t.kept_percent:>9.1f}")
        lines.append(f"{'total':<16}{self.total:>9}{self.kept:>9}{self.kept_percent:>9.1f}")
        lines += ["", f"{'rejected because':<28}{'records':>9}"]
        for reason, count in self.by_reason.most_common(top):
            lines.append(f"{reason:<28}{count:>9}")
        if self.by_error_type:
            lines += ["", f"{'error type':<28}{'records':>9}"]
            for name, count in self.by_error_type.most_common(top):
                lines.append(f"{name:<28}{count:>9}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the filter


@dataclass(frozen=True, slots=True)
class _Pending:
    """A record on its way through the filter."""

    line: Line
    id: str


def filter_rationales(
    input: str | Path,
    kept: str | Path,
    rejected: str | Path,
    *,
    comparator: str | Sequence[str] = "auto",
    targets: Sequence[str] | str | None = None,
    timeout: float | None = None,
    memory_mb: int | None = None,
    fields: Fields = Fields(),
    resume: bool = False,
    overwrite: bool = False,
    report: str | Path | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    concurrency: int | None = None,
    progress: bool = False,
    judge_workers: int | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> FilterReport:
    """Run each record's program; append it to `kept` when its answer equals the gold, else to
    `rejected`, with a `filter` object saying why (or the canonical answer when kept).

    Args:
        input: JSONL of records (shared-corpus fields by default, see `Fields`); "-" = stdin.
        kept, rejected: output JSONL paths.
        comparator: a name for every record ("auto" = each dataset's default), plus per-dataset
            overrides: ["numeric", "aqua=choice"] or "numeric,aqua=choice".
        targets: "host:port" of one or more servers (load is spread); None = embedded server.
        timeout: wall-clock seconds per program; None = the server's default (5 s).
        memory_mb: memory budget per program; None = the server's default.
        resume: continue outputs of a killed run: drop a torn last line, skip ids written.
        overwrite: truncate existing outputs (without it and without resume, they must be empty).
        report: also write the JSON report here.
        progress: show a progress bar with rate and ETA on stderr.
        concurrency: requests in flight per target (default: twice its worker slots).
        client_options: more AsyncSandboxClient arguments (token, tls, ...).

    Raises:
        UnknownComparator: a comparator name does not exist.
        FileExistsError: an output exists, and neither resume nor overwrite was given.
        potsandbox.client.errors.SandboxError: the sandbox could not be reached (resume later).
    """
    choice = ComparatorChoice.parse(comparator)
    if isinstance(targets, str):
        targets = [targets]
    return run_sync(
        _filter(
            input,
            kept,
            rejected,
            choice=choice,
            targets=tuple(targets or ()),
            timeout=timeout,
            memory_mb=memory_mb,
            fields=fields,
            resume=resume,
            overwrite=overwrite,
            report=report,
            chunk_size=chunk_size,
            concurrency=concurrency,
            progress=progress,
            judge_workers=judge_workers,
            client_options=client_options,
        )
    )


async def _filter(
    input: str | Path,
    kept_path: str | Path,
    rejected_path: str | Path,
    *,
    choice: ComparatorChoice,
    targets: tuple[str, ...],
    timeout: float | None,
    memory_mb: int | None,
    fields: Fields,
    resume: bool,
    overwrite: bool,
    report: str | Path | None,
    chunk_size: int,
    concurrency: int | None,
    progress: bool,
    judge_workers: int | None,
    client_options: Mapping[str, Any] | None,
) -> FilterReport:
    started = time.monotonic()
    summary = FilterReport(str(input), str(kept_path), str(rejected_path), str(choice))
    comparators = ComparatorCache(choice)
    with contextlib.ExitStack() as stack:
        kept = stack.enter_context(JsonlSink(kept_path, resume=resume, overwrite=overwrite))
        rejected = stack.enter_context(JsonlSink(rejected_path, resume=resume, overwrite=overwrite))
        done: set[str] = set()
        if resume:
            for sink in (kept, rejected):
                if sink.torn_bytes:
                    log.warning(
                        "dropped a torn last line (%d bytes) of %s", sink.torn_bytes, sink.path
                    )
                for output in sink.records():
                    done.add(str((output.get(FILTER_KEY) or {}).get("id")))
                    summary.add(output)
            summary.resumed = summary.total
        bar = stack.enter_context(progress_bar(input, progress, initial=len(done)))
        judge = stack.enter_context(AnswerJudge(workers=judge_workers))

        def pending() -> Iterator[_Pending]:
            for line in read_jsonl(input):
                rid = record_id(line.record or {}, line.number, fields)
                if rid in done:
                    continue
                done.add(rid)  # a repeated id in the input is written once
                yield _Pending(line, rid)

        def task_of(item: _Pending) -> Task | None:
            record = item.line.record
            return None if record is None else Task.from_record(record, fields)

        sandboxes = Sandboxes(
            targets,
            timeout=timeout,
            memory_mb=memory_mb,
            concurrency=concurrency,
            client_options=client_options,
        )
        async with sandboxes:
            chunks = ordered_results(
                pending(), task_of, sandboxes, chunk_size=chunk_size, on_result=bar.update
            )
            async for chunk in chunks:  # judged and written off the loop: runs keep flowing
                outputs = await asyncio.to_thread(
                    _decide_and_write, chunk, judge, comparators, fields, kept, rejected
                )
                for output in outputs:
                    summary.add(output)
            summary.executed, summary.reused = sandboxes.executed, sandboxes.reused
            summary.by_target = sandboxes.by_target
    summary.elapsed_s = time.monotonic() - started
    if report is not None:
        write_json(report, summary.to_dict())
    return summary


def _decide_and_write(
    chunk: list[tuple[_Pending, Outcome]],
    judge: AnswerJudge,
    comparators: ComparatorCache,
    fields: Fields,
    kept: JsonlSink,
    rejected: JsonlSink,
) -> list[Record]:
    """Judge one chunk, then append its records to the two outputs."""
    outputs = _decide(chunk, judge, comparators, fields)
    kept.write([o for o in outputs if o[FILTER_KEY]["kept"]])
    rejected.write([o for o in outputs if not o[FILTER_KEY]["kept"]])
    return outputs


def _decide(
    chunk: list[tuple[_Pending, Outcome]],
    judge: AnswerJudge,
    comparators: ComparatorCache,
    fields: Fields,
) -> list[Record]:
    """Output records for one chunk: runs that need a comparison go to the judge together."""
    outputs: list[Record] = []
    to_judge: list[tuple[Record, Comparison]] = []
    for item, outcome in chunk:
        record = item.line.record
        if record is None:
            outputs.append(
                {"id": item.id, FILTER_KEY: _rejection(item.id, None, "bad_json", item.line.error)}
            )
            continue
        dataset = record.get(fields.dataset)
        verdict = _rejection(item.id, dataset, *_precheck(record, outcome, fields))
        output = dict(record)
        output[FILTER_KEY] = verdict
        outputs.append(output)
        if verdict["reason"] is not None:
            continue
        assert isinstance(outcome, Result)
        comparator = comparators.get(dataset)
        if isinstance(comparator, UnknownComparator):
            verdict.update(reason="no_comparator", detail=str(comparator))
            continue
        predicted = answer_text(outcome, comparator)
        verdict.update(answer=predicted, gold=record.get(fields.gold), comparator=comparator.spec)
        comparison = Comparison(
            predicted, record[fields.gold], comparator, dataset, record.get(fields.options)
        )
        to_judge.append((verdict, comparison))
    verdicts = judge.compare_many([c for _, c in to_judge]) if to_judge else []
    for (verdict, _), judged in zip(to_judge, verdicts, strict=True):
        _apply(verdict, judged)
    return outputs


def _precheck(record: Record, outcome: Outcome, fields: Fields) -> tuple[str | None, str, Outcome]:
    """(reason, detail, outcome): a reason when the record is rejected without a comparison."""
    if outcome is None:
        return "no_program", f"no string in field {fields.program!r}", outcome
    if isinstance(outcome, Refused):
        return "invalid_request", outcome.message, outcome
    if outcome.status is not Status.OK:
        return outcome.status.value, outcome.error_message or "", outcome
    if record.get(fields.gold) is None:
        return "no_gold", f"no value in field {fields.gold!r}", outcome
    return None, "", outcome


def _rejection(
    rid: str, dataset: Any, reason: str | None, detail: str, outcome: Outcome = None
) -> Record:
    """The `filter` object; `reason` None means "to be judged"."""
    verdict: Record = {"id": rid, "dataset": dataset, "kept": False, "reason": reason}
    if detail:
        verdict["detail"] = detail[:500]
    if isinstance(outcome, Result):
        verdict["status"] = outcome.status.value
        if outcome.error_type:
            verdict["error_type"] = outcome.error_type
        if outcome.status is not Status.OK:
            verdict["stdout_tail"] = outcome.stdout[-300:] if outcome.stdout else None
    return verdict


def _apply(verdict: Record, judged: Verdict) -> None:
    verdict["detail"] = judged.reason
    if judged.correct:
        verdict.update(kept=True, reason=None, canonical=judged.canonical)
    else:
        verdict.update(reason="wrong_answer", canonical=judged.canonical)


# --------------------------------------------------------------------------- helpers


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a report is never half-written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(target)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from code that already runs an event loop (Jupyter): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(asyncio.run(coroutine))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, name="potsandbox-job")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


class _Bar:
    """The slice of tqdm we use; a no-op stand-in when progress is off."""

    def update(self, n: int = 1) -> None:
        """Count finished records."""


@contextlib.contextmanager
def progress_bar(input: str | Path, enabled: bool, *, initial: int = 0) -> Iterator[Any]:
    """A tqdm bar over the input's lines (rate and ETA), or a no-op when disabled."""
    if not enabled:
        yield _Bar()
        return
    from tqdm import tqdm

    total = count_lines(input)
    with tqdm(
        total=total,
        initial=initial,
        unit="rec",
        dynamic_ncols=True,
        smoothing=0.05,
        file=sys.stderr,
    ) as bar:
        yield bar
