"""What the sandbox's processes are doing, as the kernel reports it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import psutil


def waiting_in(processes: Iterable[psutil.Process], kernel_function: str) -> list[psutil.Process]:
    """The processes blocked in that kernel function (/proc/PID/wchan).

    Task processes cannot be told from idle spares by their command line or their
    parent; by what they wait in they can: a program in time.sleep waits in a
    nanosleep, an idle spare in a pipe read, a zygote in epoll.
    """
    found = []
    for process in processes:
        with contextlib.suppress(OSError):
            if kernel_function in Path(f"/proc/{process.pid}/wchan").read_text():
                found.append(process)
    return found
