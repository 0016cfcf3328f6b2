"""A real `potsandbox.executor.server` subprocess for integration tests, and its cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from potsandbox.v1 import sandbox_pb2_grpc as pb_grpc

START_TIMEOUT_S = 60.0
"""Zygotes preload numpy/sympy/scipy before the port file appears."""
STOP_TIMEOUT_S = 30.0


@dataclass
class Server:
    """One running server process; `stop()` leaves no process behind."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log: Path
    credentials: grpc.ChannelCredentials | None = None
    channel_options: Sequence[tuple[str, str | int]] = ()
    _channels: list[grpc.Channel] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)
    orphans: list[int] = field(default_factory=list)
    """Processes that outlived the server and that `stop()` had to kill."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        """A new channel to the server, closed by `stop()`."""
        creds = credentials or self.credentials
        options = list(self.channel_options)
        if creds is None:
            chan = grpc.insecure_channel(self.address, options=options)
        else:
            chan = grpc.secure_channel(self.address, creds, options=options)
        self._channels.append(chan)
        return chan

    def stub(self, credentials: grpc.ChannelCredentials | None = None) -> pb_grpc.SandboxStub:
        return pb_grpc.SandboxStub(self.channel(credentials))

    def health(self, service: str = "", timeout: float = 5.0) -> int:
        """The Check status of `service` (raises grpc.RpcError when the call fails)."""
        stub = health_pb2_grpc.HealthStub(self.channel())
        request = health_pb2.HealthCheckRequest(service=service)
        status: int = stub.Check(request, timeout=timeout).status
        return status

    def descendants(self) -> list[psutil.Process]:
        """Every live process under the server (zygotes, their inits, running tasks)."""
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        alive = [p for p in found if _alive(p)]
        self._seen.update(p.pid for p in alive)
        return alive

    def temp_files(self) -> list[Path]:
        """What the server left in its TMPDIR."""
        return sorted((self.workdir / "tmp").iterdir())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close_channels(self) -> None:
        for chan in self._channels:
            chan.close()
        self._channels.clear()

    def stop(self) -> int | None:
        """SIGTERM, wait for the drain, then kill by PID whatever we started and is still alive."""
        self.descendants()  # remember the tree while the server can still show it
        self.close_channels()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        time.sleep(0.2)  # orphaned inits die with their zygote (PDEATHSIG) a moment later
        self.orphans = self.leftovers()
        for pid in self.orphans:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        return self.process.returncode

    def leftovers(self) -> list[int]:
        """PIDs once seen under the server that are still alive (zombies count as gone)."""
        left = []
        for pid in self._seen:
            with contextlib.suppress(psutil.Error):
                if _alive(psutil.Process(pid)):
                    left.append(pid)
        return left


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def free_port() -> int:
    """A TCP port nobody listens on right now (for --metrics-port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "potsandbox.executor.server", *map(str, args)]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without POTSANDBOX_* settings (each test says what it wants)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTSANDBOX_")}
    env.update(extra or {})
    return env


def start_server(
    workdir: Path,
    *args: str | Path,
    env: dict[str, str] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    channel_options: Sequence[tuple[str, str | int]] = (),
) -> Server:
    """Start the server on port 0, wait for its port file and for health SERVING.

    The server's temporary files go to `workdir/tmp`, so a test can check they are gone.
    """
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    port_file = workdir / "port"
    log = workdir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            server_command("--port", "0", "--port-file", port_file, *args),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment({"TMPDIR": str(workdir / "tmp"), **(env or {})}),
            cwd=workdir,
        )
    server = Server(process, 0, workdir, log, credentials, channel_options)
    try:
        server.port = _wait_for_port(server, port_file)
        _wait_for_serving(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_port(server: Server, port_file: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise RuntimeError(f"server exited with {code} before serving:\n{server.log_text()}")
        text = port_file.read_text() if port_file.exists() else ""
        if text.endswith("\n") and text.strip().isdigit():  # written whole, not half-way
            return int(text)
        time.sleep(0.05)
    raise TimeoutError(f"no port file after {START_TIMEOUT_S} s:\n{server.log_text()}")


def _wait_for_serving(server: Server) -> None:
    deadline = time.monotonic() + 10.0
    while True:
        try:
            if server.health() == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"health never turned SERVING:\n{server.log_text()}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(
    workdir: Path,
    *args: str | Path,
    env: dict[str, str] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> Iterator[Server]:
    """`start_server` as a context manager that always stops it."""
    server = start_server(workdir, *args, env=env, credentials=credentials)
    try:
        yield server
    finally:
        server.stop()


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate()` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
