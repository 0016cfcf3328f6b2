"""Errors of the client: RPC-level failures only; a program's own failure is a Result.

SandboxError                root; `code` is the gRPC status (None when no RPC was made)
├── InvalidRequest          INVALID_ARGUMENT: the server rejected the request
├── Unauthenticated         UNAUTHENTICATED / PERMISSION_DENIED: token or certificate refused
├── Overloaded              RESOURCE_EXHAUSTED on every attempt
├── Unavailable             UNAVAILABLE on every attempt: no server reachable, or draining
├── DeadlineExceeded        the caller's deadline passed before the result came back
└── EmbeddedServerError     the embedded local server could not start
    └── ServerNotInstalled  the `server` extra is not installed
"""

from __future__ import annotations

import grpc


class SandboxError(Exception):
    """Root of every error raised by potsandbox.client's sandbox clients."""

    code: grpc.StatusCode | None = None
    """The gRPC status the call ended with, or None when no RPC was made."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidRequest(SandboxError):
    """The server refused the request as malformed (the message names the field)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(SandboxError):
    """The server refused the bearer token or the client certificate."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Overloaded(SandboxError):
    """The server's queue stayed full through every retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SandboxError):
    """No server answered through every retry (down, unreachable or draining)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SandboxError):
    """The caller's deadline passed; the server stops the program when it does."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class EmbeddedServerError(SandboxError):
    """The local server a client starts for itself did not come up."""


class ServerNotInstalled(EmbeddedServerError):
    """A client without a target needs `pip install potsandbox[server]`."""


_BY_CODE: dict[grpc.StatusCode, type[SandboxError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError) -> SandboxError:
    """The SandboxError for a failed call (sync or asyncio), keeping its code and details."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    message = f"{code.name}: {details or 'no details'}"
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (details or ""):
        return InvalidRequest(message, code)  # the message size limit, not overload
    return _BY_CODE.get(code, SandboxError)(message, code)
