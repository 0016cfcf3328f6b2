"""What one program run produced: the status vocabulary and the Result record.

Pure standard library, so the client can share it without the sandbox runtime.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class Status(enum.StrEnum):
    """How a run ended; decided by the trusted parent, never by the program."""

    OK = "ok"
    ERROR = "error"
    SYNTAX_ERROR = "syntax_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    BLOCKED = "blocked"
    CRASHED = "crashed"
    NO_ANSWER = "no_answer"


@dataclass(frozen=True, slots=True)
class Result:
    """One program's outcome. Every submitted task gets exactly one."""

    status: Status
    """How the run ended."""
    answer: str | None = None
    """The answer rendered as text (shared/DESIGN.md rendering), or None."""
    answer_number: float | None = None
    """The answer as a float when it is a real number."""
    convention: str = ""
    """The convention that produced the answer (for `auto`: the one that matched)."""
    stdout: str = ""
    """Captured standard output (UTF-8, invalid bytes replaced), up to the cap."""
    stderr: str = ""
    """Captured standard error, same rules as stdout."""
    truncated: bool = False
    """True when stdout or stderr was cut at the output cap."""
    error_type: str | None = None
    """Exception class name, or the signal/limit that ended the run."""
    error_message: str | None = None
    """Exception text or a description of what the parent observed."""
    error_line: int | None = None
    """Line in the program (not the prelude) where the error was raised."""
    exit_code: int | None = None
    """Process exit status (0-255) when it exited; None when killed by a signal."""
    signal: int | None = None
    """Signal number that killed the process, if any."""
    wall_time_s: float = 0.0
    """Wall-clock seconds from fork to exit, measured by the parent."""
    cpu_time_s: float = 0.0
    """User + system CPU seconds of the task process (rusage)."""
    peak_memory_mb: float = 0.0
    """Peak resident set of the task process in MiB (rusage maxrss)."""
    task_id: str = ""
    """Caller's id for this task, returned untouched."""

    @property
    def ok(self) -> bool:
        """True when the program ran to completion and produced an answer."""
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with stable keys (status as its string value)."""
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Inverse of `to_dict`; unknown keys are ignored."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["status"] = Status(fields["status"])
        return cls(**fields)
