"""Sync and async clients over one base: run one program, or stream many.

    with SandboxClient() as client:                   # starts an embedded local server
        client.run("print(1 + 1)").answer             # '2'
        client.run_many(records, progress=True)       # list[Result], in input order

    async with AsyncSandboxClient("sandbox:50051", token=token) as client:
        async for result in client.iter_results(records):   # as they complete
            ...

A program's failure is a Result with a status; only RPC-level failures raise
(`potsandbox.client.errors`), and a batch never raises for one item. The client
pickles as its configuration and opens its channel lazily in each process, so it
can be shipped to multiprocessing, `datasets.map(num_proc=...)` and Ray workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import math
import os
import queue
import random
import socket
import threading
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Sized,
)
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias, TypeVar

import grpc
from tqdm.auto import tqdm

from potsandbox.client import errors
from potsandbox.client.embedded import EmbeddedServer
from potsandbox.client.errors import SandboxError
from potsandbox.executor import wire
from potsandbox.executor.limits import LimitPolicy
from potsandbox.executor.result import Result, Status
from potsandbox.v1 import sandbox_pb2 as pb
from potsandbox.v1 import sandbox_pb2_grpc as pb_grpc

__all__ = ["AsyncSandboxClient", "Item", "SandboxClient", "TLSConfig"]

Item: TypeAlias = str | Mapping[str, Any]
"""A program, or a record with the corpus fields `id`, `program`, `prelude`,
`convention` and `entrypoint` (other fields are ignored)."""

KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
"""Paired with the server, which permits a ping every 10 s even without calls."""

MAX_MESSAGE_BYTES = 128 << 20
"""Above the server's largest response: stdout and stderr at their 16 MiB maximum, each
undecodable byte of them sent as U+FFFD (three bytes), plus answer and error."""

DEFAULT_DEADLINE_S = 300.0
"""Deadline of one `run` call, queueing included; a batch has none unless asked."""

DEFAULT_MAX_RETRIES = 8
DEFAULT_CONCURRENCY = 64
DNS_STREAMS = 4
"""Streams a batch opens against a `dns:///` target, so round_robin spreads it over replicas."""

ORDERED_LOOKAHEAD = 16
"""Ordered output holds at most this many results per unit of concurrency."""

ROTATE_AFTER = 512
"""With several servers, a stream closes after this many items and the next one is placed
by round_robin again: streams opened before every server was connected, or before a new
replica appeared, do not pin a batch to a few servers."""

_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "xds:")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Server verification and, for mTLS, the client's certificate: PEM bytes or file paths."""

    root_ca: bytes | str | Path | None = None
    """CA the server's certificate must chain to; None trusts the system roots."""
    client_cert: bytes | str | Path | None = None
    """Client certificate chain for mTLS; needs `client_key`."""
    client_key: bytes | str | Path | None = None
    """Private key of `client_cert`."""
    server_name: str | None = None
    """Name to check in the server's certificate instead of the target's host."""

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("TLSConfig: client_cert and client_key go together")

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials, reading files now (in the process that opens the channel)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_ca),
            private_key=_pem(self.client_key),
            certificate_chain=_pem(self.client_cert),
        )


def _pem(value: bytes | str | Path | None) -> bytes | None:
    """Bytes are PEM data; a str or Path names a file holding it."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True, slots=True)
class _Options:
    """Per-call settings; None leaves a limit to the server's default."""

    prelude: str | None = None
    convention: str = "auto"
    name: str | None = None
    timeout: float | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    output_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class _Check:
    """The server's validation rules, applied before sending so one bad item cannot end a stream."""

    policy: LimitPolicy
    max_program_bytes: int


@dataclass(frozen=True, slots=True)
class _Item:
    """A validated batch item; its request id is its position, unique within the batch."""

    index: int
    request: pb.ExecuteRequest
    task_id: str


_Ready: TypeAlias = tuple[int, Result]


@dataclass(frozen=True, slots=True)
class _LaneEnd:
    """A stream lane finished; `error` is why it gave up, if it did."""

    error: SandboxError | None


_Event: TypeAlias = _Ready | _LaneEnd | BaseException


class _Action(enum.Enum):
    """What a lane does after its stream broke."""

    RETRY = "retry"
    """Resend the unanswered items on a new stream after a backoff."""
    UNARY = "unary"
    """Run the unanswered items one call each, so the one the server refused fails alone."""
    GIVE_UP = "give_up"
    """Put the items back for the other lanes and stop."""
    RAISE = "raise"
    """Nothing can succeed (credentials): fail the whole batch."""


class _Batch:
    """One batch's bookkeeping, free of I/O and locks (the caller serialises access)."""

    def __init__(
        self,
        items: Iterable[Item],
        prepare: Callable[[int, Item], _Item | Result],
        lookahead: int | None,
    ) -> None:
        self._source = enumerate(items)
        self._prepare = prepare
        self._lookahead = lookahead
        self.resend: deque[_Item] = deque()
        self.pulled = 0
        self.delivered = 0
        """Ordered output: every index below this has been handed to the caller."""
        self.exhausted = False
        self.error: BaseException | None = None
        """Raised by the caller's iterable; re-raised to the caller."""

    def may_pull(self) -> bool:
        """False while ordered output would have to hold back too many results."""
        if self.resend or self._lookahead is None:
            return True
        return self.pulled < self.delivered + self._lookahead

    def pull(self) -> _Item | _Ready | None:
        """The next item to send (resends first), a result decided locally, or None."""
        if self.resend:
            return self.resend.popleft()
        if self.exhausted:
            return None
        try:
            index, raw = next(self._source)
        except StopIteration:
            self.exhausted = True
            return None
        except Exception as exc:
            self.error, self.exhausted = exc, True
            return None
        self.pulled += 1
        prepared = self._prepare(index, raw)
        return prepared if isinstance(prepared, _Item) else (index, prepared)

    def requeue(self, items: Iterable[_Item]) -> None:
        """Put unanswered items back, lowest index first, ahead of fresh input."""
        self.resend.extendleft(sorted(items, key=lambda item: item.index, reverse=True))

    @property
    def drained(self) -> bool:
        """Nothing left to send (items may still be in flight)."""
        return self.exhausted and not self.resend


class _Reorder:
    """Hands results on in input order, or as they come; advances the batch's `delivered`."""

    def __init__(self, batch: _Batch, ordered: bool) -> None:
        self._batch = batch
        self._ordered = ordered
        self._held: dict[int, Result] = {}

    def add(self, index: int, result: Result) -> list[_Ready]:
        if not self._ordered:
            return [(index, result)]
        self._held[index] = result
        out = []
        while self._batch.delivered in self._held:
            position = self._batch.delivered
            out.append((position, self._held.pop(position)))
            self._batch.delivered += 1
        return out


@dataclass
class _Lane:
    """One stream's items in flight; `halted` stops its request iterator."""

    inflight: dict[str, _Item]
    budget: int | None
    """Items this stream may still send before it closes, so the next one is balanced anew."""
    halted: bool = False
    answered: int = 0

    def take(self, item: _Item) -> None:
        """Count an item as sent on this stream."""
        self.inflight[item.request.id] = item
        if self.budget is not None:
            self.budget -= 1


class _BaseClient:
    """Configuration, requests, validation and retry policy shared by both clients."""

    _RUNTIME = ("_pid", "_channel", "_stub", "_check", "_embedded", "_lock", "_loop")
    """Per-process state: never pickled, rebuilt lazily."""

    def __init__(
        self,
        target: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float | None = None,
        memory_mb: int | None = None,
        deadline: float | None = DEFAULT_DEADLINE_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        concurrency: int = DEFAULT_CONCURRENCY,
        streams: int | None = None,
        server_args: Sequence[str] = (),
        start_timeout: float = 120.0,
    ) -> None:
        """Configure a client; nothing connects until the first call.

        Args:
            target: `host:port`, several (a list or comma-separated: round_robin over
                them), or a gRPC URI such as `dns:///sandbox.ns.svc:50051` (round_robin
                over its addresses). None starts an embedded local server.
            token: sent as `authorization: Bearer <token>`.
            tls: TLS or mTLS settings; None is plaintext.
            timeout: default wall-clock limit of a program, seconds (None: server default).
            memory_mb: default memory budget of a program (None: server default).
            deadline: deadline of each `run` call, seconds, retries included.
            max_retries: retries on RESOURCE_EXHAUSTED/UNAVAILABLE (and broken batch
                streams) before giving up.
            backoff: first retry delay ceiling, seconds; doubles per retry, full jitter.
            max_backoff: largest retry delay ceiling, seconds.
            concurrency: default number of batch items in flight at once.
            streams: streams a batch spreads over (default: one per listed target,
                DNS_STREAMS for `dns:` targets, else 1).
            server_args: extra `potsandbox serve` flags for the embedded server.
            start_timeout: seconds the embedded server gets to become healthy.
        """
        self.targets = _split_targets(target)
        if tls is not None and not self.targets:
            raise ValueError("tls needs a target: the embedded server listens on loopback only")
        if max_retries < 0 or concurrency < 1 or (streams is not None and streams < 1):
            raise ValueError("max_retries must be >= 0, concurrency and streams >= 1")
        self.tls = tls
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.deadline = deadline
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = concurrency
        self.streams = streams or max(1, _spread(self.targets))
        self._embedded: EmbeddedServer | None = None
        if not self.targets:
            self._embedded = EmbeddedServer(server_args, token=token, start_timeout=start_timeout)
            token = self._embedded.token
        self.token = token
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        """Forget this process's channel (after a fork, or when unpickled)."""
        self._pid = os.getpid()
        self._channel: Any = None
        self._stub: Any = None
        self._check: _Check | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Configuration only; an embedded server is shared by target, never restarted."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}
        if self._embedded is not None:
            state["targets"] = (self._embedded.start(),)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._embedded = None
        self._lock = threading.Lock()
        self._reset()

    def __repr__(self) -> str:
        where = ",".join(self.targets) or "embedded"
        return f"{type(self).__name__}({where!r}, tls={self.tls is not None})"

    @property
    def target(self) -> str | None:
        """The target in use: the embedded server's once started, else None before then."""
        if self.targets:
            return ",".join(self.targets)
        return self._embedded.target if self._embedded else None

    def _channel_spec(self) -> tuple[str, list[tuple[str, Any]], grpc.ChannelCredentials | None]:
        """Target, options and credentials of this process's channel (starts an embedded server)."""
        targets = self.targets
        if not targets:
            assert self._embedded is not None  # a client without targets always has one
            targets = (self._embedded.start(),)
        options: list[tuple[str, Any]] = [
            *KEEPALIVE_OPTIONS,
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if _spread(targets) > 1:
            options.append(("grpc.lb_policy_name", "round_robin"))
        if self.tls is None:
            return _channel_target(targets), options, None
        server_name = self.tls.server_name or (_host(targets[0]) if len(targets) > 1 else None)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        return _channel_target(targets), options, self.tls.credentials()

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: works over plaintext, unlike call credentials."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _request(self, program: str | bytes, options: _Options, id: str) -> pb.ExecuteRequest:
        """The wire request, with the client's default limits filled in.

        Raises:
            wire.RequestError: the text cannot be encoded as UTF-8.
        """
        timeout = options.timeout if options.timeout is not None else self.timeout
        memory_mb = options.memory_mb if options.memory_mb is not None else self.memory_mb
        return wire.make_request(
            program,
            prelude=options.prelude or "",
            convention=options.convention,
            name=options.name,
            timeout_s=timeout,
            cpu_s=options.cpu,
            memory_mb=memory_mb,
            output_bytes=options.output_bytes,
            id=id,
        )

    def _unary_request(self, program: str | bytes, options: _Options, id: str) -> pb.ExecuteRequest:
        """`_request` for `run`, whose bad input raises InvalidRequest."""
        try:
            return self._request(program, options, id)
        except wire.RequestError as exc:
            raise errors.InvalidRequest(f"{exc.field}: {exc}") from None

    def _prepare(self, index: int, item: Item, options: _Options, check: _Check) -> _Item | Result:
        """A batch item as a validated request, or the error Result the server would give it."""
        task_id = str(index)
        try:
            if isinstance(item, str):
                program, item_options = item, options
            elif isinstance(item, Mapping):
                task_id = str(item["id"]) if item.get("id") is not None else task_id
                program, item_options = _record_program(item), _record_options(item, options)
            else:
                raise wire.RequestError(
                    "program", f"expected str or dict, got {type(item).__name__}"
                )
            request = self._request(program, item_options, id=str(index))
            wire.parse_request(
                request, policy=check.policy, max_program_bytes=check.max_program_bytes
            )
        except wire.RequestError as exc:
            return _error_result("InvalidRequest", f"{exc.field}: {exc}", task_id)
        except Exception as exc:  # e.g. an id whose str() fails: this item's error, not the batch's
            message = f"unreadable item: {type(exc).__name__}: {exc}"
            return _error_result("InvalidRequest", message, task_id)
        return _Item(index, request, task_id)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        return random.uniform(0.0, min(self.max_backoff, self.backoff * 2.0**attempt))

    def _retry_delay(
        self, error: SandboxError, attempt: int, retries: int, deadline_at: float | None
    ) -> float | None:
        """Seconds to wait before retrying, or None when the error is final."""
        if not isinstance(error, errors.Overloaded | errors.Unavailable) or attempt >= retries:
            return None
        delay = self._delay(attempt)
        if deadline_at is not None and time.monotonic() + delay >= deadline_at:
            return None
        return delay

    def _stream_action(self, error: SandboxError, failures: int, unanswered: int) -> _Action:
        """What a lane does after its stream broke with `error` after `failures` empty retries."""
        if isinstance(error, errors.Unauthenticated):
            return _Action.RAISE
        refused = isinstance(error, errors.InvalidRequest) or error.code in _POISON_CODES
        if refused and unanswered:
            return _Action.UNARY
        retryable = isinstance(error, errors.Overloaded | errors.Unavailable)
        if (retryable or error.code is grpc.StatusCode.CANCELLED) and failures < self.max_retries:
            return _Action.RETRY
        return _Action.GIVE_UP

    def _deadline_at(self, deadline: float | None) -> float | None:
        return None if deadline is None else time.monotonic() + deadline

    def _plan(self, concurrency: int | None) -> tuple[int, int, int]:
        """Items in flight in all, streams a batch opens, and each stream's window."""
        total = self.concurrency if concurrency is None else concurrency
        if total < 1:
            raise ValueError(f"concurrency must be >= 1, got {total}")
        lanes = min(self.streams, total)
        return total, lanes, math.ceil(total / lanes)

    def _new_batch(
        self, items: Iterable[Item], options: _Options, check: _Check, ordered: bool, total: int
    ) -> _Batch:
        lookahead = ORDERED_LOOKAHEAD * total if ordered else None
        return _Batch(items, lambda i, item: self._prepare(i, item, options, check), lookahead)


_POISON_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
"""A stream that breaks with these may have hit one bad item: isolate it with unary calls."""


def _record_program(record: Mapping[str, Any]) -> str:
    program = record.get("program")
    if not isinstance(program, str):
        raise wire.RequestError("program", "the record has no `program` string")
    return program


def _record_options(record: Mapping[str, Any], defaults: _Options) -> _Options:
    """A record's own prelude, convention and entrypoint over the batch defaults."""
    return replace(
        defaults,
        prelude=record.get("prelude") or defaults.prelude,
        convention=record.get("convention") or defaults.convention,
        name=record.get("entrypoint") or defaults.name,
    )


def _error_result(error_type: str, message: str, task_id: str) -> Result:
    """The Result of an item that never ran (refused, or the service was unreachable)."""
    return Result(
        status=Status.ERROR, error_type=error_type, error_message=message, task_id=task_id
    )


def _finish(item: _Item, response: pb.ExecuteResponse) -> Result:
    """The item's Result, carrying the caller's id instead of the stream-local one."""
    try:
        return replace(wire.result_from_proto(response), task_id=item.task_id)
    except ValueError as exc:
        return _error_result("ProtocolError", str(exc), item.task_id)


def _failure(item: _Item, error: SandboxError) -> Result:
    return _error_result(type(error).__name__, str(error), item.task_id)


def _check_from(info: pb.ServerInfo) -> _Check:
    policy = LimitPolicy(
        default=wire.limits_from_proto(info.default_limits),
        maximum=wire.limits_from_proto(info.max_limits),
        clamp=info.clamps_limits,
    )
    return _Check(policy, info.max_program_bytes)


def _split_targets(target: str | Sequence[str] | None) -> tuple[str, ...]:
    """A URI stays whole; `a:1,b:2` or a list becomes several host:port targets."""
    if target is None:
        return ()
    if isinstance(target, str):
        parts = [target] if target.startswith(_SCHEMES) else target.split(",")
    else:
        parts = list(target)
    targets = tuple(p.strip() for p in parts if p.strip())
    if not targets:
        raise ValueError("empty target")
    return targets


def _spread(targets: Sequence[str]) -> int:
    """Servers the targets name (DNS_STREAMS for a DNS name); above 1 means round_robin."""
    if len(targets) != 1:
        return len(targets)
    if targets[0].startswith("dns:"):
        return DNS_STREAMS
    if targets[0].startswith(("ipv4:", "ipv6:")):
        return targets[0].count(",") + 1
    return 1


def _host(target: str) -> str:
    return target.rpartition(":")[0].strip("[]") or target


def _channel_target(targets: Sequence[str]) -> str:
    """One target as given; several as `ipv4:a:p,b:p` (gRPC's static-address resolver)."""
    if len(targets) == 1:
        return targets[0]
    addresses = [_resolve(t) for t in targets]
    family = "ipv4" if all(f == socket.AF_INET for f, _ in addresses) else "ipv6"
    if family == "ipv6" and any(f != socket.AF_INET6 for f, _ in addresses):
        raise ValueError(f"targets {list(targets)} mix IPv4 and IPv6 addresses")
    return f"{family}:" + ",".join(address for _, address in addresses)


def _resolve(target: str) -> tuple[socket.AddressFamily, str]:
    """`host:port` as an address gRPC's ipv4:/ipv6: resolvers take, IPv4 preferred."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or target.startswith(_SCHEMES):
        raise ValueError(f"target {target!r} in a list must be host:port")
    infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    family, *_, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)
    address = str(sockaddr[0])
    return family, (f"{address}:{port}" if family == socket.AF_INET else f"[{address}]:{port}")


def _remaining(deadline_at: float | None) -> float | None:
    """Seconds left before the deadline, for gRPC's `timeout`.

    Raises:
        DeadlineExceeded: the deadline has passed; no call is made.
    """
    if deadline_at is None:
        return None
    left = deadline_at - time.monotonic()
    if left <= 0:
        raise errors.DeadlineExceeded(
            "DEADLINE_EXCEEDED: the deadline passed before the call",
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    return left


def _progress_bar(items: Iterable[Item], enabled: bool) -> tqdm[Any]:
    """A tqdm bar on stderr; a disabled one costs nothing."""
    total = len(items) if isinstance(items, Sized) else None
    return tqdm(total=total, unit="program", dynamic_ncols=True, disable=not enabled)


def _ordered_list(pairs: Iterable[_Ready]) -> list[Result]:
    by_index = dict(pairs)
    return [by_index[i] for i in range(len(by_index))]


class _SyncRun:
    """A batch in progress on threads: one condition guards the batch and every lane."""

    def __init__(self, batch: _Batch, lanes: int, window: int, deadline_at: float | None) -> None:
        self.batch = batch
        self.window = window
        self.rotate_after = ROTATE_AFTER if lanes > 1 else None
        self.deadline_at = deadline_at
        self.cond = threading.Condition()
        self.events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.calls: set[Any] = set()
        """Open streams (gRPC call objects, whose cancel() grpc-stubs leaves untyped)."""

    def stop(self) -> None:
        """Wake every waiting lane and cancel every open stream."""
        with self.cond:
            self.stopping.set()
            calls = list(self.calls)
            self.cond.notify_all()
        for call in calls:
            call.cancel()


class SandboxClient(_BaseClient):
    """Blocking client; safe to share between threads, pickles as its configuration."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the embedded server, if this process started one."""
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._reset()
        if self._embedded is not None:
            self._embedded.stop()

    def run(
        self,
        program: str | bytes,
        *,
        prelude: str | None = None,
        convention: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        id: str = "",
        deadline: float | None = None,
        max_retries: int | None = None,
    ) -> Result:
        """Run one program (unary Execute) and return its Result, whatever the program did.

        Args:
            deadline: seconds for the call, retries included (default: the client's).
            max_retries: retries on overload/unavailability (default: the client's).

        Raises:
            InvalidRequest, Unauthenticated, Overloaded, Unavailable, DeadlineExceeded:
                the RPC failed (see potsandbox.client.errors).
        """
        options = _Options(prelude, convention, name, timeout, cpu, memory_mb, output_bytes)
        request = self._unary_request(program, options, id)
        response = self._call(
            lambda stub, left: stub.Execute(request, timeout=left, metadata=self._metadata()),
            self.max_retries if max_retries is None else max_retries,
            deadline=self.deadline if deadline is None else deadline,
        )
        return wire.result_from_proto(response)

    def info(self) -> pb.ServerInfo:
        """The server's GetInfo: version, capacity, isolation layers, limits."""
        return self._call(
            lambda stub, left: stub.GetInfo(
                pb.GetInfoRequest(), timeout=left, metadata=self._metadata()
            ),
            self.max_retries,
            deadline=self.deadline,
        )

    def run_many(
        self,
        items: Iterable[Item],
        *,
        concurrency: int | None = None,
        progress: bool = False,
        prelude: str | None = None,
        convention: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        deadline: float | None = None,
    ) -> list[Result]:
        """One Result per item, in input order, over streaming calls.

        Items are programs or corpus records (`id`, `program`, `prelude`,
        `convention`, `entrypoint`); the keyword settings apply where a record has
        none. An item the server would refuse gets an error Result
        (error_type "InvalidRequest") without being sent; a broken stream is
        reopened and only unanswered items are resent. `task_id` is the record's
        `id`, else the item's position.

        Args:
            concurrency: items in flight at once (default: the client's).
            progress: show a tqdm bar on stderr.
            deadline: seconds for the whole batch; items without a result by then
                get error Results (error_type "DeadlineExceeded").

        Raises:
            Unauthenticated: the server refused the credentials.
            SandboxError: the server could not be reached to start the batch.
        """
        options = _Options(prelude, convention, name, timeout, cpu, memory_mb, output_bytes)
        with _progress_bar(items, progress) as bar:
            pairs = self._iter_indexed(items, options, False, concurrency, deadline, bar)
            with contextlib.closing(pairs):
                return _ordered_list(pairs)

    def iter_results(
        self,
        items: Iterable[Item],
        *,
        ordered: bool = False,
        concurrency: int | None = None,
        progress: bool = False,
        prelude: str | None = None,
        convention: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        deadline: float | None = None,
    ) -> Iterator[Result]:
        """`run_many` as a generator: results as they complete, or in input order.

        Reads `items` lazily and keeps a bounded number of items and results in
        memory, so it suits inputs larger than memory. Closing the generator
        cancels the streams.
        """
        options = _Options(prelude, convention, name, timeout, cpu, memory_mb, output_bytes)
        with _progress_bar(items, progress) as bar:
            pairs = self._iter_indexed(items, options, ordered, concurrency, deadline, bar)
            with contextlib.closing(pairs):
                for _, result in pairs:
                    yield result

    def _stub_for_process(self) -> pb_grpc.SandboxStub:
        """This process's stub, opening the channel (and embedded server) on first use."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset()  # a forked child must not touch the parent's channel
            if self._stub is None:
                target, options, credentials = self._channel_spec()
                if credentials is None:
                    self._channel = grpc.insecure_channel(target, options)
                else:
                    self._channel = grpc.secure_channel(target, credentials, options)
                self._stub = pb_grpc.SandboxStub(self._channel)
            stub: pb_grpc.SandboxStub = self._stub
            return stub

    def _call(
        self,
        invoke: Callable[[pb_grpc.SandboxStub, float | None], T],
        retries: int,
        *,
        deadline: float | None,
        until: float | None = None,
    ) -> T:
        """One unary call with retries on overload/unavailability.

        The call ends by `until` (monotonic time) if given, else `deadline` seconds after
        the channel is open: starting an embedded server does not count.
        """
        stub = self._stub_for_process()
        deadline_at = until if until is not None else self._deadline_at(deadline)
        for attempt in itertools.count():
            try:
                return invoke(stub, _remaining(deadline_at))
            except grpc.RpcError as exc:
                error = errors.from_rpc_error(exc)
            delay = self._retry_delay(error, attempt, retries, deadline_at)
            if delay is None:
                raise error
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _batch_check(self) -> _Check:
        if self._check is None or self._pid != os.getpid():
            info = self.info()
            with self._lock:
                self._check = _check_from(info)
        return self._check

    def _iter_indexed(
        self,
        items: Iterable[Item],
        options: _Options,
        ordered: bool,
        concurrency: int | None,
        deadline: float | None,
        bar: tqdm[Any],
    ) -> Generator[_Ready, None, None]:
        """(index, Result) pairs from lane threads, each lane one stream at a time."""
        total, lanes, window = self._plan(concurrency)
        batch = self._new_batch(items, options, self._batch_check(), ordered, total)
        run = _SyncRun(batch, lanes, window, self._deadline_at(deadline))
        threads = [
            threading.Thread(target=self._lane, args=(run,), name="potsandbox-stream", daemon=True)
            for _ in range(lanes)
        ]
        for thread in threads:
            thread.start()
        reorder = _Reorder(batch, ordered)
        try:
            last_error: SandboxError | None = None
            running = lanes
            while running:
                event = run.events.get()
                if isinstance(event, _LaneEnd):
                    running -= 1
                    last_error = event.error or last_error
                    continue
                if isinstance(event, BaseException):
                    raise event
                with run.cond:
                    ready = reorder.add(*event)
                    run.cond.notify_all()
                yield from _counted(ready, bar)
            if batch.error is not None:
                raise batch.error
            for index, result in _fail_rest(batch, last_error):
                yield from _counted(reorder.add(index, result), bar)
        finally:
            run.stop()
            for thread in threads:
                thread.join(timeout=10.0)

    def _lane(self, run: _SyncRun) -> None:
        """Streams one after another until the batch is drained; a break resends the unanswered."""
        error: SandboxError | None = None
        failures = 0
        try:
            while not run.stopping.is_set():
                with run.cond:
                    if run.batch.drained:
                        break
                lane = _Lane({}, run.rotate_after)
                error = self._stream_once(run, lane)
                leftover = self._halt(run, lane)
                if run.stopping.is_set():
                    return
                failures = 0 if lane.answered else failures
                if error is None:
                    self._requeue(run, leftover)
                    continue
                action = self._stream_action(error, failures, len(leftover))
                if action is _Action.RAISE:
                    run.events.put(error)
                    return
                if action is _Action.UNARY:
                    for item in leftover:
                        run.events.put((item.index, self._run_item(item, run.deadline_at)))
                    error = None
                    continue
                self._requeue(run, leftover)
                if action is _Action.GIVE_UP:
                    return
                run.stopping.wait(self._delay(failures))
                failures += 1
            error = None
        except Exception as exc:
            run.events.put(exc)
        finally:
            run.events.put(_LaneEnd(error))

    def _stream_once(self, run: _SyncRun, lane: _Lane) -> SandboxError | None:
        """One ExecuteStream call; returns why it broke, or None when it ended normally."""
        try:
            timeout = _remaining(run.deadline_at)
        except errors.DeadlineExceeded as exc:
            return exc
        call: Any = self._stub_for_process().ExecuteStream(
            self._requests(run, lane), timeout=timeout, metadata=self._metadata()
        )
        with run.cond:
            run.calls.add(call)
        if run.stopping.is_set():
            call.cancel()
        try:
            for response in call:
                with run.cond:
                    item = lane.inflight.pop(response.id, None)
                    run.cond.notify_all()
                if item is not None:
                    lane.answered += 1
                    run.events.put((item.index, _finish(item, response)))
        except grpc.RpcError as exc:
            return errors.from_rpc_error(exc)
        finally:
            with run.cond:
                run.calls.discard(call)
        return None

    def _requests(self, run: _SyncRun, lane: _Lane) -> Iterator[pb.ExecuteRequest]:
        """The stream's request iterator (gRPC's sender thread): waits for room in the window."""
        while True:
            with run.cond:
                run.cond.wait_for(
                    lambda: (
                        run.stopping.is_set()
                        or lane.halted
                        or (len(lane.inflight) < run.window and run.batch.may_pull())
                    )
                )
                if run.stopping.is_set() or lane.halted or lane.budget == 0:
                    return
                pulled = run.batch.pull()
                if pulled is None:
                    return
                if isinstance(pulled, _Item):
                    lane.take(pulled)
            if isinstance(pulled, _Item):
                yield pulled.request
            else:
                run.events.put(pulled)

    def _halt(self, run: _SyncRun, lane: _Lane) -> list[_Item]:
        """Stop the lane's request iterator and take back what it left unanswered."""
        with run.cond:
            lane.halted = True
            leftover = list(lane.inflight.values())
            lane.inflight.clear()
            run.cond.notify_all()
        return leftover

    def _requeue(self, run: _SyncRun, items: list[_Item]) -> None:
        with run.cond:
            run.batch.requeue(items)
            run.cond.notify_all()

    def _run_item(self, item: _Item, deadline_at: float | None) -> Result:
        """One batch item over a unary call; an RPC failure becomes its error Result."""
        try:
            response = self._call(
                lambda stub, left: stub.Execute(
                    item.request, timeout=left, metadata=self._metadata()
                ),
                self.max_retries,
                deadline=self.deadline,
                until=deadline_at,
            )
        except SandboxError as error:
            return _failure(item, error)
        return _finish(item, response)


def _counted(ready: list[_Ready], bar: tqdm[Any]) -> list[_Ready]:
    if ready:
        bar.update(len(ready))
    return ready


def _fail_rest(batch: _Batch, error: SandboxError | None) -> Iterator[_Ready]:
    """Every item still unsent when all lanes gave up, as an error Result (a batch never raises)."""
    error = error or SandboxError("every stream ended before the batch was done")
    while (pulled := batch.pull()) is not None:
        yield (pulled.index, _failure(pulled, error)) if isinstance(pulled, _Item) else pulled


class _AsyncRun:
    """A batch in progress on tasks of one event loop."""

    def __init__(self, batch: _Batch, lanes: int, window: int, deadline_at: float | None) -> None:
        self.batch = batch
        self.window = window
        self.rotate_after = ROTATE_AFTER if lanes > 1 else None
        self.deadline_at = deadline_at
        self.cond = asyncio.Condition()
        self.events: asyncio.Queue[_Event] = asyncio.Queue()


class AsyncSandboxClient(_BaseClient):
    """asyncio client with the same methods; one channel per event loop and process."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel and stop the embedded server, if this process started one."""
        channel, same_place = self._channel, self._pid == os.getpid()
        if channel is not None and same_place and self._loop is asyncio.get_running_loop():
            await channel.close()
        self._reset()
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)

    async def run(
        self,
        program: str | bytes,
        *,
        prelude: str | None = None,
        convention: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        id: str = "",
        deadline: float | None = None,
        max_retries: int | None = None,
    ) -> Result:
        """Run one program (unary Execute); see SandboxClient.run."""
        options = _Options(prelude, convention, name, timeout, cpu, memory_mb, output_bytes)
        request = self._unary_request(program, options, id)
        response = await self._call(
            lambda stub, left: stub.Execute(request, timeout=left, metadata=self._metadata()),
            self.max_retries if max_retries is None else max_retries,
            deadline=self.deadline if deadline is None else deadline,
        )
        return wire.result_from_proto(response)

    async def info(self) -> pb.ServerInfo:
        """The server's GetInfo: version, capacity, isolation layers, limits."""
        return await self._call(
            lambda stub, left: stub.GetInfo(
                pb.GetInfoRequest(), timeout=left, metadata=self._metadata()
            ),
            self.max_retries,
            deadline=self.deadline,
        )

    async def run_many(
        self,
        items: Iterable[Item],
        *,
        concurrency: int | None = None,
        progress: bool = False,
        prelude: str | None = None,
        convention: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        deadline: float | None = None,
    ) -> list[Result]:
        """One Result per item, in input order; see SandboxClient.run_many."""
        options = _Options(prelude, convention, name, timeout, cpu, memory_mb, output_bytes)
        with _progress_bar(items, progress) as bar:
            pairs = self._iter_indexed(items, options, False, concurrency, deadline, bar)
            async with contextlib.aclosing(pairs):
                return _ordered_list([pair async for pair in pairs])

    async def iter_results(
        self,
        items: Iterable[Item],
        *,
        ordered: bool = False,
        concurrency: int | None = None,
        progress: bool = False,
        prelude: str | None = None,
        convention: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        output_bytes: int | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[Result]:
        """Results as they complete (or in input order); see SandboxClient.iter_results."""
        options = _Options(prelude, convention, name, timeout, cpu, memory_mb, output_bytes)
        with _progress_bar(items, progress) as bar:
            pairs = self._iter_indexed(items, options, ordered, concurrency, deadline, bar)
            async with contextlib.aclosing(pairs):
                async for _, result in pairs:
                    yield result

    async def _stub_for_loop(self) -> pb_grpc.SandboxAsyncStub:
        """This loop's stub, opening the channel (and embedded server) on first use."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid() or self._loop is not loop:
            self._reset()  # aio channels belong to one loop in one process
            self._loop = loop
        if self._stub is None:
            if self._embedded is not None:
                await asyncio.to_thread(self._embedded.start)
            target, options, credentials = self._channel_spec()
            if self._stub is None:  # another task may have opened it meanwhile
                if credentials is None:
                    self._channel = grpc.aio.insecure_channel(target, options)
                else:
                    self._channel = grpc.aio.secure_channel(target, credentials, options)
                self._stub = pb_grpc.SandboxStub(self._channel)
        stub: pb_grpc.SandboxAsyncStub = self._stub
        return stub

    async def _call(
        self,
        invoke: Callable[[pb_grpc.SandboxAsyncStub, float | None], Awaitable[T]],
        retries: int,
        *,
        deadline: float | None,
        until: float | None = None,
    ) -> T:
        """One unary call with retries on overload/unavailability; see SandboxClient._call."""
        stub = await self._stub_for_loop()
        deadline_at = until if until is not None else self._deadline_at(deadline)
        for attempt in itertools.count():
            try:
                return await invoke(stub, _remaining(deadline_at))
            except grpc.RpcError as exc:
                error = errors.from_rpc_error(exc)
            delay = self._retry_delay(error, attempt, retries, deadline_at)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _batch_check(self) -> _Check:
        if self._check is None or self._pid != os.getpid():
            self._check = _check_from(await self.info())
        return self._check

    async def _iter_indexed(
        self,
        items: Iterable[Item],
        options: _Options,
        ordered: bool,
        concurrency: int | None,
        deadline: float | None,
        bar: tqdm[Any],
    ) -> AsyncGenerator[_Ready, None]:
        """(index, Result) pairs from lane tasks, each lane one stream at a time."""
        total, lanes, window = self._plan(concurrency)
        batch = self._new_batch(items, options, await self._batch_check(), ordered, total)
        run = _AsyncRun(batch, lanes, window, self._deadline_at(deadline))
        tasks = [asyncio.create_task(self._lane(run)) for _ in range(lanes)]
        reorder = _Reorder(batch, ordered)
        try:
            last_error: SandboxError | None = None
            running = lanes
            while running:
                event = await run.events.get()
                if isinstance(event, _LaneEnd):
                    running -= 1
                    last_error = event.error or last_error
                    continue
                if isinstance(event, BaseException):
                    raise event
                async with run.cond:
                    ready = reorder.add(*event)
                    run.cond.notify_all()
                for pair in _counted(ready, bar):
                    yield pair
            if batch.error is not None:
                raise batch.error
            for index, result in _fail_rest(batch, last_error):
                for pair in _counted(reorder.add(index, result), bar):
                    yield pair
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _lane(self, run: _AsyncRun) -> None:
        """Streams one after another until the batch is drained; see SandboxClient._lane."""
        error: SandboxError | None = None
        failures = 0
        try:
            while not run.batch.drained:
                lane = _Lane({}, run.rotate_after)
                error = await self._stream_once(run, lane)
                leftover = await self._halt(run, lane)
                failures = 0 if lane.answered else failures
                if error is None:
                    await self._requeue(run, leftover)
                    continue
                action = self._stream_action(error, failures, len(leftover))
                if action is _Action.RAISE:
                    run.events.put_nowait(error)
                    return
                if action is _Action.UNARY:
                    for item in leftover:
                        run.events.put_nowait(
                            (item.index, await self._run_item(item, run.deadline_at))
                        )
                    error = None
                    continue
                await self._requeue(run, leftover)
                if action is _Action.GIVE_UP:
                    return
                await asyncio.sleep(self._delay(failures))
                failures += 1
            error = None
        except Exception as exc:
            run.events.put_nowait(exc)
        finally:
            run.events.put_nowait(_LaneEnd(error))

    async def _stream_once(self, run: _AsyncRun, lane: _Lane) -> SandboxError | None:
        """One ExecuteStream call; returns why it broke, or None when it ended normally."""
        try:
            timeout = _remaining(run.deadline_at)
        except errors.DeadlineExceeded as exc:
            return exc
        stub = await self._stub_for_loop()
        call = stub.ExecuteStream(
            self._requests(run, lane), timeout=timeout, metadata=self._metadata()
        )
        try:
            async for response in call:
                async with run.cond:
                    item = lane.inflight.pop(response.id, None)
                    run.cond.notify_all()
                if item is not None:
                    lane.answered += 1
                    run.events.put_nowait((item.index, _finish(item, response)))
        except grpc.RpcError as exc:
            return errors.from_rpc_error(exc)
        finally:
            call.cancel()
        return None

    async def _requests(self, run: _AsyncRun, lane: _Lane) -> AsyncIterator[pb.ExecuteRequest]:
        """The stream's request iterator: waits for room in the window."""
        while True:
            async with run.cond:
                await run.cond.wait_for(
                    lambda: (
                        lane.halted or (len(lane.inflight) < run.window and run.batch.may_pull())
                    )
                )
                if lane.halted or lane.budget == 0:
                    return
                pulled = run.batch.pull()
                if pulled is None:
                    return
                if isinstance(pulled, _Item):
                    lane.take(pulled)
            if isinstance(pulled, _Item):
                yield pulled.request
            else:
                run.events.put_nowait(pulled)

    async def _halt(self, run: _AsyncRun, lane: _Lane) -> list[_Item]:
        """Stop the lane's request iterator and take back what it left unanswered."""
        async with run.cond:
            lane.halted = True
            leftover = list(lane.inflight.values())
            lane.inflight.clear()
            run.cond.notify_all()
        return leftover

    async def _requeue(self, run: _AsyncRun, items: list[_Item]) -> None:
        async with run.cond:
            run.batch.requeue(items)
            run.cond.notify_all()

    async def _run_item(self, item: _Item, deadline_at: float | None) -> Result:
        """One batch item over a unary call; an RPC failure becomes its error Result."""
        try:
            response = await self._call(
                lambda stub, left: stub.Execute(
                    item.request, timeout=left, metadata=self._metadata()
                ),
                self.max_retries,
                deadline=self.deadline,
                until=deadline_at,
            )
        except SandboxError as error:
            return _failure(item, error)
        return _finish(item, response)
