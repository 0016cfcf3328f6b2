"""The gRPC service: validation, admission, deadlines, health, reflection, auth, drain.

Zygotes are started before any gRPC object exists. Program outcomes are responses
with a status; gRPC error codes are only for bad requests (INVALID_ARGUMENT),
overload (RESOURCE_EXHAUSTED), draining (UNAVAILABLE) and auth (UNAUTHENTICATED).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from potsandbox.executor import config as config_module
from potsandbox.executor import logs, wire
from potsandbox.executor.auth import TokenInterceptor
from potsandbox.executor.config import ServerConfig
from potsandbox.executor.errors import ConfigError, ExecutorError
from potsandbox.executor.limits import largest_result_bytes
from potsandbox.executor.result import Result, Status
from potsandbox.executor.runner import AsyncExecutor
from potsandbox.v1 import sandbox_pb2 as pb
from potsandbox.v1 import sandbox_pb2_grpc as pb_grpc

log = logging.getLogger("potsandbox.server")

if TYPE_CHECKING:  # the stubs' generics do not exist at run time
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Sandbox"].full_name
DEADLINE_MARGIN_S = 0.05
"""Kept from the caller's deadline so the verdict can still travel back."""

KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Long-lived clients reconnect now and then, so DNS round-robin sees new replicas.
    ("grpc.max_connection_age_ms", 600_000),
)
"""Paired with the client's keepalive (30 s ping), which this server permits."""


def version() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("potsandbox")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Admission:
    """Counts accepted tasks (running + queued) against one bound.

    `release` is synchronous, so a stream gives a task's place back from the task's
    done-callback, which runs even for a task cancelled before its first step: releasing
    inside the task lost that place whenever a stream ended early, until none was left.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        """Take a place if one is free, without waiting."""
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    async def acquire(self) -> None:
        """Wait for a place (streams wait; that is their flow control)."""
        while self.count >= self.limit:
            freed = asyncio.get_running_loop().create_future()
            self._waiting.append(freed)
            try:
                await freed
            except asyncio.CancelledError:
                if freed.done() and not freed.cancelled():
                    self._wake_one()  # the place it was woken for goes to the next
                raise
        self.count += 1

    def release(self) -> None:
        """Give a place back."""
        self.count -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            freed = self._waiting.popleft()
            if not freed.done():
                freed.set_result(None)
                return


class SandboxService(pb_grpc.SandboxServicer):
    """Execute, ExecuteStream and GetInfo over an AsyncExecutor."""

    def __init__(
        self, executor: AsyncExecutor, config: ServerConfig, metrics: object | None = None
    ) -> None:
        self.executor = executor
        self.config = config
        self.metrics = metrics
        self.admission = Admission(executor.pool.capacity + config.queue_size)
        self.draining = False

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        spec = await self._parse(request, context, require_id=False)
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is draining")
        if not self.admission.try_acquire():
            self._count_rejection("RESOURCE_EXHAUSTED")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"queue full ({self.admission.limit} tasks accepted); retry with backoff",
            )
        try:
            result = await self._run(spec, context)
        finally:
            self.admission.release()
        return wire.result_to_proto(result)

    async def ExecuteStream(
        self, request_iterator: AsyncIterator[pb.ExecuteRequest], context: Context
    ) -> AsyncIterator[pb.ExecuteResponse]:
        """Results in completion order; reading pauses while the stream's window is full.

        A task holds its place in the window until its result has been handed to gRPC,
        which waits for a client that does not read: so a stream holds at most the window's
        results, where releasing at completion let a slow reader's results pile up.
        """
        done: asyncio.Queue[asyncio.Task[Result] | None] = asyncio.Queue()
        window = asyncio.Semaphore(self.config.stream_window)
        running: set[asyncio.Task[Result]] = set()
        failure: list[wire.RequestError] = []

        def finished(task: asyncio.Task[Result]) -> None:
            running.discard(task)
            self.admission.release()
            done.put_nowait(task)

        async def feed() -> None:
            try:
                async for request in request_iterator:
                    try:
                        spec = self._validate(request, require_id=True)
                    except wire.RequestError as exc:
                        message = f"request id={request.id!r}: {exc}"
                        failure.append(wire.RequestError(exc.field, message))
                        return
                    await window.acquire()
                    await self.admission.acquire()
                    task = asyncio.get_running_loop().create_task(self._run(spec, context))
                    running.add(task)
                    task.add_done_callback(finished)
            finally:
                done.put_nowait(None)

        feeder = asyncio.get_running_loop().create_task(feed())
        input_open = True
        try:
            while input_open or running or not done.empty():
                item = await done.get()
                if item is None:
                    input_open = False
                    continue
                if not item.cancelled():
                    yield wire.result_to_proto(item.result())
                window.release()
            await feeder
            if failure:
                self._count_rejection("INVALID_ARGUMENT")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(failure[0]))
        finally:
            feeder.cancel()
            for task in list(running):
                task.cancel()

    async def GetInfo(self, request: pb.GetInfoRequest, context: Context) -> pb.ServerInfo:
        pool = self.executor.pool
        policy = self.config.policy
        return pb.ServerInfo(
            version=version(),
            workers=pb.Workers(zygotes=pool.zygote_count, slots=pool.capacity),
            isolation=list(self.executor.layers),
            default_limits=wire.limits_to_proto(policy.default),
            max_limits=wire.limits_to_proto(policy.maximum),
            clamps_limits=policy.clamp,
            max_program_bytes=self.config.max_program_bytes,
        )

    async def _parse(
        self, request: pb.ExecuteRequest, context: Context, *, require_id: bool
    ) -> wire.TaskSpec:
        try:
            return self._validate(request, require_id=require_id)
        except wire.RequestError as exc:
            self._count_rejection("INVALID_ARGUMENT")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises

    def _validate(self, request: pb.ExecuteRequest, *, require_id: bool) -> wire.TaskSpec:
        spec = wire.parse_request(
            request, policy=self.config.policy, max_program_bytes=self.config.max_program_bytes
        )
        if require_id and not spec.id:
            raise wire.RequestError("id", "every ExecuteStream request needs an id (field `id`)")
        return spec

    async def _run(self, spec: wire.TaskSpec, context: Context) -> Result:
        """Run with the wall clock cut to the caller's deadline; cancellation kills the task."""
        limits = spec.limits
        remaining = context.time_remaining()
        if remaining is not None:
            limits = replace(
                limits, timeout_s=max(0.001, min(limits.timeout_s, remaining - DEADLINE_MARGIN_S))
            )
        started = time.monotonic()
        try:
            result = await self.executor.run(
                spec.program,
                prelude=spec.prelude,
                convention=spec.convention,
                limits=limits,
                task_id=spec.id,
            )
        except ExecutorError as exc:
            result = Result(
                status=Status.CRASHED,
                error_type="ServiceError",
                error_message=str(exc),
                task_id=spec.id,
            )
        if self.metrics is not None:
            self.metrics.observe(result, time.monotonic() - started)  # type: ignore[attr-defined]
        return result

    def _count_rejection(self, code: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(code).inc()  # type: ignore[attr-defined]


def _server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Message limits that fit the largest request and the largest possible Result: stdout
    and stderr at their cap, every byte of them undecodable, plus capped answer and error."""
    receive = 2 * config.max_program_bytes + (1 << 16)
    send = largest_result_bytes(config.policy.maximum.output_bytes)
    return [
        ("grpc.max_receive_message_length", receive),
        ("grpc.max_send_message_length", send),
        *KEEPALIVE_OPTIONS,
    ]


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls is None:
        return None
    tls = config.tls
    pair = (tls.key_file.read_bytes(), tls.cert_file.read_bytes())
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class Service:
    """One running server: executor, gRPC server, health, metrics. Start, then drain."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.executor = AsyncExecutor(config.pool, config.policy)
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.service: SandboxService | None = None
        self.port = 0

    async def start(self) -> None:
        """Zygotes first (no gRPC state yet), then the server; health turns SERVING last."""
        await self.executor.start()
        metrics = self._metrics()
        interceptors = [TokenInterceptor(self.config.token)] if self.config.token else []
        server = grpc.aio.server(interceptors=interceptors, options=_server_options(self.config))
        self.service = SandboxService(self.executor, self.config, metrics)
        pb_grpc.add_SandboxServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.config.reflection:
            names = (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
            reflection.enable_server_reflection(names, server)
        address = f"{self.config.host}:{self.config.port}"
        credentials = _credentials(self.config)
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        await server.start()
        self.server = server
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.config.port_file is not None:
            self.config.port_file.write_text(f"{self.port}\n")
        log.info(
            "listening",
            extra={
                "host": self.config.host,
                "port": self.port,
                "isolation": list(self.executor.layers),
                "tls": self.config.tls is not None,
                "auth": self.config.token is not None,
            },
        )

    def _metrics(self) -> object | None:
        if self.config.metrics_port is None:
            return None
        from potsandbox.executor.metrics import Metrics

        metrics = Metrics(self.executor.pool)
        metrics.serve(self.config.host, self.config.metrics_port)
        return metrics

    async def drain(self) -> None:
        """NOT_SERVING, refuse new calls, let in-flight tasks finish within the grace period."""
        log.info("draining", extra={"grace_s": self.config.grace_s})
        await self.health.enter_graceful_shutdown()
        if self.service is not None:
            self.service.draining = True
        if self.server is not None:
            await self.server.stop(self.config.grace_s)
        await self.executor.stop()
        log.info("stopped")


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if config.stop_on_stdin_eof:
        loop.add_reader(0, _stop_at_eof, stop)
    try:
        await service.start()
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await service.drain()


def _stop_at_eof(stop: asyncio.Event) -> None:
    try:
        data = os.read(0, 4096)
    except OSError:
        data = b""
    if not data:
        asyncio.get_running_loop().remove_reader(0)
        log.info("stdin closed: the owner is gone")
        stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    """`potsandbox serve`: parse flags and environment, serve until told to stop."""
    logs.configure()
    try:
        config = config_module.parse(argv)
    except ConfigError as exc:
        print(f"potsandbox serve: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except ExecutorError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
