"""A pids cgroup per zygote: a bound on the processes and threads its tasks can create.

RLIMIT_NPROC is not enforced for root, and the service usually runs as root. Without
this bound a program that starts threads with small stacks (about 450 KB of address
space each under RLIMIT_AS) could start tens of thousands and use up the machine's
pids (`kernel.pid_max`, often 32768): no process on the host could fork until the
program's deadline. So the pool makes one cgroup per zygote beneath its own cgroup in
the pids hierarchy (cgroup v1 `pids`, or v2 where our cgroup delegates the `pids`
controller to its children), sets `pids.max`, and the zygote joins it first thing,
before it forks: its namespace init, fork server, spares and tasks all count against
that one limit. Where no writable pids hierarchy exists (a default Docker container
mounts cgroups read-only) the executor runs without the layer and says so; the
container's own limit (`docker run --pids-limit`, Kubernetes `podPidsLimit`) is then
the bound.

Only `os` and `errno` are imported: the zygote imports this module, and whatever it imports is
mapped into every task.
"""

from __future__ import annotations

import errno
import os

PIDS_MAX = "pids.max"
PROCS = "cgroup.procs"


def writable_root() -> str | None:
    """Our own cgroup's directory in a pids hierarchy we may write to, or None."""
    own = _own_cgroups()
    for root, mount_point, fstype, options in _cgroup_mounts():
        if fstype == "cgroup" and "pids" in options.split(","):
            path = own.get("pids")
        elif fstype == "cgroup2":
            path = own.get("")
        else:
            continue
        if path is None or not (path + "/").startswith(root.rstrip("/") + "/"):
            continue  # our cgroup is not beneath what this mount shows
        directory = os.path.normpath(os.path.join(mount_point, os.path.relpath(path, root)))
        if _delegates_pids(directory, fstype) and os.access(directory, os.W_OK):
            return directory
    return None


def create(parent: str, name: str, limit: int | None = None) -> str:
    """Make the cgroup `parent/name` (it must not exist) with at most `limit` pids in it.

    Raises:
        OSError: the directory or its limit could not be written.
    """
    path = os.path.join(parent, name)
    os.mkdir(path)
    if limit is not None:
        try:
            _write(os.path.join(path, PIDS_MAX), str(limit))
        except OSError:
            os.rmdir(path)
            raise
    return path


def join(path: str) -> None:
    """Move the calling process into the cgroup at `path`; its children follow it there.

    Raises:
        OSError: not permitted, or `path` is not a cgroup.
    """
    _write(os.path.join(path, PROCS), "0")


def remove(path: str) -> bool:
    """Remove the cgroup at `path` (children first); False while processes remain in it."""
    try:
        children = [entry.path for entry in os.scandir(path) if entry.is_dir()]
        if not all(remove(child) for child in children):
            return False
        os.rmdir(path)
    except FileNotFoundError:
        pass  # removed already
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        raise
    return True


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _own_cgroups() -> dict[str, str]:
    """Controller name → our cgroup's path in its hierarchy ("" for cgroup v2)."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def _cgroup_mounts() -> list[tuple[str, str, str, str]]:
    """(root in the hierarchy, mount point, fstype, super options) of each cgroup mount."""
    mounts = []
    with open("/proc/self/mountinfo") as lines:
        for line in lines:
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                mounts.append((_unescape(fields[3]), _unescape(fields[4]), tail[0], tail[2]))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def _delegates_pids(directory: str, fstype: str) -> bool:
    """v1: every directory of a pids hierarchy limits pids; v2: only below a cgroup whose
    `cgroup.subtree_control` enables the controller for its children."""
    if fstype == "cgroup":
        return os.path.exists(os.path.join(directory, PROCS))
    try:
        with open(os.path.join(directory, "cgroup.subtree_control")) as control:
            return "pids" in control.read().split()
    except OSError:
        return False
