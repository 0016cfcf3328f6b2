"""The sandbox engine: zygotes, containment, limits, and the gRPC server.

Importing this package pulls in only the standard library; the sandbox runtime
(pyseccomp, numpy, sympy) is loaded inside the zygote processes.
"""

from potsandbox.executor.conventions import Convention, Kind
from potsandbox.executor.errors import (
    ConfigError,
    ExecutorClosed,
    ExecutorError,
    IsolationError,
    LimitError,
)
from potsandbox.executor.limits import LimitPolicy, Limits
from potsandbox.executor.pool import PoolConfig
from potsandbox.executor.result import Result, Status
from potsandbox.executor.runner import AsyncExecutor, Executor

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
