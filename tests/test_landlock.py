"""Landlock, live: a forked child confined to reading the Python prefix, with positive twins."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from potsandbox.executor import landlock
from potsandbox.executor.landlock import Ruleset

ABI = landlock.abi_version()
pytestmark = pytest.mark.skipif(ABI == 0, reason="Landlock is not available in this kernel")

PR_SET_NO_NEW_PRIVS = 38
CHILD_TIMEOUT_S = 60.0
LIBRARY_PATHS = [sys.prefix, sys.base_prefix, *(p for p in sys.path if p and os.path.isabs(p))]


@pytest.fixture(scope="module")
def outside() -> Iterator[str]:
    """A directory that no rule covers, holding a canary file."""
    with tempfile.TemporaryDirectory(prefix="landlock-outside-") as tmp:
        if any(os.path.commonpath([tmp, p]) == p for p in LIBRARY_PATHS):
            pytest.skip(f"{tmp} lies beneath a library path; cannot test denial there")
        with open(os.path.join(tmp, "canary.txt"), "w") as f:
            f.write("canary")
        yield tmp


@pytest.fixture(scope="module")
def granted() -> Iterator[str]:
    """A directory granted read-only, holding a file and a single-file grant's neighbour."""
    with tempfile.TemporaryDirectory(prefix="landlock-granted-") as tmp:
        for name in ("data.txt", "lone.txt", "neighbour.txt"):
            os.mkdir(os.path.join(tmp, name.removesuffix(".txt")))
            with open(os.path.join(tmp, name.removesuffix(".txt"), name), "w") as f:
                f.write(name)
        yield tmp


@pytest.fixture(scope="module")
def ruleset(granted: str) -> Iterator[Ruleset]:
    """Built once, as the zygote builds it: library paths, one granted dir, one single file."""
    paths = [
        *LIBRARY_PATHS,
        os.path.join(granted, "data"),
        os.path.join(granted, "lone", "lone.txt"),
    ]
    built = Ruleset.read_only([*paths, "/nonexistent/landlock/path", os.__file__ + "/not-a-dir"])
    yield built
    built.close()


def run_confined(ruleset: Ruleset | None, probe: Callable[[], object]) -> tuple[int, object]:
    """Fork; the child enforces `ruleset` (None: the unconfined twin), runs `probe`, reports.

    Returns the wait status and ["ok", value] / ["errno", n] / ["raised", type name].
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read_end)
            report: list[object]
            try:
                if ruleset is not None:
                    _no_new_privs()
                    ruleset.restrict_self()
                report = ["ok", probe()]
            except OSError as exc:
                report = ["errno", exc.errno]
            except BaseException as exc:
                report = ["raised", type(exc).__name__]
            os.write(write_end, json.dumps(report, default=repr).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([read_end], [], [], left)[0]:
                if not (chunk := os.read(read_end, 65536)):
                    break
                data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    return status, json.loads(data) if data else None


def _no_new_privs() -> None:
    """What the executor does before restrict_self (required without CAP_SYS_ADMIN)."""
    libc = ctypes.CDLL(None, use_errno=True)
    one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, one, zero, zero, zero):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def _read(path: str) -> Callable[[], str]:
    def probe() -> str:
        with open(path, errors="replace") as f:
            return f.read()

    return probe


def _write(path: str, mode: str = "w") -> Callable[[], None]:
    def probe() -> None:
        with open(path, mode) as f:
            f.write("written")

    return probe


def test_features_follow_the_abi(ruleset: Ruleset) -> None:
    expected = ("fs", *(("net",) if ABI >= 4 else ()), *(("scope",) if ABI >= 6 else ()))
    assert ruleset.features == expected


def test_reading_a_stdlib_file_works(ruleset: Ruleset) -> None:
    assert run_confined(ruleset, _read(os.__file__))[1] == ["ok", _read(os.__file__)()]


def test_importing_a_module_from_disk_works(ruleset: Ruleset) -> None:
    def probe() -> str:
        sys.modules.pop("colorsys", None)
        import colorsys  # read from the stdlib directory now, inside the domain

        return colorsys.__name__

    assert run_confined(ruleset, probe)[1] == ["ok", "colorsys"]


@pytest.mark.parametrize("path", ["/etc/hostname", "/etc/passwd", "/proc/self/environ"])
def test_reading_outside_the_library_fails_with_eacces(ruleset: Ruleset, path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    assert run_confined(None, lambda: len(_read(path)()) >= 0)[1] == ["ok", True]  # positive twin
    assert run_confined(ruleset, _read(path))[1] == ["errno", errno.EACCES]


def test_reading_the_parents_environment_fails_with_eacces(ruleset: Ruleset) -> None:
    environ = f"/proc/{os.getpid()}/environ"
    assert run_confined(None, lambda: len(_read(environ)()) > 0)[1] == ["ok", True]
    assert run_confined(ruleset, _read(environ))[1] == ["errno", errno.EACCES]


def test_canary_outside_is_unreadable_and_unlistable(ruleset: Ruleset, outside: str) -> None:
    canary = os.path.join(outside, "canary.txt")
    assert run_confined(None, _read(canary))[1] == ["ok", "canary"]
    assert run_confined(ruleset, _read(canary))[1] == ["errno", errno.EACCES]
    assert run_confined(ruleset, lambda: os.listdir(outside))[1] == ["errno", errno.EACCES]


@pytest.mark.parametrize("mode", ["w", "a", "r+"])
def test_writing_an_existing_file_fails_with_eacces(
    ruleset: Ruleset, outside: str, mode: str
) -> None:
    canary = os.path.join(outside, "canary.txt")
    assert run_confined(ruleset, _write(canary, mode))[1] == ["errno", errno.EACCES]
    assert _read(canary)() == "canary"


def test_creating_a_file_in_a_temp_dir_fails_with_eacces(ruleset: Ruleset, outside: str) -> None:
    target = os.path.join(outside, "new.txt")
    assert run_confined(ruleset, _write(target))[1] == ["errno", errno.EACCES]
    assert not os.path.exists(target)
    assert run_confined(None, _write(target))[1] == ["ok", None]  # positive twin
    os.unlink(target)


def test_granted_directory_is_readable_but_not_writable(ruleset: Ruleset, granted: str) -> None:
    data = os.path.join(granted, "data", "data.txt")
    assert run_confined(ruleset, _read(data))[1] == ["ok", "data.txt"]
    assert run_confined(ruleset, lambda: os.listdir(os.path.dirname(data)))[1] == [
        "ok",
        ["data.txt"],
    ]
    assert run_confined(ruleset, _write(data))[1] == ["errno", errno.EACCES]
    assert run_confined(ruleset, _write(data + ".new"))[1] == ["errno", errno.EACCES]
    assert run_confined(ruleset, lambda: os.unlink(data))[1] == ["errno", errno.EACCES]
    assert run_confined(ruleset, lambda: os.mkdir(data + ".d"))[1] == ["errno", errno.EACCES]
    assert run_confined(ruleset, lambda: os.truncate(data, 0))[1] == ["errno", errno.EACCES]
    assert sorted(os.listdir(os.path.dirname(data))) == ["data.txt"]
    assert _read(data)() == "data.txt"


def test_single_file_grant_covers_that_file_only(ruleset: Ruleset, granted: str) -> None:
    lone = os.path.join(granted, "lone", "lone.txt")
    assert run_confined(ruleset, _read(lone))[1] == ["ok", "lone.txt"]
    assert run_confined(ruleset, lambda: os.listdir(os.path.dirname(lone)))[1] == [
        "errno",
        errno.EACCES,
    ]
    assert run_confined(ruleset, _read(os.path.join(granted, "neighbour", "neighbour.txt")))[1] == [
        "errno",
        errno.EACCES,
    ]


def test_signal_to_the_parent_is_blocked_by_scoping(ruleset: Ruleset) -> None:
    if "scope" not in ruleset.features:
        pytest.skip(f"signal scoping needs Landlock ABI 6, kernel has {ABI}")
    parent = os.getpid()
    assert run_confined(None, lambda: os.kill(parent, 0))[1] == ["ok", None]  # positive twin
    assert run_confined(ruleset, lambda: os.kill(parent, 0))[1] == ["errno", errno.EPERM]
    assert run_confined(ruleset, lambda: os.kill(os.getpid(), 0))[1] == ["ok", None]


def test_tcp_connect_is_denied(ruleset: Ruleset) -> None:
    if "net" not in ruleset.features:
        pytest.skip(f"TCP rules need Landlock ABI 4, kernel has {ABI}")
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = server.getsockname()

        def probe() -> None:
            socket.create_connection(address, timeout=5).close()

        assert run_confined(None, probe)[1] == ["ok", None]  # positive twin
        assert run_confined(ruleset, probe)[1] == ["errno", errno.EACCES]


def test_abstract_unix_socket_outside_the_domain_is_unreachable(ruleset: Ruleset) -> None:
    if "scope" not in ruleset.features:
        pytest.skip(f"abstract socket scoping needs Landlock ABI 6, kernel has {ABI}")
    name = f"\0potsandbox-landlock-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(2)

        def probe() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(name)

        assert run_confined(None, probe)[1] == ["ok", None]  # positive twin
        assert run_confined(ruleset, probe)[1] == ["errno", errno.EPERM]


def test_restrict_self_without_no_new_privs_fails_with_eperm(ruleset: Ruleset) -> None:
    def probe() -> None:
        if os.geteuid() == 0:  # lose CAP_SYS_ADMIN, as the real service user has none
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        ruleset.restrict_self()

    assert run_confined(None, probe)[1] == ["errno", errno.EPERM]


def test_restrict_self_closes_the_childs_copy_only(ruleset: Ruleset) -> None:
    fd = ruleset.fd
    assert run_confined(ruleset, lambda: ruleset.fd)[1] == ["ok", -1]
    assert ruleset.fd == fd
    os.fstat(fd)  # still open in the parent for the next child


def test_close_is_idempotent() -> None:
    built = Ruleset.read_only([sys.prefix])
    built.close()
    built.close()
    assert built.fd == -1
