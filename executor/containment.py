"""The task process's containment: one ordered checklist, split by who can take each step.

Order matters (nsjail's containProc is the model): privileges first, then Landlock,
rlimits and priority, session and descriptors, and seccomp last, because the filter
forbids the very calls the earlier steps make. A step runs in the longest-lived
process that can take it, because a step taken in the fresh spare itself is paid in
copy-on-write faults by every task:
1. the zygote, once (`contain_zygote`): no_new_privs, no capabilities, signal mask;
2. the fork server, once (`contain_fork_server`): Landlock and the fixed rlimits it can
   live under itself, inherited by each spare;
3. the fork server, on each new spare from outside (`adopt`): the other fixed rlimits, nice;
4. the spare itself, before its task exists (`contain`): session, death signal,
   descriptors and their limit, seccomp;
5. the zygote, from outside, before it hands the spec over (`limit`): the request's
   CPU and memory limits.
Steps 3 and 4 may overlap; no program runs before all five are done: the fork server
reports a spare to the zygote only after step 3, the zygote writes its spec only after
step 5, and the spare reads it only after step 4.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from potsandbox.executor.bpf import (
    PR_SET_PDEATHSIG,
    SeccompFilter,
    call_prctl,
    set_no_new_privs,
)
from potsandbox.executor.limits import cpu_rlimit_s

if TYPE_CHECKING:
    from potsandbox.executor.landlock import Ruleset

_libc_syscall = ctypes.CDLL(None, use_errno=True).syscall
"""Bound here, in the zygote: a task process then calls it without a dlsym of its own."""

RESULT_FD = 1000
"""The result pipe lives far above RLIMIT_NOFILE, out of the way of the program's own fds."""

NOFILE = 64
NPROC = 512
"""Counts every process and thread of the uid (not enforced for root); forks are denied by
seccomp anyway, this only bounds thread bombs where RLIMIT_AS does not."""
STACK_BYTES = 8 << 20
SIGPENDING = 1024
"""Queued signals and POSIX timers (each holds one): kernel memory outside RLIMIT_AS, 96k
by default, counted per user; a program needs a handful (alarm, setitimer)."""
CHILD_NICE = 19
"""Children yield to the supervisor so its clock and reads stay on time."""


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What the zygote prepared once and every task process applies."""

    seccomp: SeccompFilter | None
    landlock: Ruleset | None
    base_vm_bytes: int
    """The zygote's address-space size; the memory budget is added on top."""
    orphan_signal: bool
    """Ask for SIGKILL when the zygote dies. Not needed when the zygote is the init of
    the task's pid namespace: the kernel then kills the whole namespace with it."""


@dataclass(frozen=True, slots=True)
class Pipes:
    """The ends the task process keeps; everything else is closed."""

    stdout: int
    stderr: int
    result: int
    spec: int
    """Read end of the pipe its spec arrives on; the task's stdin once contained."""


def contain_zygote() -> None:
    """The steps every task would repeat identically, taken once by the zygote.

    Forked children inherit them: no_new_privs, no capabilities and an empty signal
    mask (a launcher such as `perf record` may start us with signals blocked, and a
    task must see the signals CPython expects). Every page a task's Python touches
    costs a copy-on-write fault, so whatever need not be per task is not.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    set_no_new_privs()
    _drop_capabilities()


def contain_fork_server(sandbox: Sandbox) -> None:
    """Confine the fork server to what a task may read and to the limits it can live
    under; every spare it clones inherits both.

    The fork server opens no file, so the confinement costs it nothing; it runs after
    `contain_zygote()`, whose no_new_privs Landlock requires. A limit taken here once
    is a `prlimit` fewer for every spare (`adopt`).
    """
    if sandbox.landlock is not None:
        sandbox.landlock.restrict_self()
    for which, value in INHERITED_LIMITS:
        resource.setrlimit(which, (value, value))


def adopt(pid: int) -> None:
    """Set the limits the fork server cannot hold itself and the low priority on a new
    spare, from the fork server.

    Runs before the fork server reports the spare, so before the spare's spec, and so
    its program, can exist. Lowering another process's limits and raising its nice
    value need no capability, only the same user.
    """
    for which, value in SPARE_LIMITS:
        resource.prlimit(pid, which, (value, value))
    os.setpriority(os.PRIO_PROCESS, pid, CHILD_NICE)


def contain(sandbox: Sandbox, pipes: Pipes) -> None:
    """The steps only the spare can take on itself, in order.

    Runs in a spare of a fork server that went through `contain_zygote()` and
    `contain_fork_server()`. Raises OSError naming the failed step.
    """
    os.setsid()
    if sandbox.orphan_signal:
        call_prctl("PR_SET_PDEATHSIG", PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the zygote
    _wire_descriptors(pipes)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))  # below RESULT_FD: after the dup
    if sandbox.seccomp is not None:
        sandbox.seccomp.install(os.getpid())


def limit(pid: int, sandbox: Sandbox, *, cpu_s: float, memory_mb: int) -> None:
    """Set the task's CPU and memory limits on spare `pid` (soft == hard: it can't raise them).

    Called by the zygote before it hands the spec over: lowering another process's
    limits needs no capability, only the same user.
    """
    memory = sandbox.base_vm_bytes + (memory_mb << 20)
    cpu = cpu_rlimit_s(cpu_s)
    resource.prlimit(pid, resource.RLIMIT_CPU, (cpu, cpu))
    resource.prlimit(pid, resource.RLIMIT_AS, (memory, memory))


MAX_FD = (1 << 31) - 1
"""os.closerange's upper bound: one close_range() call, whatever the limit."""
CLOSE_RANGES = ((3, RESULT_FD), (RESULT_FD + 1, MAX_FD))
"""The [low, high) descriptor ranges a task closes: all but 0-2 and RESULT_FD (two
close_range() calls)."""


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


_CapData = ctypes.c_uint32 * 6  # effective, permitted, inheritable; two 32-bit words each
_CAP_VERSION_3 = 0x20080522
_SYS_CAPSET = 126


def _drop_capabilities() -> None:
    """Empty effective, permitted and inheritable sets: root in the task is powerless."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    if _libc_syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(_CapData())) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _wire_descriptors(pipes: Pipes) -> None:
    """stdin from the spec's pipe, stdout/stderr to the parent's pipes, the result fd high up.

    The spare reads its spec from stdin to the end, so the program finds stdin at end of
    file, as from /dev/null, but in a pipe of its own: flags a program set on one /dev/null
    shared by every task (O_NONBLOCK, O_APPEND) were still set in every later task.
    """
    os.dup2(pipes.spec, 0)
    os.dup2(pipes.stdout, 1)
    os.dup2(pipes.stderr, 2)
    os.dup2(pipes.result, RESULT_FD, inheritable=False)
    for low, high in CLOSE_RANGES:
        os.closerange(low, high)


INHERITED_LIMITS = (
    (resource.RLIMIT_CORE, 0),
    (resource.RLIMIT_MEMLOCK, 0),
    (resource.RLIMIT_STACK, STACK_BYTES),
    (resource.RLIMIT_MSGQUEUE, 0),
    (resource.RLIMIT_RTPRIO, 0),
    (resource.RLIMIT_SIGPENDING, SIGPENDING),
)
"""Fixed limits the fork server takes on itself once; each spare inherits them."""
SPARE_LIMITS = (
    (resource.RLIMIT_FSIZE, 0),
    (resource.RLIMIT_NPROC, NPROC),
)
"""Fixed limits set on each spare: not on the fork server, whose stderr may be a regular
file (a write to it would die of SIGXFSZ) and whose clones count against NPROC with every
process of its user (all zygotes' spares among them)."""
FIXED_LIMITS = INHERITED_LIMITS + SPARE_LIMITS
"""The same for every task, soft == hard so the program cannot raise them back; NOFILE is
set by the spare itself (`contain`), CPU and address space per request (`limit`)."""
