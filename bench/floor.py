"""The floor of fork-per-program: how close to a bare fork any design can get.

Run as `python -I bench/floor.py` with a JSON list of standard-library-only programs on
stdin; prints programs per second as JSON. A lean interpreter (the lean zygote's
preloads, heap frozen) forks one child per program, two loops at a time on two cores,
in three modes interleaved round by round:

- bare: the child writes one byte to a pipe and exits (the ceiling's work plus a pipe);
- exec: the child compiles and exec()s the program first, with no isolation at all;
- seccomp: the child also loads potsandbox's syscall filter before running the program.

Nothing else: no Landlock, rlimits, namespaces, answer, supervision or driver. The
ratios exec/bare and seccomp/bare bound what any fork-per-program executor can reach
against the bare-fork ceiling.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import sys
import time

from potsandbox.executor import bpf, preload

MODES = ("bare", "exec", "seccomp")


def child(program: str, mode: str, pipe: int, devnull: int, filter_: bpf.SeccompFilter) -> None:
    """One task of the floor: optionally the filter, optionally the program, then exit."""
    os.dup2(devnull, 1)
    if mode == "seccomp":
        bpf.set_no_new_privs()
        filter_.install(os.getpid())
    if mode != "bare":
        with contextlib.suppress(BaseException):  # a program's failure is not the floor's business
            exec(compile(program, "<program>", "exec"), {"__name__": "__main__"})
    os.write(pipe, b"x")
    os._exit(0)


def loop(programs: list[str], mode: str, devnull: int, filter_: bpf.SeccompFilter) -> None:
    for program in programs:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            child(program, mode, write_end, devnull, filter_)
        os.close(write_end)
        os.read(read_end, 1)
        os.close(read_end)
        os.waitpid(pid, 0)


def rate(programs: list[str], mode: str, devnull: int, filter_: bpf.SeccompFilter) -> float:
    """Programs per second with the work split over two forked loops."""
    started = time.perf_counter()
    helper = os.fork()
    if helper == 0:
        loop(programs[1::2], mode, devnull, filter_)
        os._exit(0)
    loop(programs[0::2], mode, devnull, filter_)
    os.waitpid(helper, 0)
    return len(programs) / (time.perf_counter() - started)


def main() -> None:
    programs = json.load(sys.stdin)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    preload.preload("lean")
    filter_ = bpf.SeccompFilter(bpf.compile_in_child())
    devnull = os.open(os.devnull, os.O_WRONLY)
    gc.collect()
    gc.freeze()
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            figures[mode].append(rate(programs, mode, devnull, filter_))
    json.dump({mode: statistics.median(values) for mode, values in figures.items()}, sys.stdout)


if __name__ == "__main__":
    main()
