"""Kernel namespaces for the zygote: entered once, free for every task after.

The zygote becomes the init of a new pid namespace (a task cannot see or signal
anything outside it) with an empty network namespace (no interface is up) and
private IPC and UTS namespaces. Without root it first enters a user namespace.
Where the kernel or the container forbids it, the zygote runs without them and
says so.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

_LAYERS = (
    (CLONE_NEWUSER, "userns"),
    (CLONE_NEWPID, "pidns"),
    (CLONE_NEWNET, "netns"),
    (CLONE_NEWIPC, "ipcns"),
    (CLONE_NEWUTS, "utsns"),
)

_libc = ctypes.CDLL(None, use_errno=True)


def enter() -> tuple[str, ...]:
    """Enter new namespaces and become their init; return the layers now active.

    Must run before any thread exists (user namespaces refuse threaded callers).
    The calling process stays outside as a waiter that mirrors the init's exit.
    """
    uid, gid = os.geteuid(), os.getegid()
    base = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS
    attempts = [base] if uid == 0 else []
    attempts.append(base | CLONE_NEWUSER)
    for flags in attempts:
        if _libc.unshare(flags) == 0:
            if flags & CLONE_NEWUSER:
                _map_self(uid, gid)
            _become_init()
            layers = tuple(name for bit, name in _LAYERS if flags & bit)
            return (*layers, "private-proc") if _private_proc() else layers
    return ()


MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 0x40000


def _private_proc() -> bool:
    """Mount a /proc of our own pid namespace, so host processes are not even visible."""
    if _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    return bool(_libc.mount(b"proc", b"/proc", b"proc", flags, None) == 0)


def _map_self(uid: int, gid: int) -> None:
    """Map our own ids to root inside the new user namespace (no other id exists)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _become_init() -> None:
    """Fork once: the child is pid 1 of the new namespace; the parent only waits."""
    pid = os.fork()
    if pid == 0:
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        return
    _wait_and_mirror(pid)


def _wait_and_mirror(pid: int) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda s, _f: os.kill(pid, signal.SIGKILL))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.stdout.flush()
    os._exit(code if code >= 0 else 128 - code)
