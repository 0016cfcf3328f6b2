"""The client library, answer comparison, filter, eval and CLI."""

from potsandbox.client import errors
from potsandbox.client.client import AsyncSandboxClient, SandboxClient, TLSConfig
from potsandbox.executor.result import Result, Status

__all__ = [
    "AsyncSandboxClient",
    "Result",
    "SandboxClient",
    "Status",
    "TLSConfig",
    "errors",
]
