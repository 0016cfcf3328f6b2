"""Per-task resource limits: one schema, with server defaults and maxima."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any

from potsandbox.executor.errors import LimitError


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one task. `None` in a request means "server default"."""

    timeout_s: float = 5.0
    """Wall-clock limit, enforced by the parent with SIGKILL."""
    cpu_s: float = 10.0
    """CPU-time limit (RLIMIT_CPU backstop; the wall clock is the primary limit)."""
    memory_mb: int = 4096
    """Address space the program may add on top of the preloaded interpreter."""
    output_bytes: int = 1 << 20
    """Cap on stdout and on stderr each; at the cap the task ends as output_limit."""


OUTPUT_BYTES_CEILING = 256 << 20
"""No output cap may be larger, whatever a server allows: a Result carries stdout and
stderr whole, so the messages that hold it (`largest_result_bytes`) stay below 2 GiB,
the bound of a gRPC message and of a zygote's frame."""

UTF8_REPLACEMENT_BYTES = 3
"""An undecodable output byte reaches the Result as U+FFFD, three bytes of UTF-8."""


def largest_result_bytes(output_bytes: int) -> int:
    """How large one task's Result can be encoded under the output cap `output_bytes`:
    stdout and stderr at the cap, every byte undecodable, plus the capped answer and error."""
    return UTF8_REPLACEMENT_BYTES * 2 * output_bytes + (1 << 20)


def cpu_rlimit_s(cpu_s: float) -> int:
    """The RLIMIT_CPU a task gets for a CPU limit: whole seconds (the kernel's unit), rounded
    up, at least one."""
    return max(1, math.ceil(cpu_s))


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Server defaults and the maxima a request may not exceed."""

    default: Limits = Limits()
    """Applied to every limit a request leaves unset."""
    maximum: Limits = Limits(timeout_s=60.0, cpu_s=120.0, memory_mb=16384, output_bytes=16 << 20)
    """A request above any of these is rejected (or clamped when `clamp` is set)."""
    clamp: bool = False
    """Clamp requests above the maximum instead of rejecting them."""

    def __post_init__(self) -> None:
        for f in fields(Limits):
            default = check(f.name, getattr(self.default, f.name))
            if default > check(f.name, getattr(self.maximum, f.name)):
                raise LimitError(f.name, f"default {f.name} is above the maximum")

    def resolve(
        self,
        *,
        timeout_s: float | None = None,
        cpu_s: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
    ) -> Limits:
        """Fill unset limits from the defaults and check each against the maximum.

        Raises:
            LimitError: a limit of the wrong type, not finite, not positive, or above the
                maximum without `clamp`.
        """
        requested = {
            "timeout_s": timeout_s,
            "cpu_s": cpu_s,
            "memory_mb": memory_mb,
            "output_bytes": output_bytes,
        }
        chosen: dict[str, Any] = {}
        for name, value in requested.items():
            if value is None:
                continue
            value = check(name, value)
            ceiling = getattr(self.maximum, name)
            if value > ceiling:
                if not self.clamp:
                    raise LimitError(name, f"{name}={value} is above the server maximum {ceiling}")
                value = ceiling
            chosen[name] = value
        return replace(self.default, **chosen)


WHOLE = frozenset({"memory_mb", "output_bytes"})
"""The limits counted in whole units; the others are seconds, fractions allowed."""


def check(name: str, value: object) -> float:
    """`value` as a limit named `name`: a positive finite int or float, whole where it counts.

    NaN would pass both `<= 0` and `> maximum` and then disarm a deadline or break the
    zygote's arithmetic, so every limit is checked here, the one gate for the Python
    API, the wire and the server's own configuration.

    Raises:
        LimitError: `value` is not such a number.
    """
    number: float
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # True is no limit
        number = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and name not in WHOLE:
        number = float(value)
    else:
        wanted = "an integer" if name in WHOLE else "a number"
        raise LimitError(name, f"{name} must be {wanted}, got {value!r}")
    if not math.isfinite(number) or number <= 0:
        raise LimitError(name, f"{name} must be positive and finite, got {value}")
    if name == "output_bytes" and number > OUTPUT_BYTES_CEILING:
        raise LimitError(name, f"output_bytes must be at most {OUTPUT_BYTES_CEILING}, got {value}")
    return number
