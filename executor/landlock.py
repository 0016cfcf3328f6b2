"""Landlock: confine a task child to reading the Python prefix, whatever its uid may read.

A `Ruleset` is built once in the zygote (`Ruleset.read_only(paths)`) and enforced once,
after no_new_privs, by the fork server with `restrict_self()`: every spare it clones
inherits the domain, and loads its syscall filter afterwards. It
handles every filesystem right the kernel's ABI knows and grants only reading beneath
the given paths, so writes, creation, removal, truncation, device ioctls and reads
elsewhere (/etc, /proc/<ppid>/environ, other tasks' files) fail with EACCES. With ABI
>= 4 it also handles TCP bind/connect with no rule (both denied); with ABI >= 6 it
scopes signals and abstract unix sockets to the domain. That domain is the fork
server's, shared by its spares: scoping keeps a task from the zygote, the server and the
host, while sibling tasks are kept apart by the syscall filter (signals only to the
task's own pid, no sockets).

The bindings are a few ctypes calls of syscalls 444-446: no suitable well-kept library
exists on PyPI (the `landlock` package is a pre-release), and the zygote must not
depend on one. Honest limits: Landlock does not restrict stat/readlink/getxattr on
paths, nor files opened before `restrict_self()` (keep only fds 0-2 and the result fd).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

# Filesystem rights (linux/landlock.h) and the ABI that introduced them.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
_ACCESS_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5
ACCESS_NET_BIND_TCP = 1 << 0  # ABI 4
ACCESS_NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

READ_DIR_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
"""Granted beneath a directory: read files, list directories (no EXECUTE: dlopen is mmap)."""
READ_FILE_RIGHTS = ACCESS_FS_READ_FILE
"""Granted on a single file: directory rights on a file are rejected by the kernel."""


class _RulesetAttr(ctypes.Structure):
    """struct landlock_ruleset_attr (ABI 6 layout; the size passed follows the ABI)."""

    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    """struct landlock_path_beneath_attr, packed as in the kernel header."""

    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long


def _call(name: str, nr: int, *args: int) -> int:
    """Make a raw syscall with 64-bit arguments; raise OSError naming it on failure."""
    result = int(_syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return result


def abi_version() -> int:
    """The Landlock ABI the running kernel offers; 0 when it is missing or disabled."""
    try:
        return _call("landlock_create_ruleset", _SYS_CREATE_RULESET, 0, 0, _CREATE_RULESET_VERSION)
    except OSError:
        return 0


def handled_fs(abi: int) -> int:
    """Every filesystem right the given ABI knows (all of them are handled, hence denied)."""
    rights = _ACCESS_FS_ABI1
    if abi >= 2:
        rights |= ACCESS_FS_REFER
    if abi >= 3:
        rights |= ACCESS_FS_TRUNCATE
    if abi >= 5:
        rights |= ACCESS_FS_IOCTL_DEV
    return rights


def _attr_size(abi: int) -> int:
    """The struct size the ABI understands (fs only; + net from 4; + scoped from 6)."""
    if abi >= 6:
        return 24
    return 16 if abi >= 4 else 8


class Ruleset:
    """A Landlock ruleset built once in the zygote and enforced by the fork server."""

    def __init__(self, fd: int, features: tuple[str, ...]) -> None:
        """Wrap an open ruleset fd; use `read_only` to build one."""
        self._fd = fd
        self._features = features

    @classmethod
    def read_only(cls, paths: Iterable[str]) -> Ruleset:
        """Deny every filesystem right except reading beneath `paths` (missing ones skipped).

        Raises:
            OSError: Landlock is unavailable (ENOSYS/EOPNOTSUPP), or a rule was refused.
        """
        abi = abi_version()
        if abi == 0:
            raise OSError(errno.EOPNOTSUPP, "landlock_create_ruleset: Landlock is not available")
        attr = _RulesetAttr(handled_fs(abi), 0, 0)
        features = ["fs"]
        if abi >= 4:
            attr.handled_access_net = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP
            features.append("net")
        if abi >= 6:
            attr.scoped = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET
            features.append("scope")
        size = _attr_size(abi)
        fd = _call("landlock_create_ruleset", _SYS_CREATE_RULESET, ctypes.addressof(attr), size, 0)
        ruleset = cls(fd, tuple(features))
        try:
            for path in dict.fromkeys(paths):
                ruleset._allow_reading(path)
        except BaseException:
            ruleset.close()
            raise
        return ruleset

    @property
    def features(self) -> tuple[str, ...]:
        """Active layers, for the health report: "fs", plus "net" (ABI >= 4), "scope" (ABI >= 6)."""
        return self._features

    @property
    def fd(self) -> int:
        """The ruleset fd, -1 once `restrict_self` or `close` has released it."""
        return self._fd

    def _allow_reading(self, path: str) -> None:
        """Grant read rights beneath `path` (file rights only for a file); skip it if missing."""
        try:
            parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            is_dir = stat.S_ISDIR(os.fstat(parent).st_mode)
            rule = _PathBeneathAttr(READ_DIR_RIGHTS if is_dir else READ_FILE_RIGHTS, parent)
            _call(
                f"landlock_add_rule({path})",
                _SYS_ADD_RULE,
                self._fd,
                _RULE_PATH_BENEATH,
                ctypes.addressof(rule),
                0,
            )
        finally:
            os.close(parent)

    def restrict_self(self) -> None:
        """Enforce the ruleset on the calling process (after no_new_privs), then close its fd copy.

        The zygote's own copy stays open; no spare, and so no program, ever holds one.

        Raises:
            OSError: landlock_restrict_self failed (EPERM without no_new_privs or CAP_SYS_ADMIN).
        """
        _call("landlock_restrict_self", _SYS_RESTRICT_SELF, self._fd, 0)
        self.close()

    def close(self) -> None:
        """Release the ruleset fd (in the zygote at shutdown); safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
