"""Per-task resource limits: one schema, with server defaults and maxima."""

from __future__ import annotations

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
            if getattr(self.default, f.name) > getattr(self.maximum, f.name):
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
            LimitError: a limit is not positive, or above the maximum without `clamp`.
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
            if value <= 0:
                raise LimitError(name, f"{name} must be positive, got {value}")
            ceiling = getattr(self.maximum, name)
            if value > ceiling:
                if not self.clamp:
                    raise LimitError(name, f"{name}={value} is above the server maximum {ceiling}")
                value = ceiling
            chosen[name] = value
        return replace(self.default, **chosen)
