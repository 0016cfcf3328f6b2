"""Spare task processes, forked ahead of time by a fork server that never sees task data.

A task process is a copy of the process that forked it. When that process is the
zygote, the copy carries whatever the zygote's heap holds at that moment: earlier
tasks' programs, outputs and answers, freed but not erased, readable by any program
that scans its own memory. So tasks are not forked by the zygote. At start, before
its first task, the zygote forks a fork server; from then on only the fork server
forks, and it only ever handles requests, pids and descriptor numbers. Its copies, the
spares, hold nothing of anybody: each waits on a pipe for the one spec it will run.

The fork server clones with CLONE_PARENT, so every spare is the zygote's own child:
the zygote keeps the wait status, the rusage and the pidfd, exactly as if it had
forked the task itself, and no message per task crosses to the fork server. The
zygote no longer forks, so its own bookkeeping costs no copy-on-write faults; spares
come in batches, so the fork server wakes once per few tasks, and the fork and the
containment are off each task's critical path (bench/README.md has what it costs).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import marshal
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from potsandbox.executor.containment import Pipes

BATCH = 4
"""Spares the fork server makes per request."""
LOW_WATER = 1
"""The zygote asks for a new batch when its stock falls to this many."""
SPEC_CHUNK = 1 << 16
CLONE_RETRY_S = 0.01
"""The fork server's pause before it tries a refused clone again (a full pids cgroup)."""

_CLONE_PARENT = 0x00008000
_SIGCHLD = 17
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)

_raw_syscall = ctypes.PyDLL(None, use_errno=True).syscall
"""PyDLL keeps the GIL across the call: the clone happens with the interpreter's state
exactly as os.fork() leaves it, held by the one thread that continues in the copy."""
_raw_syscall.restype = ctypes.c_long


@dataclass(slots=True)
class Spare:
    """A pre-forked task process, as the zygote sees it: its pid and its pipes' far ends."""

    pid: int
    stdout: int
    stderr: int
    result: int
    spec: int
    """Write end of the pipe the spare waits on; closing it unused makes the spare exit."""

    @property
    def pipes(self) -> tuple[int, int, int]:
        """Read ends of the spare's stdout, stderr and result pipes."""
        return self.stdout, self.stderr, self.result


class SpareError(OSError):
    """A spare could not take its task (it died before reading its spec)."""


def available() -> bool:
    """Whether this machine's clone syscall number is known."""
    return _SYS_CLONE is not None


@dataclass(frozen=True, slots=True)
class Life:
    """What the fork server does for spares: the steps it takes once, then per spare."""

    task: Callable[[Pipes], NoReturn]
    """A spare's life in the spare: contain, `read_spec(...)`, run, exit."""
    prepare: Callable[[], None]
    """Run once in the fork server before its first clone: what every spare inherits."""
    adopt: Callable[[int], None]
    """Run in the fork server on each new spare's pid, before the zygote may use it."""


def start_fork_server(life: Life, *, close: tuple[int, ...] = ()) -> socket.socket:
    """Fork the fork server now, while this process has seen no task; return its socket.

    The fork server keeps every descriptor it inherits except `close` and the
    caller's end of the socket, so the caller must not have opened anything
    task-related yet. If `life.prepare` fails, it exits without making a spare.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        for fd in close:
            os.close(fd)
        _serve(theirs, life)
    theirs.close()
    return ours


def request(server: socket.socket) -> None:
    """Ask for a batch of spares; it arrives later as one message (see `receive`)."""
    server.send(b"+")


def receive(server: socket.socket) -> list[Spare] | None:
    """The spares of one batch, or None once the fork server is gone."""
    message, fds, _, _ = socket.recv_fds(server, 1 << 12, 4 * BATCH)
    if not message:
        return None
    pids: list[int] = marshal.loads(message)
    return [Spare(pid, *fds[4 * i : 4 * i + 4]) for i, pid in enumerate(pids)]


def hand_over(spare: Spare, spec: dict[str, Any]) -> None:
    """Give the spare its task; the pipe's end of file tells it the spec is complete.

    Raises:
        SpareError: the spare is gone (its read end is closed); `discard` it.
    """
    view = memoryview(marshal.dumps(spec))
    try:
        while view:
            view = view[os.write(spare.spec, view) :]
    except BrokenPipeError as exc:
        raise SpareError(f"spare {spare.pid} exited before its task") from exc
    os.close(spare.spec)


def read_spec(fd: int) -> dict[str, Any] | None:
    """In the spare: the spec, once the zygote has written it all; None if discarded unused.

    Reads to the end of file and leaves `fd` open there: it becomes the program's stdin."""
    chunks = []
    while chunk := os.read(fd, SPEC_CHUNK):
        chunks.append(chunk)
    return marshal.loads(b"".join(chunks)) if chunks else None


def discard(spare: Spare) -> None:
    """Release an unused spare: it reads end of file and exits; the caller reaps it."""
    for fd in (spare.spec, spare.stdout, spare.stderr, spare.result):
        with contextlib.suppress(OSError):
            os.close(fd)


def _serve(sock: socket.socket, life: Life) -> NoReturn:
    """The fork server's loop: a request in, a batch of spares out, until the socket closes."""
    try:
        life.prepare()
        # What the zygote made since its own freeze: frozen too, so that no collection in a
        # task walks (and so copies) it; tasks collect their program at exit (harness).
        gc.freeze()
        while sock.recv(16):
            _send_batch(sock, life)
    except ConnectionError:
        pass  # the zygote is gone: so are we
    except OSError as exc:
        sys.stderr.write(f'{{"event": "fork server", "message": "{exc}"}}\n')
    finally:
        os._exit(0)


def _send_batch(sock: socket.socket, life: Life) -> None:
    """Clone a batch, then adopt it: each clone makes every page the fork server writes
    after it a copy-on-write fault again, so the steps between two clones are kept few."""
    pids: list[int] = []
    fds: list[int] = []
    while len(pids) < BATCH:
        try:
            pid, ends = _clone_spare(sock, life.task)
        except BlockingIOError:  # EAGAIN: a task's threads fill the pids cgroup, until it ends
            if pids:
                break
            time.sleep(CLONE_RETRY_S)
            continue
        pids.append(pid)
        fds.extend(ends)
    for pid in pids:
        life.adopt(pid)
    try:
        socket.send_fds(sock, [marshal.dumps(pids)], fds)
    finally:
        for fd in fds:
            os.close(fd)


def _clone_spare(
    sock: socket.socket, task: Callable[[Pipes], NoReturn]
) -> tuple[int, tuple[int, int, int, int]]:
    """One spare, a child of our parent; returns its pid and the ends the zygote keeps."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    res_r, res_w = os.pipe2(os.O_CLOEXEC)
    spec_r, spec_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _clone_parent()
    except OSError:
        for fd in (out_r, out_w, err_r, err_w, res_r, res_w, spec_r, spec_w):
            os.close(fd)
        raise
    if pid == 0:
        try:
            for fd in (out_r, err_r, res_r, spec_w, sock.fileno()):
                os.close(fd)
            task(Pipes(out_w, err_w, res_w, spec_r))
        finally:
            os._exit(70)
    for fd in (out_w, err_w, res_w, spec_r):
        os.close(fd)
    return pid, (out_r, err_r, res_r, spec_w)


def _clone_parent() -> int:
    """fork() whose child is our parent's: clone(CLONE_PARENT | SIGCHLD)."""
    pid = _raw_syscall(_SYS_CLONE, _CLONE_PARENT | _SIGCHLD, 0, 0, 0, 0)
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"clone(CLONE_PARENT): {os.strerror(err)}")
    return int(pid)
