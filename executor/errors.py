"""Errors of the sandbox engine (our faults and bad requests; program outcomes are Results).

ExecutorError
├── ConfigError        a setting is invalid or contradicts another
│   └── LimitError     a requested limit is out of range (names the field)
├── IsolationError     no kernel isolation layer could be set up
└── ExecutorClosed     the executor is not running
"""

from __future__ import annotations


class ExecutorError(Exception):
    """Root of every error raised by potsandbox.executor."""


class ConfigError(ExecutorError):
    """A setting is invalid; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class LimitError(ConfigError):
    """A requested limit is not positive or exceeds the server maximum."""


class IsolationError(ExecutorError):
    """Neither seccomp nor Landlock is available and unconfined mode was not requested."""


class ExecutorClosed(ExecutorError):
    """The executor was stopped or never started."""
