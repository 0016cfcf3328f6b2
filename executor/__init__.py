"""The sandbox engine: zygotes, containment, limits, and the gRPC server.

Importing this package pulls in only a few small standard-library modules. The
asyncio pool and the executors load on first use: every zygote imports this
package too, and each module it holds is memory that every task's fork copies
(and that programs would see in `sys.modules`, where plain CPython has none).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from potsandbox.executor.conventions import Convention, Kind
from potsandbox.executor.errors import (
    ConfigError,
    ExecutorClosed,
    ExecutorError,
    IsolationError,
    LimitError,
)
from potsandbox.executor.limits import LimitPolicy, Limits
from potsandbox.executor.result import Result, Status

if TYPE_CHECKING:
    from potsandbox.executor.pool import PoolConfig
    from potsandbox.executor.runner import AsyncExecutor, Executor

_LAZY = {
    "AsyncExecutor": "potsandbox.executor.runner",
    "Executor": "potsandbox.executor.runner",
    "PoolConfig": "potsandbox.executor.pool",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncExecutor",
    "ConfigError",
    "Convention",
    "Executor",
    "ExecutorClosed",
    "ExecutorError",
    "IsolationError",
    "Kind",
    "LimitError",
    "LimitPolicy",
    "Limits",
    "PoolConfig",
    "Result",
    "Status",
]
