"""Conversions between the wire messages (potsandbox.v1) and the engine's records.

Shared by the server and the client, so it needs only the standard library and
protobuf. The server calls `parse_request` to turn an ExecuteRequest into a
validated `TaskSpec` (or a `RequestError` naming the bad field, which becomes
INVALID_ARGUMENT) and `result_to_proto` to answer; the client calls
`make_request` and `result_from_proto`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from potsandbox.executor.conventions import Convention
from potsandbox.executor.errors import ConfigError, LimitError
from potsandbox.executor.limits import LimitPolicy, Limits
from potsandbox.executor.result import Result, Status
from potsandbox.v1 import sandbox_pb2 as pb

__all__ = [
    "RequestError",
    "TaskSpec",
    "limits_from_proto",
    "limits_to_proto",
    "make_request",
    "parse_request",
    "result_from_proto",
    "result_to_proto",
    "status_from_proto",
    "status_to_proto",
]


class RequestError(ConfigError):
    """An ExecuteRequest is invalid; `field` is its proto path (e.g. `limits.timeout_s`)."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A validated request: everything the executor needs to run one program."""

    program: str
    """Python source to run, decoded from UTF-8."""
    prelude: str
    """Source run first in the same namespace; empty for none."""
    convention: Convention
    """How the answer is read once the program finishes."""
    limits: Limits
    """Resolved limits: every field set, none above the server maximum."""
    id: str
    """Caller's id, returned untouched as Result.task_id."""


# Built by name at import so a Status added on one side without the other fails
# at start-up instead of mid-run.
_STATUS_TO_PROTO: dict[Status, pb.Status.ValueType] = {
    status: pb.Status.Value(f"STATUS_{status.name}") for status in Status
}
_STATUS_FROM_PROTO: dict[int, Status] = {v: k for k, v in _STATUS_TO_PROTO.items()}

_SURROGATE = re.compile("[\ud800-\udfff]")


def status_to_proto(status: Status) -> pb.Status.ValueType:
    """The wire enum value of `status`."""
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: int) -> Status:
    """The Status of a wire enum value.

    Raises:
        ValueError: STATUS_UNSPECIFIED or a number this version does not know
            (a server newer than the client, or a broken one).
    """
    try:
        return _STATUS_FROM_PROTO[value]
    except KeyError:
        raise ValueError(f"response carries unknown status {value}") from None


def limits_to_proto(limits: Limits) -> pb.Limits:
    """A Limits message with every field set (ServerInfo defaults and maxima)."""
    return pb.Limits(
        timeout_s=limits.timeout_s,
        cpu_s=limits.cpu_s,
        memory_mb=limits.memory_mb,
        output_bytes=limits.output_bytes,
    )


def limits_from_proto(msg: pb.Limits, *, default: Limits | None = None) -> Limits:
    """Limits from a message; a field left unset takes its value from `default`."""
    base = default or Limits()
    return Limits(
        timeout_s=msg.timeout_s if msg.HasField("timeout_s") else base.timeout_s,
        cpu_s=msg.cpu_s if msg.HasField("cpu_s") else base.cpu_s,
        memory_mb=msg.memory_mb if msg.HasField("memory_mb") else base.memory_mb,
        output_bytes=msg.output_bytes if msg.HasField("output_bytes") else base.output_bytes,
    )


def make_request(
    program: str | bytes,
    *,
    prelude: str | bytes = "",
    convention: str | Convention | None = None,
    name: str | None = None,
    timeout_s: float | None = None,
    cpu_s: float | None = None,
    memory_mb: int | None = None,
    output_bytes: int | None = None,
    id: str = "",
) -> pb.ExecuteRequest:
    """Build an ExecuteRequest; `None` leaves a setting to the server's default.

    Validation is the server's (`parse_request`), so a client never disagrees
    with the server it talks to; only text that cannot be UTF-8 at all fails here.

    Raises:
        RequestError: a text field (program, prelude, convention, name, id) is a str
            holding lone surrogates.
    """
    limits = pb.Limits(
        timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, output_bytes=output_bytes
    )
    return pb.ExecuteRequest(
        program=_encode_source(program, "program"),
        prelude=_encode_source(prelude, "prelude"),
        convention=_checked_text(str(convention) if convention is not None else "", "convention"),
        name=_checked_text(name or "", "name"),
        limits=limits if limits.ListFields() else None,
        id=_checked_text(id, "id"),
    )


def _encode_source(text: str | bytes, field: str) -> bytes:
    """UTF-8 bytes for the wire; bytes pass through for the server to judge."""
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(field, f"{field} is not encodable as UTF-8 ({e.reason})") from None


def _checked_text(text: str, field: str) -> str:
    """`text` for a protobuf string field, which must encode as UTF-8."""
    if not text.isascii():
        _encode_source(text, field)
    return text


def parse_request(
    req: pb.ExecuteRequest, *, policy: LimitPolicy, max_program_bytes: int
) -> TaskSpec:
    """Validate a request and resolve its defaults; the server's only gate for input.

    Checked in order: program, prelude, convention and name, limits. Sizes are
    checked before decoding so an oversized request costs no more than its bytes.

    Raises:
        RequestError: the first invalid field, named by its proto path.
    """
    program = _decode_source(req.program, "program", max_program_bytes)
    if not program.strip():
        raise RequestError("program", "program is empty")
    prelude = _decode_source(req.prelude, "prelude", max_program_bytes)
    convention = _parse_convention(req.convention, req.name)
    limits = _resolve_limits(req.limits if req.HasField("limits") else None, policy)
    return TaskSpec(
        program=program, prelude=prelude, convention=convention, limits=limits, id=req.id
    )


def _decode_source(raw: bytes, field: str, max_bytes: int) -> str:
    """Strict UTF-8 decode of a source field within the size limit.

    Raises:
        RequestError: over `max_bytes`, or not valid UTF-8 (the message gives the byte offset).
    """
    if len(raw) > max_bytes:
        raise RequestError(field, f"{field} is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(
            field, f"{field} is not valid UTF-8 at byte {e.start}: {e.reason}"
        ) from None


def _parse_convention(text: str, name: str) -> Convention:
    """The requested convention, with errors attributed to `name` when it is the culprit.

    Raises:
        RequestError: `name` is not an identifier, or `convention` is unknown or malformed.
    """
    if name and not name.isidentifier():
        raise RequestError("name", f"name {name!r} is not a Python identifier")
    try:
        return Convention.parse(text, name or None)
    except ConfigError as e:
        raise RequestError("convention", str(e)) from None


def _resolve_limits(msg: pb.Limits | None, policy: LimitPolicy) -> Limits:
    """Fill unset limits from the policy and check the rest against its maxima.

    Raises:
        RequestError: a limit is not finite, not positive, or above the maximum
            (unless the policy clamps), named as `limits.<field>`.
    """
    if msg is None:
        return policy.resolve()
    try:
        return policy.resolve(
            timeout_s=msg.timeout_s if msg.HasField("timeout_s") else None,
            cpu_s=msg.cpu_s if msg.HasField("cpu_s") else None,
            memory_mb=msg.memory_mb if msg.HasField("memory_mb") else None,
            output_bytes=msg.output_bytes if msg.HasField("output_bytes") else None,
        )
    except LimitError as e:
        raise RequestError(f"limits.{e.field}", str(e)) from None


def result_to_proto(result: Result) -> pb.ExecuteResponse:
    """The wire form of a Result; never fails on odd text from the program.

    Answers and messages are rendered from untrusted objects and may hold lone
    surrogates, which protobuf refuses to serialize; they become U+FFFD.
    """
    return pb.ExecuteResponse(
        id=_text(result.task_id),
        status=status_to_proto(result.status),
        answer=_optional_text(result.answer),
        answer_number=result.answer_number,
        convention=_text(result.convention),
        stdout=_text(result.stdout),
        stderr=_text(result.stderr),
        truncated=result.truncated,
        error_type=_optional_text(result.error_type),
        error_message=_optional_text(result.error_message),
        error_line=result.error_line,
        exit_code=result.exit_code,
        signal=result.signal,
        wall_time_s=result.wall_time_s,
        cpu_time_s=result.cpu_time_s,
        peak_memory_mb=result.peak_memory_mb,
    )


def _text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD, so it encodes as UTF-8."""
    if text.isascii():  # the common case, checked without scanning for surrogates
        return text
    return _SURROGATE.sub("\ufffd", text)


def _optional_text(text: str | None) -> str | None:
    """`_text` that keeps None (an unset optional field)."""
    return None if text is None else _text(text)


def result_from_proto(msg: pb.ExecuteResponse) -> Result:
    """The Result a response carries; unset optional fields become None.

    Raises:
        ValueError: the status is STATUS_UNSPECIFIED or unknown to this version.
    """
    return Result(
        status=status_from_proto(msg.status),
        answer=msg.answer if msg.HasField("answer") else None,
        answer_number=msg.answer_number if msg.HasField("answer_number") else None,
        convention=msg.convention,
        stdout=msg.stdout,
        stderr=msg.stderr,
        truncated=msg.truncated,
        error_type=msg.error_type if msg.HasField("error_type") else None,
        error_message=msg.error_message if msg.HasField("error_message") else None,
        error_line=msg.error_line if msg.HasField("error_line") else None,
        exit_code=msg.exit_code if msg.HasField("exit_code") else None,
        signal=msg.signal if msg.HasField("signal") else None,
        wall_time_s=msg.wall_time_s,
        cpu_time_s=msg.cpu_time_s,
        peak_memory_mb=msg.peak_memory_mb,
        task_id=msg.id,
    )
