"""The task child's syscall policy (x86_64), compiled once in the zygote, loaded per child.

The policy is data: the tables below, one per group, each with the reason for its
action. `build_filter()` compiles them once in the zygote with libseccomp (binary
tree, unknown architectures killed) and exports the BPF program; the rules that
must name the task's own pid compare against `PID_PLACEHOLDER`. Each forked child
then calls `bpf.SeccompFilter.install(os.getpid())`, which patches the placeholder and
loads the program with prctl (~0.2 ms, against ~5 ms for building it per child). The
zygote itself never imports this module: `bpf.compile_in_child` runs `build_filter` in
a throwaway process.

Evaluation order: architecture (anything but x86_64, and the x32 ABI, is killed),
then the syscall number; the arguments only for the `GUARDED` rules. Every syscall
in no table is killed (SIGSYS), like the `TRIPWIRES`, which only an attack makes.
Denials a normal program can stumble on return an errno instead, so an honest
program sees an ordinary `PermissionError` (or the ENOSYS/ENOTTY a library already
handles) rather than dying.

Honest limits: arguments that are pointers (paths, clone3's struct, sockaddrs) cannot
be inspected by seccomp; paths are Landlock's job (`landlock.py`). Calls that read
facts about other processes (getpgid, getpriority, sched_getaffinity of another pid)
stay allowed: a pid namespace hides them, this filter does not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pyseccomp as seccomp

from potsandbox.executor.bpf import PID_PLACEHOLDER

ALLOW: int = seccomp.ALLOW
KILL_PROCESS: int = seccomp.KILL_PROCESS
ERRNO_EPERM: int = seccomp.ERRNO(errno.EPERM)
ERRNO_ENOSYS: int = seccomp.ERRNO(errno.ENOSYS)
ERRNO_ENOTTY: int = seccomp.ERRNO(errno.ENOTTY)

# Syscalls newer than libseccomp 2.5.4's table (it resolves up to 456 on x86_64).
_NEWER_SYSCALLS = {
    "statmount": 457,
    "listmount": 458,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
    "open_tree_attr": 467,
}

# ---------------------------------------------------------------------------------
# ALLOW: what CPython, numpy/OpenBLAS, scipy, sympy, mpmath and threads use after the
# fork (strace -f of a warm zygote's children running benign workloads and a corpus
# sample), plus read-only queries an honest program may reach through the stdlib.

FD_IO = (
    # Reading and writing descriptors the child already holds (stdout/stderr and
    # result pipes, files opened read-only); writes to read-only fds fail with EBADF.
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "lseek", "close", "close_range", "dup", "dup2", "dup3",
    "poll", "ppoll", "select", "pselect6", "fsync", "fdatasync", "fadvise64", "readahead",
)  # fmt: skip
FILE_READ = (
    # Lazy imports (sympy submodules, scipy extension modules) stat, list and read
    # files beneath the library prefix; Landlock decides which paths are readable.
    # umask only shapes files the task cannot create.
    "stat", "fstat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "statfs", "fstatfs",
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    "getxattrat", "listxattrat", "umask",
)  # fmt: skip
MEMORY = (
    # malloc, numpy buffers and dlopen. PROT_WRITE|PROT_EXEC is NOT denied: libffi
    # 3.4 (Debian 12) maps a W+X anonymous page for every ctypes.CFUNCTYPE callback,
    # and its fallbacks (memfd, temp file) are forbidden here, so denying W+X made
    # callbacks raise MemoryError (measured). ctypes already gives the program
    # arbitrary syscalls, so W^X would protect nothing here.
    "brk", "mmap", "munmap", "mremap", "mprotect", "msync", "mincore",
)  # fmt: skip
THREADS = (
    # threading, ThreadPoolExecutor and OpenBLAS workers: futexes, per-thread glibc
    # set-up (rseq, robust list, TLS), waiting, exiting. arch_prctl: OpenBLAS asks
    # for AMX state with ARCH_REQ_XCOMP_PERM when it loads on Sapphire Rapids.
    "futex", "futex_waitv", "set_robust_list", "rseq", "set_tid_address", "membarrier",
    "sched_yield", "gettid", "arch_prctl", "exit", "exit_group", "wait4", "waitid",
)  # fmt: skip
SIGNALS = (
    # Handlers, masks and waiting on one's own signals (signal, faulthandler, sigwait).
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigsuspend", "sigaltstack", "pause", "restart_syscall",
)  # fmt: skip
TIME = (
    # Clocks, sleeps and the process's own timers (time.sleep, signal.alarm/setitimer,
    # process_time); the vDSO covers most reads, CPU-time clocks still trap.
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "alarm", "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime",
    "timer_getoverrun", "timer_delete", "times",
)  # fmt: skip
QUERIES = (
    # Read-only facts about the process and machine (os.getpid, resource.getrusage,
    # os.cpu_count, platform.uname, os.urandom, OpenBLAS's core count).
    "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid",
    "getresgid", "getgroups", "getpgrp", "getpgid", "getsid", "capget", "getrusage",
    "getrlimit", "sysinfo", "uname", "getrandom", "getcpu", "getpriority", "ioprio_get",
    "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_getattr",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
)  # fmt: skip
ALLOWED = FD_IO + FILE_READ + MEMORY + THREADS + SIGNALS + TIME + QUERIES

# ---------------------------------------------------------------------------------
# ERRNO(EPERM): things an honest program may try (subprocess, tempfile, sockets);
# it gets PermissionError, which the executor reports as "blocked".

PROCESSES = (
    # No new processes or programs: clone without CLONE_THREAD is refused below.
    "fork", "vfork", "execve", "execveat",
)  # fmt: skip
FILE_WRITE = (
    # The filesystem is read-only for the task (Landlock is the second layer).
    "creat", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "mknod", "mknodat", "chmod",
    "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "truncate", "ftruncate", "fallocate", "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "setxattrat", "removexattrat",
    # Inode locks are a channel between tasks (isolate); global flushes hit the host.
    "flock", "sync", "syncfs", "sync_file_range",
)  # fmt: skip
NETWORK = (
    # No sockets at all: no network, no abstract unix sockets, no AF_ALG/AF_VSOCK.
    "socket", "socketpair", "connect", "accept", "accept4", "bind", "listen", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "getsockname",
    "getpeername", "setsockopt", "getsockopt",
)  # fmt: skip
NEW_KERNEL_OBJECTS = (
    # New descriptors and kernel objects: memory outside RLIMIT_AS (pipes, memfd),
    # cross-task channels (SysV/POSIX IPC), event machinery a math program never needs.
    "pipe", "pipe2", "eventfd", "eventfd2", "signalfd", "signalfd4", "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl_old", "epoll_wait_old",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "fanotify_init", "fanotify_mark", "memfd_create", "memfd_secret",
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
    "shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
)  # fmt: skip
DATA_MOVERS = (
    # Kernel-side copies between descriptors (Dirty Pipe went through splice).
    "splice", "tee", "vmsplice", "sendfile", "copy_file_range",
)  # fmt: skip
PRIVILEGE = (
    # Identity, session, root/cwd, priority, limits and clocks stay as the child set them.
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups", "capset", "setsid", "setpgid", "chdir", "fchdir", "chroot",
    "personality", "sethostname", "setdomainname", "setrlimit", "setpriority",
    "sched_setparam", "sched_setscheduler", "sched_setaffinity", "sched_setattr",
    "ioprio_set", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    # Installing further filters or rulesets could only narrow this one; refuse anyway.
    "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
)  # fmt: skip
MEMORY_POLICY = (
    # NUMA and locking knobs. Not tripwires: OpenBLAS calls mbind(MPOL_PREFERRED) on
    # every new buffer (traced: scipy.linalg's lazy load, numpy linalg in a worker
    # thread) and ignores the result, so EPERM costs nothing and KILL would kill it.
    "mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node", "mlock",
    "mlock2", "munlock", "mlockall", "munlockall", "pkey_mprotect", "pkey_alloc",
    "pkey_free", "remap_file_pages", "mseal", "map_shadow_stack", "cachestat",
)  # fmt: skip
DENIED = (
    PROCESSES + FILE_WRITE + NETWORK + NEW_KERNEL_OBJECTS + DATA_MOVERS + PRIVILEGE
    + MEMORY_POLICY
)  # fmt: skip

# ERRNO(ENOSYS): newer interfaces whose arguments live in memory the filter cannot
# read; glibc falls back to clone/openat, whose flags the filter does check.
FALLBACK = ("clone3", "openat2")

# ---------------------------------------------------------------------------------
# KILL_PROCESS tripwires: no math program makes these; only an escape or
# reward-hacking attempt does. Same action as the default, listed so the tests pin
# them and nobody moves one into another table by accident.
TRIPWIRES = (
    # Reaching into other processes.
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_send_signal",
    "pidfd_getfd", "kcmp", "process_madvise", "process_mrelease", "migrate_pages",
    "move_pages",
    # Kernel attack surface and channels that bypass seccomp (io_uring) or persist
    # across tasks (keyrings).
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key",
    # Namespaces and mounts.
    "unshare", "setns", "mount", "umount2", "pivot_root", "fsopen", "fsmount", "fsconfig",
    "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr", "statmount",
    "listmount", "open_by_handle_at", "name_to_handle_at",
    # The machine itself.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "acct",
    "swapon", "swapoff", "reboot", "syslog", "iopl", "ioperm", "modify_ldt", "quotactl",
    "quotactl_fd", "lookup_dcookie",
)  # fmt: skip

# ---------------------------------------------------------------------------------
# Arguments the guarded rules compare.

CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
THREAD_OR_NAMESPACE = CLONE_THREAD | CLONE_NAMESPACES
OPEN_WRITE_FLAGS = (
    os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | 0o20000000
)  # the last is __O_TMPFILE alone: O_TMPFILE also carries O_DIRECTORY, which must pass
IOCTL_REQUESTS = (
    0x5401,  # TCGETS: isatty(), io.open's buffering choice
    0x5413,  # TIOCGWINSZ: os.get_terminal_size
    0x541B,  # FIONREAD: bytes waiting on a pipe
    0x5421,  # FIONBIO: os.set_blocking (CPython uses it instead of fcntl on Linux)
    0x5450,  # FIONCLEX: os.set_inheritable
    0x5451,  # FIOCLEX: os.set_inheritable
)
# F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC
FCNTL_COMMANDS = (0, 1, 2, 3, 4, 1030)
PRCTL_OPTIONS = (15, 16)  # PR_SET_NAME, PR_GET_NAME: thread names
MADV_HWPOISON = 100  # the first of the privileged advice values (poison, offline, guard)


@dataclass(frozen=True, slots=True)
class Cmp:
    """`args[arg] <op> value`, or `args[arg] & mask == value` for MASKED_EQ; 64-bit."""

    arg: int
    op: int
    value: int
    mask: int = 0

    def to_arg(self) -> seccomp.Arg:
        """The libseccomp comparison."""
        if self.op == seccomp.MASKED_EQ:
            return seccomp.Arg(self.arg, self.op, self.mask, self.value)
        return seccomp.Arg(self.arg, self.op, self.value)


@dataclass(frozen=True, slots=True)
class Rule:
    """`action` for `syscall` when every comparison in `when` holds."""

    syscall: str
    action: int
    when: tuple[Cmp, ...] = ()


def _one_of(syscall: str, arg: int, values: tuple[int, ...], otherwise: int) -> tuple[Rule, ...]:
    """Allow `syscall` when `args[arg]` is one of `values` (all 64 bits), else `otherwise`.

    libseccomp cannot negate a set, so the refusal is a catch-all (`>= 0`) on the same
    argument, which it places after the equality tests (pinned by the tests). Values
    with high bits set are refused: stricter than the kernel's 32-bit view, never laxer.
    """
    allowed = tuple(Rule(syscall, ALLOW, (Cmp(arg, seccomp.EQ, v),)) for v in values)
    return (*allowed, Rule(syscall, otherwise, (Cmp(arg, seccomp.GE, 0),)))


def _own_pid_only(syscall: str) -> tuple[Rule, ...]:
    """Allow a signal only when its first argument (the target tgid) is the task itself."""
    return (
        Rule(syscall, ALLOW, (Cmp(0, seccomp.EQ, PID_PLACEHOLDER),)),
        Rule(syscall, ERRNO_EPERM, (Cmp(0, seccomp.NE, PID_PLACEHOLDER),)),
    )


def _read_only_open(syscall: str, flags_arg: int) -> tuple[Rule, ...]:
    """Allow opening only without a write, create, truncate, append or tmpfile flag."""
    return (
        Rule(syscall, ALLOW, (Cmp(flags_arg, seccomp.MASKED_EQ, 0, OPEN_WRITE_FLAGS),)),
        Rule(syscall, ERRNO_EPERM, (Cmp(flags_arg, seccomp.GE, 0),)),
    )


GUARDED: tuple[Rule, ...] = (
    # Threads yes, processes no: an honest fork/subprocess gets PermissionError; a
    # thread that also asks for a namespace is an attack and is killed (default).
    Rule("clone", ALLOW, (Cmp(0, seccomp.MASKED_EQ, CLONE_THREAD, THREAD_OR_NAMESPACE),)),
    Rule("clone", ERRNO_EPERM, (Cmp(0, seccomp.MASKED_EQ, 0, CLONE_THREAD),)),
    *_read_only_open("open", 1),
    *_read_only_open("openat", 2),
    # Terminal queries and close-on-exec/non-blocking toggles only (no TIOCSTI, no
    # device ioctls); ENOTTY is what CPython and libc treat as "not supported here".
    *_one_of("ioctl", 1, IOCTL_REQUESTS, ERRNO_ENOTTY),
    # Descriptor flags and duplication; no locks, leases, owners, notify or pipe sizes.
    *_one_of("fcntl", 1, FCNTL_COMMANDS, ERRNO_EPERM),
    *_one_of("prctl", 0, PRCTL_OPTIONS, ERRNO_EPERM),
    # resource.getrlimit (glibc uses prlimit64(0, r, NULL, &old)); no setting, no others.
    Rule("prlimit64", ALLOW, (Cmp(0, seccomp.EQ, 0), Cmp(2, seccomp.EQ, 0))),
    Rule("prlimit64", ERRNO_EPERM, (Cmp(0, seccomp.NE, 0),)),
    Rule("prlimit64", ERRNO_EPERM, (Cmp(2, seccomp.NE, 0),)),
    # os.abort, signal.raise_signal, pthread_kill target the task itself; the parent,
    # kill(-1) and process groups are refused. tkill names no tgid, so it is refused.
    *_own_pid_only("kill"),
    *_own_pid_only("tgkill"),
    *_own_pid_only("rt_sigqueueinfo"),
    *_own_pid_only("rt_tgsigqueueinfo"),
    Rule("tkill", ERRNO_EPERM),
    # glibc frees memory with MADV_DONTNEED, numpy asks for MADV_HUGEPAGE; the
    # privileged advice (HWPOISON, SOFT_OFFLINE) and the guard-page advice above it
    # are refused.
    Rule("madvise", ALLOW, (Cmp(2, seccomp.LT, MADV_HWPOISON),)),
    Rule("madvise", ERRNO_EPERM, (Cmp(2, seccomp.GE, MADV_HWPOISON),)),
)


def policy() -> Iterator[Rule]:
    """Every rule of the filter; the default (any other syscall) is KILL_PROCESS."""
    tables = ((ALLOWED, ALLOW), (DENIED, ERRNO_EPERM), (FALLBACK, ERRNO_ENOSYS))
    for names, action in tables:
        for name in names:
            yield Rule(name, action)
    yield from GUARDED


def syscall_number(name: str) -> int:
    """The x86_64 number of a syscall, including those newer than libseccomp's table."""
    if name in _NEWER_SYSCALLS:
        return _NEWER_SYSCALLS[name]
    number = int(seccomp.resolve_syscall(seccomp.Arch.X86_64, name))
    if number < 0:
        raise ValueError(f"unknown x86_64 syscall {name!r}")
    return number


def _check_tables() -> None:
    """Refuse a policy that names a syscall in two tables (the later rule would be shadowed)."""
    unconditional = [*ALLOWED, *DENIED, *FALLBACK, *TRIPWIRES]
    guarded = {rule.syscall for rule in GUARDED}
    repeated = {name for name in unconditional if unconditional.count(name) > 1}
    twice = repeated | (guarded & set(unconditional))
    if twice:
        raise ValueError(f"syscalls listed twice in the seccomp policy: {sorted(twice)}")


def build_filter() -> bytes:
    """Compile the policy to a BPF program (8-byte sock_filter records), once, in the zygote.

    Raises:
        OSError: not x86_64, or libseccomp refused a rule (names the syscall).
    """
    machine = platform.machine()
    if machine != "x86_64":
        raise OSError(errno.EOPNOTSUPP, f"the seccomp policy is x86_64-only, not {machine}")
    _check_tables()
    syscall_filter = seccomp.SyscallFilter(KILL_PROCESS)
    syscall_filter.set_attr(seccomp.Attr.ACT_BADARCH, KILL_PROCESS)
    with contextlib.suppress(OSError):  # libseccomp < 2.5 only builds the linear layout
        syscall_filter.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)  # binary tree: half the load time
    for rule in policy():
        comparisons = [cmp.to_arg() for cmp in rule.when]
        try:
            syscall_filter.add_rule(rule.action, syscall_number(rule.syscall), *comparisons)
        except OSError as exc:
            raise OSError(exc.errno, f"seccomp_rule_add({rule.syscall}): {exc.strerror}") from exc
    with tempfile.TemporaryFile() as out:
        syscall_filter.export_bpf(out)
        out.seek(0)
        return out.read()
