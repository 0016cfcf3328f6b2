"""The local server a client without a target starts for itself, and stops with it.

A subprocess `python -m potsandbox.executor.server` on a free loopback port,
with a random token of its own so other local users cannot borrow it. Only the
process that started it may stop it: a forked or unpickled copy of the client
connects to it by target instead.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import grpc

from potsandbox.client.errors import EmbeddedServerError, ServerNotInstalled

SERVER_MODULES = ("grpc_health", "grpc_reflection", "numpy", "sympy")
"""What the server process and its zygotes import; all come with the `server` extra."""

_INHERITED_SETTINGS = (
    "HOST", "PORT", "PORT_FILE", "TOKEN", "TOKEN_FILE", "TLS_CERT", "TLS_KEY",
    "TLS_CLIENT_CA", "INSECURE", "METRICS_PORT",
)  # fmt: skip
"""POTSANDBOX_* variables that would make the server unreachable for its own client."""

STOP_GRACE_S = 10.0
"""How long the server gets to drain after SIGTERM before it is killed."""

_POLL_S = 0.05


class EmbeddedServer:
    """One server subprocess: started on demand, stopped by `stop()` or at interpreter exit."""

    def __init__(
        self, args: Sequence[str] = (), *, token: str | None = None, start_timeout: float = 120.0
    ) -> None:
        self.args = tuple(args)
        self.start_timeout = start_timeout
        self.token = token or secrets.token_urlsafe(32)
        self._target: str | None = None
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[..., EmbeddedServer] | None = None

    @property
    def target(self) -> str | None:
        """`127.0.0.1:PORT` once the server answers its health check, else None."""
        return self._target

    def start(self) -> str:
        """Start the server once (thread-safe) and return its `127.0.0.1:PORT` target.

        Raises:
            ServerNotInstalled: the `server` extra is missing.
            EmbeddedServerError: the server exited or did not become healthy in time.
        """
        with self._lock:
            if self._target is None:
                self._target = self._launch()
            return self._target

    def stop(self) -> None:
        """Drain and stop the server, remove its files; a no-op in other processes."""
        if os.getpid() != self._owner:
            return
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._target = None  # a later start() launches a new server

    def _launch(self) -> str:
        _require_server_extra()
        workdir = Path(tempfile.mkdtemp(prefix="potsandbox-embedded-"))
        token_file, port_file, log_file = (workdir / n for n in ("token", "port", "server.log"))
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        command = [
            sys.executable, "-m", "potsandbox.executor.server", "--host", "127.0.0.1",
            "--port", "0", "--port-file", str(port_file), "--token-file", str(token_file),
            "--grace", "5", "--stop-on-stdin-eof", *self.args,
        ]  # fmt: skip
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                # Our end of stdin closes when this process dies: the server then drains.
                command,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=_server_env(),
            )
        self._finalizer = weakref.finalize(self, _shutdown, process, workdir, self._owner)
        try:
            port = _wait_for_port(
                process, port_file, log_file, time.monotonic() + self.start_timeout
            )
            target = f"127.0.0.1:{port}"
            _wait_healthy(target, process, log_file, time.monotonic() + self.start_timeout)
        except BaseException:
            self._finalizer()
            raise
        # The server has read its token and written its port: nothing needs the files now,
        # and an owner killed outright (no finalizer) must not leave the token on disk.
        shutil.rmtree(workdir, ignore_errors=True)
        return target


def _require_server_extra() -> None:
    """Fail with the install hint before starting a server that cannot run."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ServerNotInstalled(
            f"SandboxClient() without a target starts a local server, which needs "
            f"{', '.join(missing)}: pip install 'potsandbox[server]', or pass "
            f"target='host:port' of a running server"
        )


def _server_env() -> dict[str, str]:
    """The caller's environment without settings that would change how we reach the server."""
    dropped = {f"POTSANDBOX_{name}" for name in _INHERITED_SETTINGS}
    return {k: v for k, v in os.environ.items() if k not in dropped}


def _wait_for_port(
    process: subprocess.Popen[bytes], port_file: Path, log_file: Path, deadline: float
) -> int:
    """The port the server wrote once serving; fails early if the server exits."""
    while time.monotonic() < deadline:
        text = port_file.read_text() if port_file.exists() else ""
        if text.endswith("\n"):  # written in one line; the newline says it is complete
            return int(text)
        if process.poll() is not None:
            raise EmbeddedServerError(
                f"the embedded server exited with status {process.returncode}: {_tail(log_file)}"
            )
        time.sleep(_POLL_S)
    raise EmbeddedServerError(
        f"the embedded server did not start within the timeout: {_tail(log_file)}"
    )


def _wait_healthy(
    target: str, process: subprocess.Popen[bytes], log_file: Path, deadline: float
) -> None:
    """Block until grpc.health.v1 reports the Sandbox service SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest(service="potsandbox.v1.Sandbox")
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and process.poll() is None:
            try:
                reply = stub.Check(request, timeout=max(0.1, deadline - time.monotonic()))
            except grpc.RpcError:
                reply = None
            if reply is not None and reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(_POLL_S)
    raise EmbeddedServerError(f"the embedded server never reported SERVING: {_tail(log_file)}")


def _tail(log_file: Path, lines: int = 5) -> str:
    """The last lines of the server's log, for an error message."""
    try:
        text = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _shutdown(process: subprocess.Popen[bytes], workdir: Path, owner: int) -> None:
    """SIGTERM, wait for the drain, SIGKILL if it hangs; only in the process that started it."""
    if os.getpid() != owner:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(workdir, ignore_errors=True)
