"""Turn kernel facts about a finished task into its Result.

The parent decides the status from the wait status, rusage, its own timer and byte
counts. The result frame written inside the task only supplies what the program
could have chosen anyway (its answer, its exception), and only when the process
exited normally with status 0 after writing exactly one well-formed frame. A hostile
program can write any bytes in that frame's place, so decoding it is total: JSON (linear
in its input), and every field checked for type, range and length before it is used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
from dataclasses import dataclass
from typing import Any, TypeGuard

from potsandbox.executor.channel import CONTAINED
from potsandbox.executor.conventions import Convention, Kind
from potsandbox.executor.limits import cpu_rlimit_s
from potsandbox.executor.render import MAX_ANSWER_CHARS, MAX_MESSAGE_CHARS, MAX_NAME_CHARS
from potsandbox.executor.result import Status

MAX_LINE = 2**31 - 1
"""Line numbers travel as int32."""

POLICY_ERRNOS = (errno.EPERM, errno.EACCES)
"""The errnos of the sandbox's refusals: an uncaught PermissionError with one is `blocked`."""

CPU_LIMIT_SHARE = 0.9
"""A SIGXCPU/SIGKILL death after this share of the task's RLIMIT_CPU is that limit, below it
a crash (the program signalled itself). The CPU time in rusage is the scheduler's exact run
time, only its user/system split is sampled: at RLIMIT_CPU deaths it was within 0.6 % of
the limit (18 deaths: limits of 1, 2 and 3 s, 1 and 3 threads, 4 tasks on 2 cores)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What the parent saw of one task process."""

    wait_status: int
    cpu_time_s: float
    wall_time_s: float
    peak_memory_mb: float
    killed_for: Status | None
    """TIMEOUT or OUTPUT_LIMIT when the parent killed the task, else None."""
    frame: bytes
    stdout: bytes
    stderr: bytes
    truncated: bool


AUTO_SOURCES = frozenset({"call:solution", "variable:ans", "last_expr", "stdout"})
"""Where the `auto` convention may have found its answer."""


def decide(
    obs: Observation, *, convention: Convention, timeout_s: float, cpu_s: float
) -> dict[str, Any]:
    """Result fields (without id) for an observed task run under `convention`."""
    fields = _base_fields(obs)
    if obs.killed_for is Status.TIMEOUT:
        return fields | _fail(Status.TIMEOUT, "Timeout", f"wall-clock limit of {timeout_s:g} s")
    if obs.killed_for is Status.OUTPUT_LIMIT:
        return fields | _fail(Status.OUTPUT_LIMIT, "OutputLimit", "output cap reached")
    if os.WIFSIGNALED(obs.wait_status):
        return fields | _signalled(os.WTERMSIG(obs.wait_status), obs.cpu_time_s, cpu_s)
    code = os.waitstatus_to_exitcode(obs.wait_status)
    fields["exit_code"] = code
    if obs.cpu_time_s > cpu_s:  # the kernel's RLIMIT_CPU counts whole seconds only
        return fields | _cpu_limit(cpu_s)
    return fields | _exited(code, obs, convention)


def _base_fields(obs: Observation) -> dict[str, Any]:
    return {
        "stdout": obs.stdout.decode("utf-8", "replace"),
        "stderr": obs.stderr.decode("utf-8", "replace"),
        "truncated": obs.truncated,
        "wall_time_s": round(obs.wall_time_s, 6),
        "cpu_time_s": round(obs.cpu_time_s, 6),
        "peak_memory_mb": round(obs.peak_memory_mb, 3),
    }


def _fail(status: Status, error_type: str, message: str) -> dict[str, Any]:
    return {"status": status, "error_type": error_type, "error_message": message}


def _signalled(signum: int, cpu_time_s: float, cpu_s: float) -> dict[str, Any]:
    name = _signal_name(signum)
    base = {"signal": signum}
    if signum == signal.SIGSYS:
        return base | _fail(
            Status.BLOCKED, "PolicyViolation", "killed by the syscall filter (SIGSYS)"
        )
    rlimit = cpu_rlimit_s(cpu_s)
    if signum in (signal.SIGXCPU, signal.SIGKILL) and cpu_time_s >= CPU_LIMIT_SHARE * rlimit:
        return base | _cpu_limit(cpu_s)
    return base | _fail(Status.CRASHED, name, f"killed by {name}")


def _cpu_limit(cpu_s: float) -> dict[str, Any]:
    return _fail(Status.TIMEOUT, "CpuLimit", f"CPU-time limit of {cpu_s:g} s")


def _exited(code: int, obs: Observation, convention: Convention) -> dict[str, Any]:
    if not obs.frame.startswith(CONTAINED):
        return _uncontained(obs.frame)
    frame = parse_frame(obs.frame[len(CONTAINED) :])
    if frame is None:
        return _fail(Status.CRASHED, "MalformedResult", "the result channel held garbage")
    if not frame:
        return _exited_early(code, obs, convention.kind)
    if code != 0:
        return _fail(Status.ERROR, "Exit", f"exited with status {code}")
    return _from_frame(frame, obs, convention)


def _exited_early(code: int, obs: Observation, kind: Kind) -> dict[str, Any]:
    """The process ended itself (os._exit) before the harness could report."""
    if code != 0:
        return _fail(Status.ERROR, "Exit", f"exited with status {code}")
    if kind in (Kind.STDOUT, Kind.AUTO):
        return _stdout_answer(obs.stdout)
    return _fail(Status.NO_ANSWER, "Exit", "exited before the answer could be read")


def _from_frame(frame: dict[str, Any], obs: Observation, requested: Convention) -> dict[str, Any]:
    kind = frame.get("kind")
    convention = _text(frame.get("convention"), MAX_NAME_CHARS) or ""
    if kind in ("answer", "stdout", "no_answer") and not _claimable(kind, convention, requested):
        return _fail(
            Status.CRASHED, "MalformedResult", f"an answer by {convention!r} under {requested}"
        )
    if kind == "answer":
        return {
            "status": Status.OK,
            "convention": convention,
            "answer": _text(frame.get("answer"), MAX_ANSWER_CHARS),
            "answer_number": _number(frame.get("number")),
        }
    if kind == "stdout":
        return _stdout_answer(obs.stdout)
    if kind == "no_answer":
        name = convention.partition(":")[2] or convention
        return {"convention": convention} | _fail(
            Status.NO_ANSWER, "NoAnswer", f"{name} not defined"
        )
    if kind in ("error", "syntax_error"):
        return _error(frame, syntax=kind == "syntax_error")
    return _fail(Status.CRASHED, "MalformedResult", "unknown result frame")


def _claimable(kind: str, convention: str, requested: Convention) -> bool:
    """Whether the harness can have read an answer of `kind` by `convention` for the
    request: a frame claiming another source is the program's forgery. Answers by stdout
    are the parent's own, read from the pipe, never a frame's text."""
    if (kind == "stdout") != (convention == "stdout"):
        return False
    return convention in (AUTO_SOURCES if requested.kind is Kind.AUTO else {str(requested)})


def _uncontained(data: bytes) -> dict[str, Any]:
    """The task never reached its program: only a containment failure can be reported."""
    frame = parse_frame(data)
    if frame and frame.get("kind") == "internal":
        message = _text(frame.get("message"), MAX_MESSAGE_CHARS) or ""
        return _fail(Status.CRASHED, "SandboxError", message)
    return _fail(Status.CRASHED, "SandboxError", "the task ended before its program started")


def _error(frame: dict[str, Any], *, syntax: bool) -> dict[str, Any]:
    error_type = _text(frame.get("type"), MAX_NAME_CHARS) or "Exception"
    status = Status.SYNTAX_ERROR if syntax else Status.ERROR
    if frame.get("memory") is True:
        status = Status.MEMORY_LIMIT
    elif error_type == "PermissionError" and frame.get("errno") in POLICY_ERRNOS:
        status = Status.BLOCKED
    line = frame.get("line")
    return {
        "status": status,
        "error_type": error_type,
        "error_message": _text(frame.get("message"), MAX_MESSAGE_CHARS),
        "error_line": line if _is_int(line) and 0 < line <= MAX_LINE else None,
    }


def _stdout_answer(stdout: bytes) -> dict[str, Any]:
    line = _last_line(stdout)
    if not line:
        return {"convention": "stdout"} | _fail(Status.NO_ANSWER, "NoAnswer", "no output")
    return {
        "status": Status.OK,
        "convention": "stdout",
        "answer": line[:MAX_ANSWER_CHARS],
        "answer_number": _parse_float(line),
    }


LAST_LINE_WINDOW = 4096
"""Bytes of output's tail decoded first when looking for its last line."""


def _last_line(stdout: bytes) -> str:
    """The last non-empty line, stripped, as `splitlines()` of the whole output gives it,
    from a tail that grows until it holds a line break: splitting 16 MiB of short lines
    whole made millions of strings (half a gigabyte) in the zygote."""
    window = LAST_LINE_WINDOW
    while True:
        lines = stdout[-window:].decode("utf-8", "replace").rstrip().splitlines()
        if len(lines) > 1 or window >= len(stdout):
            return lines[-1].strip() if lines else ""
        window *= 4


def parse_frame(data: bytes) -> dict[str, Any] | None:
    """{} when no frame was written, None when the bytes are not exactly one frame.

    The one decoder of what a task wrote after its CONTAINED mark."""
    if not data:
        return {}
    size = int.from_bytes(data[:4], "big")
    if len(data) != 4 + size:
        return None
    try:
        frame = json.loads(data[4:])
    except (ValueError, RecursionError):  # not JSON, not UTF-8, too deep, too many digits
        return None
    return frame if isinstance(frame, dict) and frame else None


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


def _number(value: object) -> float | None:
    """The task sends a float; an int is accepted while it fits one."""
    if isinstance(value, float):
        return value
    if _is_int(value):
        with contextlib.suppress(OverflowError):
            return float(value)
    return None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_float(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
