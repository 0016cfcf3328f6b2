"""The seccomp policy: each rule on the compiled BPF (interpreter), then live in forked children."""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import json
import os
import platform
import resource
import select
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np  # preloaded, as the zygote does
import pytest
import sympy

from bpf_interp import AUDIT_ARCH_I386, X32_SYSCALL_BIT, SeccompData, describe, run

if platform.machine() != "x86_64":
    pytest.skip("the seccomp policy is x86_64-only", allow_module_level=True)
try:
    from potsandbox.executor import bpf, seccomp
except (ImportError, RuntimeError) as exc:  # pyseccomp raises RuntimeError without libseccomp
    pytest.skip(f"pyseccomp/libseccomp unavailable: {exc}", allow_module_level=True)


def _kernel_has_seccomp_filters() -> bool:
    """/proc/self/status lists Seccomp_filters when the kernel has CONFIG_SECCOMP_FILTER."""
    with open("/proc/self/status") as status:
        return any(line.startswith("Seccomp_filters:") for line in status)


live = pytest.mark.skipif(
    not _kernel_has_seccomp_filters(), reason="the kernel has no seccomp filter support"
)

PID = 4242
OTHER_PID = 4243
ALLOW, KILL = "ALLOW", "KILL_PROCESS"
EPERM, ENOSYS, ENOTTY = f"ERRNO({errno.EPERM})", f"ERRNO({errno.ENOSYS})", f"ERRNO({errno.ENOTTY})"
HIGH = 1 << 32


@pytest.fixture(scope="module")
def compiled() -> bytes:
    """The program as the zygote exports it (placeholder pid)."""
    return seccomp.build_filter()


def test_compile_in_child_returns_the_same_program(compiled: bytes) -> None:
    """The zygote's way (a throwaway child builds it) gives the bytes build_filter gives."""
    assert bpf.compile_in_child() == compiled


@pytest.fixture(scope="module")
def program(compiled: bytes) -> bytes:
    """The program as a child with pid PID loads it."""
    return bpf.SeccompFilter(compiled).patched(PID)


def verdict(program: bytes, syscall: str | int, *args: int, arch: int | None = None) -> str:
    """What the filter answers for one synthetic syscall."""
    nr = syscall if isinstance(syscall, int) else seccomp.syscall_number(syscall)
    data = SeccompData(nr, args) if arch is None else SeccompData(nr, args, arch)
    return describe(run(program, data))


# --- every table, one syscall at a time ---------------------------------------------


@pytest.mark.parametrize("name", seccomp.ALLOWED)
def test_allowed_syscall_returns_allow(program: bytes, name: str) -> None:
    assert verdict(program, name) == ALLOW


@pytest.mark.parametrize("name", seccomp.DENIED)
def test_denied_syscall_returns_eperm(program: bytes, name: str) -> None:
    assert verdict(program, name) == EPERM


@pytest.mark.parametrize("name", seccomp.FALLBACK)
def test_fallback_syscall_returns_enosys(program: bytes, name: str) -> None:
    assert verdict(program, name) == ENOSYS


@pytest.mark.parametrize("name", seccomp.TRIPWIRES)
def test_tripwire_kills_process(program: bytes, name: str) -> None:
    assert verdict(program, name) == KILL


def test_every_unlisted_syscall_kills_process(program: bytes) -> None:
    listed = {seccomp.syscall_number(r.syscall) for r in seccomp.policy()}
    unlisted = [nr for nr in range(0, 470) if nr not in listed]
    assert unlisted, "the policy cannot list every syscall"
    assert {nr: verdict(program, nr) for nr in unlisted} == dict.fromkeys(unlisted, KILL)


@pytest.mark.parametrize("nr", [1000, 0x3FFFFFFF, -1, 0x7FFFFFFF])
def test_out_of_range_number_kills_process(program: bytes, nr: int) -> None:
    assert verdict(program, nr) == KILL


def test_program_fits_the_kernel_limit(compiled: bytes) -> None:
    assert len(compiled) // 8 <= 4096  # BPF_MAXINSNS


def test_duplicate_table_entry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp, "ALLOWED", (*seccomp.ALLOWED, "ptrace"))
    with pytest.raises(ValueError, match="ptrace"):
        seccomp.build_filter()


# --- architecture -----------------------------------------------------------------


I386_CALLS = [0, 1, 3, 4, 11, 120, 190]  # restart, exit, read, write, execve, clone, vfork


@pytest.mark.parametrize("nr", I386_CALLS)
def test_i386_syscall_kills_process(program: bytes, nr: int) -> None:
    assert verdict(program, nr, arch=AUDIT_ARCH_I386) == KILL


@pytest.mark.parametrize("arch", [0xC00000B7, 0x40000028, 0])  # aarch64, arm, garbage
def test_foreign_arch_kills_process(program: bytes, arch: int) -> None:
    assert verdict(program, "read", arch=arch) == KILL


@pytest.mark.parametrize("nr", [0, 1, 39, 56, 101, 512, 520, 545])  # read .. x32 execve
def test_x32_syscall_kills_process(program: bytes, nr: int) -> None:
    assert verdict(program, X32_SYSCALL_BIT | nr) == KILL


# --- guarded arguments --------------------------------------------------------------

CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_VFORK, CLONE_SYSVSEM, CLONE_SETTLS = 0x4000, 0x40000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x1000000
GLIBC_THREAD = (
    CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | seccomp.CLONE_THREAD | CLONE_SYSVSEM
    | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID
)  # fmt: skip
GLIBC_FORK = CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | signal.SIGCHLD
NAMESPACES = {
    "newns": 0x20000,
    "newcgroup": 0x02000000,
    "newuts": 0x04000000,
    "newipc": 0x08000000,
    "newuser": 0x10000000,
    "newpid": 0x20000000,
    "newnet": 0x40000000,
}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(GLIBC_THREAD, ALLOW, id="pthread_create"),
        pytest.param(GLIBC_THREAD | HIGH, ALLOW, id="thread-high-bits-ignored-by-kernel-too"),
        pytest.param(GLIBC_FORK, EPERM, id="fork"),
        pytest.param(CLONE_VM | CLONE_VFORK | signal.SIGCHLD, EPERM, id="posix_spawn"),
        pytest.param(0, EPERM, id="bare"),
        *(pytest.param(ns, EPERM, id=f"process-{n}") for n, ns in NAMESPACES.items()),
        *(pytest.param(GLIBC_THREAD | ns, KILL, id=f"thread-{n}") for n, ns in NAMESPACES.items()),
    ],
)
def test_clone_allows_threads_only(program: bytes, flags: int, expected: str) -> None:
    assert verdict(program, "clone", flags) == expected


WRITE_FLAGS = {
    "O_WRONLY": os.O_WRONLY,
    "O_RDWR": os.O_RDWR,
    "O_CREAT": os.O_CREAT,
    "O_TRUNC": os.O_TRUNC,
    "O_APPEND": os.O_APPEND,
    "O_TMPFILE": os.O_TMPFILE | os.O_RDWR,
    "__O_TMPFILE-alone": os.O_TMPFILE & ~os.O_DIRECTORY,
    "O_EXCL|O_CREAT": os.O_EXCL | os.O_CREAT,
    "O_WRONLY|high": os.O_WRONLY | HIGH,
}
READ_FLAGS = {
    "O_RDONLY": os.O_RDONLY,
    "O_CLOEXEC": os.O_RDONLY | os.O_CLOEXEC,
    "O_DIRECTORY": os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NONBLOCK,  # os.listdir
    "O_PATH": os.O_PATH | os.O_NOFOLLOW,
    "O_NOATIME": os.O_NOATIME | os.O_LARGEFILE,
}


def _open_args(position: int, flags: int) -> list[int]:
    """open(path, flags) or openat(AT_FDCWD, path, flags)."""
    return [*[0xFFFFFF9C, 0x1000][2 - position :], flags]


@pytest.mark.parametrize("call", [("open", 1), ("openat", 2)], ids=["open", "openat"])
@pytest.mark.parametrize("flags", WRITE_FLAGS.values(), ids=WRITE_FLAGS.keys())
def test_open_with_write_flag_returns_eperm(
    program: bytes, call: tuple[str, int], flags: int
) -> None:
    name, position = call
    assert verdict(program, name, *_open_args(position, flags)) == EPERM


@pytest.mark.parametrize("call", [("open", 1), ("openat", 2)], ids=["open", "openat"])
@pytest.mark.parametrize("flags", READ_FLAGS.values(), ids=READ_FLAGS.keys())
def test_open_read_only_is_allowed(program: bytes, call: tuple[str, int], flags: int) -> None:
    name, position = call
    assert verdict(program, name, *_open_args(position, flags)) == ALLOW


TIOCSTI, TIOCSETD, TCSETS = 0x5412, 0x5423, 0x5402


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        *((r, ALLOW) for r in seccomp.IOCTL_REQUESTS),
        (TIOCSTI, ENOTTY),
        (TIOCSTI | HIGH, ENOTTY),  # CVE-2019-10063: high bits must not sneak past
        (0xFFFFFFFF00005412, ENOTTY),
        (0x5401 | HIGH, ENOTTY),  # allowed request with high bits: refused, never widened
        (TIOCSETD, ENOTTY),
        (TCSETS, ENOTTY),
        (0, ENOTTY),
        (0xC0184800, ENOTTY),  # a device _IOWR request
    ],
    ids=lambda v: hex(v) if isinstance(v, int) else v,
)
def test_ioctl_allows_listed_requests_only(program: bytes, command: int, expected: str) -> None:
    assert verdict(program, "ioctl", 1, command, 0) == expected


F_SETLK, F_SETLKW, F_SETOWN, F_SETSIG, F_SETLEASE, F_NOTIFY = 6, 7, 8, 10, 1024, 1026
F_SETPIPE_SZ, F_ADD_SEALS, F_OFD_SETLK = 1031, 1033, 37


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        *((c, ALLOW) for c in seccomp.FCNTL_COMMANDS),
        *((c, EPERM) for c in (F_SETLK, F_SETLKW, F_SETOWN, F_SETSIG, F_SETLEASE, F_NOTIFY)),
        *((c, EPERM) for c in (F_SETPIPE_SZ, F_ADD_SEALS, F_OFD_SETLK, 5, 1029)),
        (1 | HIGH, EPERM),
    ],
)
def test_fcntl_allows_fd_flags_only(program: bytes, command: int, expected: str) -> None:
    assert verdict(program, "fcntl", 3, command, 0) == expected


PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_MM, PR_CAP_AMBIENT = 1, 4, 35, 47
PR_SET_PTRACER = 0x59616D61


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (15, ALLOW),
        (16, ALLOW),
        (15 | HIGH, EPERM),
        (PR_SET_PDEATHSIG, EPERM),
        (PR_SET_DUMPABLE, EPERM),
        (PR_SET_PTRACER, EPERM),
        (PR_SET_MM, EPERM),
        (PR_CAP_AMBIENT, EPERM),
        (bpf.PR_SET_SECCOMP, EPERM),
        (bpf.PR_SET_NO_NEW_PRIVS, EPERM),
    ],
)
def test_prctl_allows_thread_names_only(program: bytes, option: int, expected: str) -> None:
    assert verdict(program, "prctl", option, 0x1000) == expected


@pytest.mark.parametrize("name", ["kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"])
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (PID, ALLOW),
        (OTHER_PID, EPERM),
        (1, EPERM),
        (0, EPERM),  # own process group
        (0xFFFFFFFF, EPERM),  # -1 as a 32-bit register
        (0xFFFFFFFFFFFFFFFF, EPERM),  # -1 sign-extended: every process
        ((-PID) & 0xFFFFFFFFFFFFFFFF, EPERM),  # a process group
        (PID | HIGH, EPERM),
        (bpf.PID_PLACEHOLDER, EPERM),
    ],
)
def test_signals_reach_own_pid_only(program: bytes, name: str, target: int, expected: str) -> None:
    assert verdict(program, name, target, PID, signal.SIGTERM) == expected


@pytest.mark.parametrize("target", [PID, OTHER_PID])
def test_tkill_returns_eperm(program: bytes, target: int) -> None:
    assert verdict(program, "tkill", target, signal.SIGTERM) == EPERM


def test_placeholder_is_what_an_unpatched_program_allows(compiled: bytes) -> None:
    assert verdict(compiled, "kill", bpf.PID_PLACEHOLDER, 0) == ALLOW
    assert verdict(compiled, "kill", PID, 0) == EPERM


def test_patching_again_replaces_the_pid(compiled: bytes) -> None:
    loaded = bpf.SeccompFilter(compiled)
    loaded.patched(PID)
    repatched = loaded.patched(OTHER_PID)
    assert verdict(repatched, "kill", OTHER_PID, 0) == ALLOW
    assert verdict(repatched, "kill", PID, 0) == EPERM


@pytest.mark.parametrize(
    ("pid", "new", "expected"),
    [
        (0, 0, ALLOW),  # resource.getrlimit
        (0, 0x7FFC0000, EPERM),  # resource.setrlimit
        (PID, 0, EPERM),
        (1, 0, EPERM),
        (HIGH, 0, EPERM),  # the kernel would read pid 0; refused anyway
        (0, HIGH, EPERM),
    ],
)
def test_prlimit64_reads_own_limits_only(program: bytes, pid: int, new: int, expected: str) -> None:
    assert verdict(program, "prlimit64", pid, 9, new, 0x7FFC1000) == expected


MADV_DONTNEED, MADV_FREE, MADV_HUGEPAGE, MADV_SOFT_OFFLINE, MADV_GUARD_INSTALL = 4, 8, 14, 101, 102


@pytest.mark.parametrize(
    ("advice", "expected"),
    [
        (MADV_DONTNEED, ALLOW),
        (MADV_FREE, ALLOW),
        (MADV_HUGEPAGE, ALLOW),
        (seccomp.MADV_HWPOISON, EPERM),
        (MADV_SOFT_OFFLINE, EPERM),
        (MADV_GUARD_INSTALL, EPERM),
        (MADV_DONTNEED | HIGH, EPERM),
    ],
)
def test_madvise_refuses_privileged_advice(program: bytes, advice: int, expected: str) -> None:
    assert verdict(program, "madvise", 0x7F0000000000, 4096, advice) == expected


PROT_RWX = 0x7


@pytest.mark.parametrize("name", ["mmap", "mprotect"])
def test_write_exec_memory_is_allowed_for_ctypes_callbacks(program: bytes, name: str) -> None:
    assert verdict(program, name, 0, 4096, PROT_RWX, 0x22, 0xFFFFFFFF, 0) == ALLOW


# --- the loader -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"", b"1234567", b"\x06\x00\x00\x00\x00\x00\xff\x7f"])
def test_malformed_or_placeholder_free_program_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        bpf.SeccompFilter(bad)


@pytest.mark.parametrize("pid", [0, -1, 2**31])
def test_install_refuses_impossible_pid(compiled: bytes, pid: int) -> None:
    with pytest.raises(ValueError, match="pid"):
        bpf.SeccompFilter(compiled).install(pid)


# --- live: a real fork, the real filter ----------------------------------------------

CHILD_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def loaded(compiled: bytes) -> bpf.SeccompFilter:
    """The filter prepared as the zygote prepares it."""
    return bpf.SeccompFilter(compiled)


def run_sandboxed(
    loaded: bpf.SeccompFilter | None, probe: Callable[[], object]
) -> tuple[int, object]:
    """Fork; the child installs `loaded` (None: no filter), runs `probe`, reports; reap it.

    Returns the wait status and ["ok", value] / ["errno", n] / ["raised", type name] /
    ["install failed", message], or None when the child died before reporting.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read_end)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS and SIGABRT dump core
            report: list[object]
            try:
                if loaded is not None:
                    bpf.set_no_new_privs()
                    loaded.install(os.getpid())
            except OSError as exc:
                report = ["install failed", str(exc)]
            else:
                try:
                    report = ["ok", probe()]
                except OSError as exc:
                    report = ["errno", exc.errno]
                except BaseException as exc:
                    report = ["raised", type(exc).__name__]
            os.write(write_end, json.dumps(report, default=repr).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    return _collect(pid, read_end)


def _collect(pid: int, read_end: int) -> tuple[int, object]:
    """Read the child's report until EOF or the deadline, then kill if needed and reap."""
    data = b""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([read_end], [], [], left)[0]:
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    return status, json.loads(data) if data else None


def killed_by(status: int) -> int | None:
    """The signal that ended the child, if any."""
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def _raw_syscall(nr: int, *args: int) -> int:
    """syscall(2) through ctypes, as a hostile program would; raises OSError on -1."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = int(libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _threads() -> list[int]:
    import concurrent.futures
    import threading

    out: list[int] = []
    workers = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return sorted(out) + sorted(pool.map(lambda v: v * v, range(8)))


def _numpy_in_threads() -> list[bool]:
    import concurrent.futures

    a = np.random.default_rng(0).random((400, 400)) + np.eye(400) * 400
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: float(np.linalg.inv(a).trace()), range(2))
    return [first == second, bool(np.linalg.eigvalsh(a @ a.T)[0] > 0)]


def _sympy() -> list[str]:
    x = sympy.Symbol("x")
    identity = sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
    return [str(sympy.solve(x**2 - 5 * x + 6, x)), str(sympy.factor(x**4 - 1)), str(identity)]


def _lazy_import(module: str) -> Callable[[], bool]:
    """Import `module` and its not-yet-loaded parents from disk, inside the sandbox."""

    def probe() -> bool:
        import importlib

        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]
        importlib.import_module(module)
        return True

    return probe


def _units() -> str:
    _lazy_import("sympy.physics.units")()
    import sympy.physics.units as units

    return str(units.convert_to(3 * units.kilometer, units.meter))


def _ctypes_callback() -> list[int]:
    values = (ctypes.c_int * 4)(3, 1, 4, 2)
    int_p = ctypes.POINTER(ctypes.c_int)
    compare = ctypes.CFUNCTYPE(ctypes.c_int, int_p, int_p)  # libffi maps a W+X page for this
    ctypes.CDLL(None).qsort(values, 4, 4, compare(lambda a, b: a[0] - b[0]))
    return list(values)


def _stdlib() -> str:
    import datetime
    import decimal
    import fractions
    import random
    import statistics

    signal.setitimer(signal.ITIMER_REAL, 5.0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.alarm(0)
    time.sleep(0.001)
    random.seed()
    listing = os.listdir(os.path.dirname(os.__file__))
    with open(os.__file__) as f:
        head = f.read(10)
    return " ".join(
        map(
            str,
            (
                fractions.Fraction(3, 4) + 1,
                decimal.Decimal(1) / 7,
                statistics.stdev([1, 2, 3, 4]),
                datetime.datetime.now().year > 2000,
                os.cpu_count(),
                resource.getrlimit(resource.RLIMIT_AS)[0] != 0,
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0,
                os.getcwd() != "",
                len(listing) > 10,
                head != "",
                len(os.urandom(8)),
                time.process_time() >= 0,
            ),
        )
    )


def _kill(target: Callable[[], int], sig: int = 0) -> Callable[[], bool]:
    def probe() -> bool:
        os.kill(target(), sig)
        return True

    return probe


def _raise_own_signal() -> list[int]:
    import threading

    seen: list[int] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    signal.raise_signal(signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
    return seen


def _socket() -> None:
    import socket

    socket.socket()


def _subprocess() -> None:
    import subprocess

    subprocess.run(["true"], check=False)


def _setrlimit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))


def _prctl(option: int) -> Callable[[], int]:
    def probe() -> int:
        name = ctypes.create_string_buffer(b"task", 16)
        return _raw_syscall(157, option, ctypes.addressof(name))

    return probe


SYS_PTRACE, SYS_IO_URING_SETUP, SYS_CLONE3, SYS_UNSHARE = 101, 425, 435, 272


@live
@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        pytest.param(_threads, ["ok", [0, 1, 2, 3, 0, 1, 4, 9, 16, 25, 36, 49]], id="threads"),
        pytest.param(_numpy_in_threads, ["ok", [True, True]], id="numpy-linalg-in-threads"),
        pytest.param(_sympy, ["ok", ["[2, 3]", "(x - 1)*(x + 1)*(x**2 + 1)", "1"]], id="sympy"),
        pytest.param(_units, ["ok", "3000*meter"], id="lazy-sympy-physics-units"),
        pytest.param(_lazy_import("sympy.stats"), ["ok", True], id="lazy-sympy-stats"),
        pytest.param(_lazy_import("scipy.optimize"), ["ok", True], id="lazy-scipy-optimize"),
        pytest.param(_lazy_import("scipy.integrate"), ["ok", True], id="lazy-scipy-integrate"),
        pytest.param(_ctypes_callback, ["ok", [1, 2, 3, 4]], id="ctypes-callback"),
        pytest.param(_raise_own_signal, ["ok", [10, 10, 10]], id="signal-to-self"),
        pytest.param(_kill(os.getpid), ["ok", True], id="kill-self-0"),
        pytest.param(_prctl(15), ["ok", 0], id="prctl-set-name"),
    ],
)
def test_benign_program_runs_under_filter(
    loaded: bpf.SeccompFilter, probe: Callable[[], object], expected: list[object]
) -> None:
    status, report = run_sandboxed(loaded, probe)
    assert (killed_by(status), report) == (None, expected)


@live
def test_stdlib_controls_run_under_filter(loaded: bpf.SeccompFilter) -> None:
    status, report = run_sandboxed(loaded, _stdlib)
    assert killed_by(status) is None
    assert report == [
        "ok",
        f"7/4 0.1428571428571428571428571429 1.2909944487358056 True {os.cpu_count()} "
        "True True True True True 8 True",
    ]


@live
@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        pytest.param(_socket, ["errno", errno.EPERM], id="socket"),
        pytest.param(os.fork, ["errno", errno.EPERM], id="fork"),
        pytest.param(_subprocess, ["errno", errno.EPERM], id="subprocess"),
        pytest.param(os.pipe, ["errno", errno.EPERM], id="pipe"),
        pytest.param(_kill(os.getppid), ["errno", errno.EPERM], id="kill-parent"),
        pytest.param(_kill(lambda: -1), ["errno", errno.EPERM], id="kill-everyone"),
        pytest.param(_kill(lambda: 1), ["errno", errno.EPERM], id="kill-init"),
        pytest.param(lambda: os.chdir("/"), ["errno", errno.EPERM], id="chdir"),
        pytest.param(_setrlimit, ["raised", "ValueError"], id="setrlimit"),
        pytest.param(_prctl(4), ["errno", errno.EPERM], id="prctl-set-dumpable"),
        pytest.param(lambda: _raw_syscall(SYS_CLONE3, 0, 0), ["errno", errno.ENOSYS], id="clone3"),
    ],
)
def test_blocked_call_fails_with_errno(
    loaded: bpf.SeccompFilter, probe: Callable[[], object], expected: list[object]
) -> None:
    status, report = run_sandboxed(loaded, probe)
    assert (killed_by(status), report) == (None, expected)


@pytest.fixture
def victim() -> Iterator[str]:
    """An existing file the sandboxed child must not be able to change."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "victim.txt")
        with open(path, "w") as f:
            f.write("intact")
        yield path


@live
@pytest.mark.parametrize("mode", ["w", "a", "r+", "x"])
def test_open_for_writing_returns_eperm_and_leaves_file_intact(
    loaded: bpf.SeccompFilter, victim: str, mode: str
) -> None:
    target = victim if mode != "x" else victim + ".new"
    status, report = run_sandboxed(loaded, lambda: open(target, mode).close())
    with open(victim) as f:
        assert (killed_by(status), report, f.read(), os.path.exists(victim + ".new")) == (
            None,
            ["errno", errno.EPERM],
            "intact",
            False,
        )


@live
@pytest.mark.parametrize(
    "probe",
    [
        pytest.param(lambda: _raw_syscall(SYS_PTRACE, 0, 0, 0, 0), id="ptrace-traceme"),
        pytest.param(lambda: _raw_syscall(SYS_PTRACE, 16, os.getppid(), 0, 0), id="ptrace-parent"),
        pytest.param(lambda: _raw_syscall(SYS_IO_URING_SETUP, 8, 0), id="io_uring_setup"),
        pytest.param(lambda: _raw_syscall(SYS_UNSHARE, 0x40000000), id="unshare-net"),
    ],
)
def test_tripwire_kills_child_with_sigsys(
    loaded: bpf.SeccompFilter, probe: Callable[[], object]
) -> None:
    status, report = run_sandboxed(loaded, probe)
    assert (killed_by(status), report) == (signal.SIGSYS, None)


def _abort() -> None:
    faulthandler.disable()  # pytest enables it; its dump would only add noise
    os.abort()


@live
def test_abort_still_dies_by_sigabrt(loaded: bpf.SeccompFilter) -> None:
    status, report = run_sandboxed(loaded, _abort)
    assert (killed_by(status), report) == (signal.SIGABRT, None)


@live
def test_invalid_program_fails_with_oserror_naming_prctl() -> None:
    jump_past_end = struct.pack("<HBBI", 0x15, 7, 7, bpf.PID_PLACEHOLDER)
    status, report = run_sandboxed(bpf.SeccompFilter(jump_past_end), lambda: None)
    assert (killed_by(status), report) == (
        None,
        ["install failed", "[Errno 22] prctl(PR_SET_SECCOMP): Invalid argument"],
    )


def _drop_to_nobody() -> None:
    """Lose CAP_SYS_ADMIN, so the kernel insists on no_new_privs as for the real service user."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)


@live
def test_install_without_no_new_privs_fails_with_eacces(loaded: bpf.SeccompFilter) -> None:
    def probe() -> None:
        _drop_to_nobody()
        loaded.install(os.getpid())

    status, report = run_sandboxed(None, probe)
    assert (killed_by(status), report) == (None, ["errno", errno.EACCES])
