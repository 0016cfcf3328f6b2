"""The server's one configuration object, filled from flags and POTSANDBOX_* variables."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from potsandbox.executor.errors import ConfigError
from potsandbox.executor.limits import LimitPolicy, Limits
from potsandbox.executor.pool import PoolConfig

DEFAULT_PORT = 50051

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Server certificate, and the CA that client certificates must chain to (mTLS)."""

    cert_file: Path
    """PEM certificate chain presented by the server."""
    key_file: Path
    """PEM private key of that certificate."""
    client_ca_file: Path | None = None
    """When set, clients must present a certificate signed by this CA."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `potsandbox serve` can be told; contradictions are rejected at start."""

    host: str = "127.0.0.1"
    """Address to bind; a non-loopback one needs a token or TLS (or `insecure`)."""
    port: int = DEFAULT_PORT
    """TCP port; 0 picks a free one (see `port_file`)."""
    port_file: Path | None = None
    """Write the bound port here once serving (for port 0)."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """Zygote counts, in-flight cap, namespaces."""
    policy: LimitPolicy = field(default_factory=LimitPolicy)
    """Per-task limit defaults and maxima."""
    queue_size: int = 1024
    """Tasks accepted beyond those running; a unary call past it gets RESOURCE_EXHAUSTED."""
    stream_window: int = 256
    """Tasks one stream may have outstanding before the server stops reading it."""
    max_program_bytes: int = 1 << 20
    """Largest program (and prelude) accepted, in UTF-8 bytes."""
    token: str | None = field(default=None, repr=False)
    """Shared secret expected as `authorization: Bearer <token>`."""
    tls: TLSConfig | None = None
    """TLS or mTLS; None serves plaintext."""
    insecure: bool = False
    """Allow a non-loopback bind without token or TLS."""
    metrics_port: int | None = None
    """Serve Prometheus metrics over HTTP on this port (same host)."""
    grace_s: float = 30.0
    """On SIGTERM, in-flight tasks get this long to finish."""
    reflection: bool = True
    """Enable gRPC server reflection (grpcurl list/describe)."""
    stop_on_stdin_eof: bool = False
    """Drain and exit when standard input closes: an embedded server dies with its owner."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", f"port {self.port} is out of range")
        if self.queue_size < 0 or self.stream_window < 1:
            raise ConfigError("queue_size", "queue_size must be >= 0 and stream_window >= 1")
        if self.token is not None and not self.token:
            raise ConfigError("token", "the token is empty")
        if not _is_loopback(self.host) and not (self.token or self.tls or self.insecure):
            raise ConfigError(
                "host",
                f"refusing to serve {self.host} without --token-file or TLS; "
                "pass --insecure to allow it anyway",
            )


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "[::1]"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Flags of `potsandbox serve`; each also reads POTSANDBOX_<NAME> from the environment."""
    p = parser or argparse.ArgumentParser(
        prog="potsandbox serve", description="Run the sandbox gRPC service."
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--port-file", type=Path, help="write the bound port to this file")
    p.add_argument("--workers", type=int, help="numpy/sympy zygotes (default: CPU count)")
    p.add_argument("--numpy-workers", type=int, help="numpy-only zygotes (default: CPU count)")
    p.add_argument("--lean-workers", type=int, help="standard-library zygotes (default: CPU count)")
    p.add_argument(
        "--max-in-flight", type=int, help="programs running at once (default: CPU count)"
    )
    p.add_argument("--queue-size", type=int, help="accepted tasks waiting beyond those running")
    p.add_argument("--timeout", type=float, help="default wall-clock limit, seconds")
    p.add_argument("--max-timeout", type=float, help="largest wall-clock limit a request may ask")
    p.add_argument("--cpu", type=float, help="default CPU-time limit, seconds")
    p.add_argument("--max-cpu", type=float, help="largest CPU-time limit")
    p.add_argument("--memory-mb", type=int, help="default memory budget, MiB")
    p.add_argument("--max-memory-mb", type=int, help="largest memory budget")
    p.add_argument("--output-bytes", type=int, help="default cap on stdout and on stderr")
    p.add_argument("--max-output-bytes", type=int, help="largest output cap")
    p.add_argument(
        "--clamp-limits",
        action="store_true",
        default=None,
        help="clamp over-limit requests instead of rejecting",
    )
    p.add_argument("--token-file", type=Path, help="file holding the shared bearer token")
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument(
        "--tls-client-ca", type=Path, help="require client certificates from this CA (mTLS)"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback bind without auth",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument(
        "--grace", type=float, help="seconds in-flight tasks get on SIGTERM (default 30)"
    )
    p.add_argument(
        "--no-reflection", action="store_true", default=None, help="disable server reflection"
    )
    p.add_argument(
        "--no-namespaces", action="store_true", default=None, help="do not enter namespaces"
    )
    p.add_argument(
        "--unconfined",
        action="store_true",
        default=None,
        help="start even without seccomp and Landlock",
    )
    p.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        default=None,
        help="drain and exit when stdin closes (used by the embedded server)",
    )
    return p


class _Source:
    """Reads one setting: the flag if given, else POTSANDBOX_<NAME>, else None."""

    def __init__(self, args: argparse.Namespace, env: Mapping[str, str]) -> None:
        self.args, self.env = args, env

    def raw(self, name: str) -> object:
        value = getattr(self.args, name, None)
        return value if value is not None else self.env.get(f"POTSANDBOX_{name.upper()}")

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        return None if value is None else str(value)

    def integer(self, name: str) -> int | None:
        return self._cast(name, int)

    def number(self, name: str) -> float | None:
        return self._cast(name, float)

    def path(self, name: str) -> Path | None:
        value = self.raw(name)
        return None if value is None else Path(str(value))

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if isinstance(value, bool):
            return value
        return value is not None and str(value).strip().lower() in ("1", "true", "yes", "on")

    def _cast(self, name: str, cast: type[T]) -> T | None:
        value = self.raw(name)
        if value is None or isinstance(value, cast):
            return value
        try:
            return cast(str(value))  # type: ignore[call-arg]
        except ValueError as exc:
            raise ConfigError(
                name, f"POTSANDBOX_{name.upper()}={value!r} is not a valid {cast.__name__}"
            ) from exc


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Flags win over POTSANDBOX_* variables, which win over the defaults."""
    src = _Source(args, os.environ if env is None else env)
    default, maximum, base = Limits(), LimitPolicy().maximum, PoolConfig()
    policy = LimitPolicy(
        default=Limits(
            timeout_s=_or(src.number("timeout"), default.timeout_s),
            cpu_s=_or(src.number("cpu"), default.cpu_s),
            memory_mb=_or(src.integer("memory_mb"), default.memory_mb),
            output_bytes=_or(src.integer("output_bytes"), default.output_bytes),
        ),
        maximum=Limits(
            timeout_s=_or(src.number("max_timeout"), maximum.timeout_s),
            cpu_s=_or(src.number("max_cpu"), maximum.cpu_s),
            memory_mb=_or(src.integer("max_memory_mb"), maximum.memory_mb),
            output_bytes=_or(src.integer("max_output_bytes"), maximum.output_bytes),
        ),
        clamp=src.flag("clamp_limits"),
    )
    pool = PoolConfig(
        zygotes=_or(src.integer("workers"), base.zygotes),
        numpy_zygotes=_or(src.integer("numpy_workers"), base.numpy_zygotes),
        lean_zygotes=_or(src.integer("lean_workers"), base.lean_zygotes),
        max_in_flight=_or(src.integer("max_in_flight"), base.max_in_flight),
        namespaces=not src.flag("no_namespaces"),
        unconfined=src.flag("unconfined"),
    )
    return ServerConfig(
        host=_or(src.text("host"), "127.0.0.1"),
        port=_or(src.integer("port"), DEFAULT_PORT),
        port_file=src.path("port_file"),
        pool=pool,
        policy=policy,
        queue_size=_or(src.integer("queue_size"), 1024),
        token=_read_token(src.path("token_file"), src.env),
        tls=_tls(src),
        insecure=src.flag("insecure"),
        metrics_port=src.integer("metrics_port"),
        grace_s=_or(src.number("grace"), 30.0),
        reflection=not src.flag("no_reflection"),
        stop_on_stdin_eof=src.flag("stop_on_stdin_eof"),
    )


def _tls(src: _Source) -> TLSConfig | None:
    cert, key = src.path("tls_cert"), src.path("tls_key")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("tls_cert", "--tls-cert and --tls-key go together")
    return TLSConfig(cert, key, src.path("tls_client_ca"))


def parse(argv: Sequence[str] | None = None) -> ServerConfig:
    """ServerConfig from a command line and the environment."""
    return from_args(build_parser().parse_args(argv))


def _read_token(path: Path | None, env: Mapping[str, str]) -> str | None:
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError("token_file", f"cannot read token file {path}: {exc}") from exc
    return env.get("POTSANDBOX_TOKEN") or None


def _or(value: T | None, fallback: T) -> T:
    return fallback if value is None else value
