"""Evaluate a model's outputs: run its programs (PoT), read its chain of thought (CoT), or both.

Modes:
    pot     execute the program in each generation and score its answer
    hybrid  MAmmoTH's rule (peers.md §2.4): PoT first; when there is no program, it fails or
            yields no answer, fall back to the answer of a second generation if one is given
            (field `cot`), else to the generation's own prose (a bare program has none)
    cot     score the answer stated in the generation's text; nothing runs

A prediction record has an id and a generation (a bare program, a fenced program in prose, or
chain-of-thought text); records with the shared corpus's fields (program, prelude, convention,
entrypoint, gold, options, dataset) are valid as they are. Gold answers come from the record, or
from a gold file read by `datasets.load_gold`, joined on id.

Programs run through the filter's engine: identical programs once, several targets, a bounded
window; comparisons run in an `AnswerJudge`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from potsandbox.client.answers import AnswerJudge, Comparator, Comparison, UnknownComparator
from potsandbox.client.datasets import GoldItem, canonical_dataset, load_gold
from potsandbox.client.filter import (
    DEFAULT_CHUNK,
    ComparatorCache,
    ComparatorChoice,
    Fields,
    JsonlSink,
    Line,
    Outcome,
    Refused,
    Sandboxes,
    Task,
    answer_text,
    field_overrides,
    ordered_results,
    progress_bar,
    read_jsonl,
    record_id,
    run_sync,
    write_json,
)
from potsandbox.client.generations import (
    AnswerStyle,
    ProgramStyle,
    extract_cot_answer,
    extract_program,
)
from potsandbox.executor.conventions import Convention
from potsandbox.executor.errors import ConfigError
from potsandbox.executor.result import Result, Status

log = logging.getLogger("potsandbox.evaluate")

Mode: TypeAlias = Literal["pot", "hybrid", "cot"]
MODES: tuple[Mode, ...] = ("pot", "hybrid", "cot")

Record: TypeAlias = dict[str, Any]

DATASETS_ENV = "POTSANDBOX_DATASETS"
"""Directory holding `<name>_test.jsonl` gold files, for `--dataset NAME` without `--gold`."""


@dataclass(frozen=True, slots=True)
class EvalFields:
    """Which input field holds each value; the shared corpus's names plus the generations."""

    id: str = "id"
    """Question id, joined with the gold file's ids (datasets.py documents each set's scheme)."""
    generation: str = "generation"
    """The model's output: a program, a fenced program inside prose, or chain-of-thought text."""
    cot: str = "cot"
    """Optional second generation (chain of thought) for the hybrid fallback."""
    program: str = "program"
    """A ready program (corpus records); used instead of extracting one from `generation`."""
    prelude: str = "prelude"
    convention: str = "convention"
    entrypoint: str = "entrypoint"
    gold: str = "gold"
    options: str = "options"
    dataset: str = "dataset"

    @classmethod
    def parse(cls, pairs: Iterable[str]) -> EvalFields:
        """From "name=field" pairs ("generation=completion", "id=idx").

        Raises:
            ValueError: not name=field, or an unknown name.
        """
        return cls(**field_overrides(cls, pairs))


# --------------------------------------------------------------------------- gold answers


class GoldTable:
    """Gold items by id (and by (dataset, id) when a file mixes datasets)."""

    def __init__(self, items: Iterable[GoldItem] = ()) -> None:
        self._items: dict[str, GoldItem] = {}
        self._by_dataset: dict[tuple[str, str], GoldItem] = {}
        self.seen: set[str] = set()
        """Ids a prediction asked for."""
        for item in items:
            self._items.setdefault(item.id, item)
            self._by_dataset[(item.dataset, item.id)] = item

    def __len__(self) -> int:
        return len(self._items)

    def get(self, id: str, dataset: str | None = None) -> GoldItem | None:
        """The gold item for a prediction id (its dataset first, when given)."""
        self.seen.add(id)
        if dataset is not None:
            item = self._by_dataset.get((canonical_dataset(dataset), id))
            if item is not None:
                return item
        return self._items.get(id)

    def missing(self) -> int:
        """Gold items no prediction asked for."""
        return len(set(self._items) - self.seen)

    @classmethod
    def load(
        cls, gold: str | Path | None, dataset: str | None, data_dir: str | Path | None = None
    ) -> GoldTable | None:
        """The gold table for `--gold PATH [--dataset NAME]`, or `--dataset NAME` alone (its file
        `<name>_test.jsonl` in `data_dir` / $POTSANDBOX_DATASETS when that is set), or None.

        Raises:
            UnknownDataset: no loader for `dataset`.
            FileNotFoundError: the gold file does not exist.
        """
        if gold is not None:
            return cls(load_gold(gold, dataset or "generic"))
        if dataset is None:
            return None
        folder = data_dir or os.environ.get(DATASETS_ENV)
        if not folder:
            return None
        name = canonical_dataset(dataset)
        path = Path(folder) / f"{name.replace('-', '_')}_test.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"no gold file for dataset {dataset!r} at {path}")
        return cls(load_gold(path, name))


# --------------------------------------------------------------------------- one item


@dataclass(frozen=True, slots=True)
class _Item:
    """A prediction on its way: what to run, and what to fall back to."""

    line: Line
    id: str
    dataset: str | None
    gold: GoldItem | None
    task: Task | None
    program_found: bool
    cot_text: str | None
    """Text to read a CoT answer from (cot mode, or the hybrid fallback), if any."""


@dataclass
class EvalItem:
    """The verdict on one prediction, with why; one line of the per-item JSONL."""

    id: str
    dataset: str | None
    correct: bool
    reason: str
    """The comparator's reason, or why there was nothing to compare."""
    answer_source: str | None
    """pot, cot, or None when no answer was found."""
    status: str
    """The run's status (ok, error, timeout, ...), no_program, invalid_request, or cot."""
    predicted: str | None
    gold: Any
    canonical: str | None = None
    comparator: str | None = None
    error_type: str | None = None
    fallback: bool = False
    """True when hybrid mode used the CoT answer."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Score:
    """Correct out of evaluated, for one group."""

    items: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.items if self.items else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "correct": self.correct, "accuracy": round(self.accuracy, 3)}


@dataclass
class EvalReport:
    """Accuracy overall and per dataset, statuses, PoT execution rate."""

    mode: str = "pot"
    comparator: str = ""
    comparators: set[str] = field(default_factory=set)
    overall: Score = field(default_factory=Score)
    by_dataset: dict[str, Score] = field(default_factory=dict)
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    by_source: collections.Counter[str] = field(default_factory=collections.Counter)
    by_reason: collections.Counter[str] = field(default_factory=collections.Counter)
    programs: int = 0
    """Items with a program to run."""
    programs_ok: int = 0
    """Programs that ran to completion with an answer (status ok)."""
    fallbacks: int = 0
    no_gold: int = 0
    """Predictions without a gold answer (not scored)."""
    gold_without_prediction: int = 0
    """Gold items that no prediction answered (not scored)."""
    executed: int = 0
    reused: int = 0
    elapsed_s: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    @property
    def execution_rate(self) -> float:
        """Percent of scored items whose program ran to an answer (MAmmoTH's PoT rate)."""
        return 100.0 * self.programs_ok / self.overall.items if self.overall.items else 0.0

    def add(self, item: EvalItem) -> None:
        self.overall.items += 1
        self.overall.correct += item.correct
        score = self.by_dataset.setdefault(item.dataset or "-", Score())
        score.items += 1
        score.correct += item.correct
        self.by_status[item.status] += 1
        self.by_source[item.answer_source or "none"] += 1
        if not item.correct:
            self.by_reason[item.reason] += 1
        self.fallbacks += item.fallback
        self.programs_ok += item.status == Status.OK.value
        if item.comparator:
            self.comparators.add(item.comparator)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "comparator": self.comparator,
            "comparators": sorted(self.comparators),
            **self.overall.to_dict(),
            "by_dataset": {k: v.to_dict() for k, v in sorted(self.by_dataset.items())},
            "by_status": dict(self.by_status.most_common()),
            "by_answer_source": dict(self.by_source.most_common()),
            "wrong_by_reason": dict(self.by_reason.most_common()),
            "pot": {
                "programs": self.programs,
                "ran_ok": self.programs_ok,
                "execution_rate": round(self.execution_rate, 3),
                "executed": self.executed,
                "reused": self.reused,
            },
            "fallbacks": self.fallbacks,
            "no_gold": self.no_gold,
            "gold_without_prediction": self.gold_without_prediction,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def table(self, *, top: int = 10) -> str:
        """The human summary printed at the end of a run."""
        lines = [
            f"accuracy {self.accuracy:.2f}% ({self.overall.correct}/{self.overall.items}), "
            f"mode {self.mode}, comparator {', '.join(sorted(self.comparators)) or '-'}",
            f"PoT execution rate {self.execution_rate:.1f}% ({self.programs_ok} of "
            f"{self.overall.items} ran to an answer; {self.programs} had a program)"
            + (f"; {self.fallbacks} CoT fallbacks" if self.mode == "hybrid" else ""),
        ]
        if self.no_gold or self.gold_without_prediction:
            lines.append(
                f"not scored: {self.no_gold} predictions without gold, "
                f"{self.gold_without_prediction} gold items without a prediction"
            )
        lines += ["", f"{'dataset':<16}{'items':>8}{'correct':>9}{'accuracy':>10}"]
        for name, score in sorted(self.by_dataset.items()):
            lines.append(f"{name:<16}{score.items:>8}{score.correct:>9}{score.accuracy:>10.2f}")
        lines += ["", f"{'status':<20}{'items':>8}"]
        lines += [f"{name:<20}{count:>8}" for name, count in self.by_status.most_common(top)]
        return "\n".join(lines)


# --------------------------------------------------------------------------- evaluate


def evaluate(
    predictions: str | Path | Iterable[Mapping[str, Any]],
    *,
    gold: str | Path | None = None,
    dataset: str | None = None,
    mode: Mode = "pot",
    comparator: str | Sequence[str] = "auto",
    output: str | Path | None = None,
    report: str | Path | None = None,
    targets: Sequence[str] | str | None = None,
    timeout: float | None = None,
    memory_mb: int | None = None,
    fields: EvalFields = EvalFields(),
    program_style: ProgramStyle | None = None,
    convention: str | None = None,
    data_dir: str | Path | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    concurrency: int | None = None,
    progress: bool = False,
    judge_workers: int | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Score a model's outputs against gold answers.

    Args:
        predictions: JSONL path ("-" = stdin) or records: id + generation (+ cot), or records
            with the corpus fields.
        gold: gold file, read with `dataset`'s loader (generic JSONL when no dataset is given).
        dataset: the dataset's name: labels records without one, picks the `auto` comparator,
            and without `gold` names the gold file `<name>_test.jsonl` in `data_dir` (or
            $POTSANDBOX_DATASETS) when records carry no gold.
        mode: pot, hybrid or cot (module docstring).
        comparator: as for `filter_rationales` ("auto", "mammoth", "program-of-thoughts", ...,
            with "dataset=name" overrides).
        output: per-item JSONL (verdict and why).
        report: JSON report path.
        program_style: how a program is found in a generation (generations.extract_program);
            default "mammoth" for the mammoth comparator, else "last".
        convention: convention for extracted programs (default: "stdout" for mammoth, else
            "auto"); a record's own `convention` wins.

    Raises:
        UnknownComparator, UnknownDataset, FileNotFoundError: bad arguments.
        potsandbox.client.errors.SandboxError: the sandbox could not be reached.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    choice = ComparatorChoice.parse(comparator)
    table = GoldTable.load(gold, dataset, data_dir)
    if isinstance(targets, str):
        targets = [targets]
    settings = _Settings(
        mode=mode,
        dataset=canonical_dataset(dataset) if dataset else None,
        fields=fields,
        program_style=program_style,
        convention=convention,
        choice=choice,
    )
    return run_sync(
        _evaluate(
            predictions,
            settings,
            table,
            output=output,
            report=report,
            targets=tuple(targets or ()),
            timeout=timeout,
            memory_mb=memory_mb,
            chunk_size=chunk_size,
            concurrency=concurrency,
            progress=progress,
            judge_workers=judge_workers,
            client_options=client_options,
        )
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    mode: Mode
    dataset: str | None
    fields: EvalFields
    program_style: ProgramStyle | None
    convention: str | None
    choice: ComparatorChoice

    def is_mammoth(self, dataset: str | None) -> bool:
        return self.choice.name_for(dataset).partition("@")[0] == "mammoth"


async def _evaluate(
    predictions: str | Path | Iterable[Mapping[str, Any]],
    settings: _Settings,
    table: GoldTable | None,
    *,
    output: str | Path | None,
    report: str | Path | None,
    targets: tuple[str, ...],
    timeout: float | None,
    memory_mb: int | None,
    chunk_size: int,
    concurrency: int | None,
    progress: bool,
    judge_workers: int | None,
    client_options: Mapping[str, Any] | None,
) -> EvalReport:
    started = time.monotonic()
    summary = EvalReport(mode=settings.mode, comparator=str(settings.choice))
    comparators = ComparatorCache(settings.choice)
    lines = _lines(predictions)
    with contextlib.ExitStack() as stack:
        sink = None if output is None else stack.enter_context(JsonlSink(output, overwrite=True))
        source = predictions if isinstance(predictions, str | Path) else "-"
        bar = stack.enter_context(
            progress_bar(source, progress and isinstance(predictions, str | Path))
        )
        judge = stack.enter_context(AnswerJudge(workers=judge_workers))
        items = (_prepare(line, settings, table, summary) for line in lines)
        sandboxes = Sandboxes(
            targets,
            timeout=timeout,
            memory_mb=memory_mb,
            concurrency=concurrency,
            client_options=client_options,
        )
        async with contextlib.AsyncExitStack() as running:
            if settings.mode != "cot":
                await running.enter_async_context(sandboxes)
            chunks = ordered_results(
                (item for item in items if item is not None),
                _task_of,
                sandboxes,
                chunk_size=chunk_size,
                on_result=bar.update,
            )
            async for chunk in chunks:
                verdicts = await _judge_chunk(chunk, settings, comparators, judge)
                for verdict in verdicts:
                    summary.add(verdict)
                if sink is not None:
                    sink.write([v.to_dict() for v in verdicts])
        summary.executed, summary.reused = sandboxes.executed, sandboxes.reused
    if table is not None:
        summary.gold_without_prediction = table.missing()
    summary.elapsed_s = time.monotonic() - started
    if report is not None:
        write_json(report, summary.to_dict())
    return summary


def _lines(predictions: str | Path | Iterable[Mapping[str, Any]]) -> Iterator[Line]:
    if isinstance(predictions, str | Path):
        yield from read_jsonl(predictions)
        return
    for number, record in enumerate(predictions, start=1):
        yield Line(number, dict(record))


def _task_of(item: _Item) -> Task | None:
    return item.task


def _prepare(
    line: Line, settings: _Settings, table: GoldTable | None, summary: EvalReport
) -> _Item | None:
    """What to run and read for one prediction line; None (counted) when it has no gold."""
    fields = settings.fields
    record = line.record
    if record is None:
        log.warning("line %d: %s", line.number, line.error)
        summary.no_gold += 1
        return None
    rid = record_id(record, line.number, Fields(id=fields.id))
    dataset = record.get(fields.dataset) or settings.dataset
    gold_item = _gold_of(record, rid, dataset, fields, table)
    if gold_item is None:
        summary.no_gold += 1
        return None
    dataset = dataset or gold_item.dataset
    mammoth = settings.is_mammoth(dataset)
    generation = record.get(fields.generation)
    task, program_found, prose = None, False, None
    if settings.mode != "cot":
        task, prose = _program_task(record, generation, settings, mammoth)
        program_found = task is not None
        if program_found:
            summary.programs += 1
    cot_text = None
    if settings.mode == "cot":
        cot_text = generation if isinstance(generation, str) else record.get(fields.cot)
    elif settings.mode == "hybrid":
        second = record.get(fields.cot)
        cot_text = second if isinstance(second, str) else prose
    return _Item(line, rid, dataset, gold_item, task, program_found, cot_text)


def _gold_of(
    record: Record, rid: str, dataset: str | None, fields: EvalFields, table: GoldTable | None
) -> GoldItem | None:
    """The record's own gold, else the gold table's item for its id."""
    if record.get(fields.gold) is not None:
        options = record.get(fields.options)
        return GoldItem(
            rid,
            canonical_dataset(dataset) if dataset else "generic",
            record[fields.gold],
            tuple(options) if options else None,
            "",
        )
    return None if table is None else table.get(rid, dataset)


def _program_task(
    record: Record, generation: Any, settings: _Settings, mammoth: bool
) -> tuple[Task | None, str | None]:
    """The task to run and the generation's prose (for the hybrid fallback).

    A record's own `program` is used as is; else the program is extracted from the generation.
    A bare program has no prose; a fenced one's prose is the text without its code blocks.
    """
    fields = settings.fields
    if isinstance(record.get(fields.program), str):
        return _task(record, record[fields.program], settings, mammoth), None
    if not isinstance(generation, str):
        return None, None
    style: ProgramStyle = settings.program_style or ("mammoth" if mammoth else "last")
    program = extract_program(generation, style=style)
    if program is None:
        return None, generation
    prose = None if program.strip() == generation.strip() else _without_code(generation)
    return _task(record, program, settings, mammoth), prose


def _task(record: Record, program: str, settings: _Settings, mammoth: bool) -> Task:
    fields = settings.fields
    convention = record.get(fields.convention) or settings.convention
    convention = convention or ("stdout" if mammoth else "auto")
    try:
        parsed = str(Convention.parse(convention, record.get(fields.entrypoint)))
    except ConfigError:
        parsed = convention  # the server refuses it; the item is scored as invalid_request
    return Task(program, record.get(fields.prelude) or "", parsed)


_CODE_BLOCK = re.compile(r"```[\w+-]*[ \t]*\n.*?(?:```|\Z)", re.DOTALL)


def _without_code(generation: str) -> str:
    """The generation's prose: fenced blocks (code and its output) removed, so that the
    fallback does not read a number out of the program."""
    return _CODE_BLOCK.sub("\n", generation)


async def _judge_chunk(
    chunk: list[tuple[_Item, Outcome]],
    settings: _Settings,
    comparators: ComparatorCache,
    judge: AnswerJudge,
) -> list[EvalItem]:
    """Verdicts for one chunk, in order."""
    verdicts: list[EvalItem] = []
    comparisons: list[tuple[EvalItem, Comparison]] = []
    for item, outcome in chunk:
        assert item.gold is not None
        comparator = comparators.get(item.dataset)
        verdict = _answer(item, outcome, settings, comparator)
        verdicts.append(verdict)
        if isinstance(comparator, UnknownComparator):
            verdict.reason = f"no comparator: {comparator}"
            continue
        verdict.comparator = comparator.spec
        if verdict.predicted is None and comparator.name != "mammoth":
            continue  # MAmmoTH scores an empty answer too (multiple choice turns it into "A")
        comparisons.append(
            (
                verdict,
                Comparison(
                    verdict.predicted, item.gold.gold, comparator, item.dataset, item.gold.options
                ),
            )
        )
    judged = (
        await asyncio.to_thread(judge.compare_many, [c for _, c in comparisons])
        if comparisons
        else []
    )
    for (verdict, _), result in zip(comparisons, judged, strict=True):
        verdict.correct, verdict.reason, verdict.canonical = (
            result.correct,
            result.reason,
            result.canonical,
        )
    return verdicts


def _answer(
    item: _Item,
    outcome: Outcome,
    settings: _Settings,
    comparator: Comparator | UnknownComparator,
) -> EvalItem:
    """The item's predicted answer (PoT, or the CoT fallback), not yet judged."""
    gold = item.gold.gold if item.gold else None
    verdict = EvalItem(item.id, item.dataset, False, "", None, "cot", None, gold)
    mammoth = not isinstance(comparator, UnknownComparator) and comparator.name == "mammoth"
    if settings.mode != "cot":
        verdict.status, verdict.reason = _status(item, outcome)
        if isinstance(outcome, Result):
            verdict.error_type = outcome.error_type
            if outcome.status is Status.OK and not isinstance(comparator, UnknownComparator):
                text = answer_text(outcome, comparator)
                if _has_answer(text, item.dataset, mammoth):
                    verdict.predicted, verdict.answer_source = text, "pot"
                    return verdict
                verdict.reason = "program printed no answer" if mammoth else "empty answer"
        if settings.mode == "pot":
            return verdict
    if item.cot_text is None:
        if settings.mode == "cot":
            verdict.reason = "no generation text"
        return verdict
    style: AnswerStyle = "mammoth" if mammoth else "default"
    try:
        answer = extract_cot_answer(item.cot_text, style=style, dataset=item.dataset)
    except UnknownComparator as error:
        verdict.reason = str(error)
        return verdict
    verdict.fallback = settings.mode == "hybrid"
    if answer is None:
        verdict.reason = "no answer in the text"
        return verdict
    verdict.predicted, verdict.answer_source = answer, "cot"
    return verdict


def _status(item: _Item, outcome: Outcome) -> tuple[str, str]:
    if item.task is None:
        return "no_program", "no program in the generation"
    if isinstance(outcome, Refused):
        return "invalid_request", outcome.message
    if isinstance(outcome, Result):
        return outcome.status.value, outcome.error_message or outcome.status.value
    return "no_program", "no program in the generation"


def _has_answer(text: str | None, dataset: str | None, mammoth: bool) -> bool:
    """A PoT answer counts unless it is empty (MAmmoTH: its answer_clean finds nothing)."""
    if text is None or not text.strip():
        return False
    if not mammoth:
        return True
    from potsandbox.client.answers import mammoth_answer_clean

    try:
        return bool(mammoth_answer_clean(dataset or "", "The answer is " + text))
    except UnknownComparator:
        return True
