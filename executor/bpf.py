"""The compiled seccomp program: built in a throwaway process, loaded in each task.

The zygote needs the program's bytes but not libseccomp's binding: pyseccomp
imports `ctypes.util`, which imports `subprocess` and so `threading`, whose
after-fork hook alone costs every forked task ~100 page faults (~0.25 ms, measured
in bench/README.md). So `compile_in_child` forks, builds the policy of `seccomp.py`
there and hands the bytes back through a pipe; this module needs only ctypes.
"""

from __future__ import annotations

import ctypes
import os

PID_PLACEHOLDER = 0x7E5A5A5A
"""Stands for the task's own pid in the compiled program until `install` patches it."""

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
_BPF_JMP_JEQ_K = 0x15


class _SockFilter(ctypes.Structure):
    """struct sock_filter: one classic-BPF instruction."""

    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: what PR_SET_SECCOMP takes."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


# Bound once, in the zygote: a task calls it without a dlsym of its own. Full-width
# arguments: without argtypes ctypes passes ints, truncating the pointer.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


def call_prctl(name: str, option: int, arg2: int, arg3: int = 0) -> None:
    """Call prctl and raise OSError naming the option on failure."""
    if _prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({name}): {os.strerror(err)}")


def set_no_new_privs() -> None:
    """Forbid gaining privileges (setuid exec); the kernel requires it for unprivileged filters."""
    call_prctl("PR_SET_NO_NEW_PRIVS", PR_SET_NO_NEW_PRIVS, 1)


class SeccompFilter:
    """A compiled filter, prepared in the zygote so that each child only patches and loads it."""

    def __init__(self, program: bytes) -> None:
        """Copy `program` into a ctypes buffer and find the pid placeholders.

        Raises:
            ValueError: not a BPF program, or it never compares against the placeholder.
        """
        if not program or len(program) % ctypes.sizeof(_SockFilter):
            raise ValueError("a BPF program is a non-empty sequence of 8-byte instructions")
        count = len(program) // ctypes.sizeof(_SockFilter)
        if count > 0xFFFF:
            raise ValueError(f"BPF program too long: {count} instructions")
        self._insns = (_SockFilter * count).from_buffer_copy(program)
        self._pid_slots = tuple(
            i
            for i, insn in enumerate(self._insns)
            if insn.code == _BPF_JMP_JEQ_K and insn.k == PID_PLACEHOLDER
        )
        if not self._pid_slots:
            raise ValueError("the BPF program has no pid placeholder to patch")
        self._prog = _SockFprog(count, ctypes.cast(self._insns, ctypes.POINTER(_SockFilter)))

    def patched(self, pid: int) -> bytes:
        """The program as `install(pid)` loads it (for tests and inspection)."""
        self._patch(pid)
        return bytes(self._insns)

    def install(self, pid: int) -> None:
        """Load the filter on the calling (single-threaded) child, `pid` being its own pid.

        Call `set_no_new_privs()` first unless the process has CAP_SYS_ADMIN.

        Raises:
            OSError: prctl(PR_SET_SECCOMP) failed; the message names the call and errno.
        """
        self._patch(pid)
        program = ctypes.addressof(self._prog)
        call_prctl("PR_SET_SECCOMP", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, program)

    def _patch(self, pid: int) -> None:
        """Write `pid` over every placeholder constant."""
        if not 0 < pid < 2**31:
            raise ValueError(f"not a pid: {pid}")
        for i in self._pid_slots:
            self._insns[i].k = pid


_BUILT = b"P"
_FAILED = b"E"


def compile_in_child() -> bytes:
    """`seccomp.build_filter()`, run in a forked child so this process never imports pyseccomp.

    Raises:
        OSError: the build failed (no libseccomp, not x86_64, a rule refused); the message
            is the child's.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _build_and_send(write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reply = pipe.read()
    _, status = os.waitpid(pid, 0)
    if reply[:1] == _BUILT and os.waitstatus_to_exitcode(status) == 0:
        return reply[1:]
    message = reply[1:].decode(errors="replace") if reply[:1] == _FAILED else "no reply"
    raise OSError(f"building the seccomp filter failed: {message}")


def _build_and_send(fd: int) -> None:
    """The throwaway child: build, write, exit; never returns into the caller."""
    code = 1
    try:
        from potsandbox.executor import seccomp

        reply = _BUILT + seccomp.build_filter()
        code = 0
    except BaseException as exc:  # everything goes back to the parent as text
        reply = _FAILED + f"{type(exc).__name__}: {exc}".encode()
    try:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(reply)
    finally:
        os._exit(code)
