"""Hostile programs under the full sandbox: each test is named by the verdict it expects.

One module-scoped Executor with lowered limits (2 s wall, 512 MiB, 64 KiB of output)
runs every program. Each negative test asserts the mechanism that stopped the attack
(EPERM/EACCES/ENOSYS errno, SIGSYS, the parent's SIGKILL at the deadline, RLIMIT_AS)
and has a positive twin: the same operation run by the test process itself or by a
plain `python -c` (`reached`), which must succeed, so that "blocked" never means
"nothing was there". After every test the executor must still answer benign programs
on every zygote flavour, and after the module no process of the executor is left.

Tests that depend on an isolation layer skip, naming it, when the executor reports it
missing: they are *not verified* then, never passed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil
import pytest

from potsandbox.executor import (
    Executor,
    LimitPolicy,
    Limits,
    PoolConfig,
    Result,
    Status,
    containment,
    pool,
)

from corpus import run_as_script

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 2.0
CPU_S = 4.0
MEMORY_MB = 512
OUTPUT_BYTES = 64 << 10
DEFAULT_LIMITS = {
    "timeout_s": TIMEOUT_S,
    "cpu_s": CPU_S,
    "memory_mb": MEMORY_MB,
    "output_bytes": OUTPUT_BYTES,
}
DEADLINE_SLACK_S = 0.5
"""The parent reports a timeout within ~50 ms of the deadline; this machine is noisy."""

CANARY_VARIABLE = "POTSANDBOX_CANARY"
CANARY = f"canary-{secrets.token_hex(8)}"
CANARY_BYTES = CANARY.encode()
"""Lives in the test process's memory at a known address (process_vm_readv, /proc/pid/mem)."""

REACHED = "REACHED"
"""Printed by an attack program once the operation succeeded (only ever in a twin)."""

CTYPES_PRELUDE = '''\
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def checked(result):
    """Raise the errno of a failed libc call, as the os module would."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result
'''
"""Raw syscalls for attack programs; given as the prelude, run before the program."""

BENIGN = {
    "lean": "ans = 6 * 7",
    "numpy": "import numpy\nans = int(numpy.int64(6) * 7)",
    "full": "import sympy\nans = int(sympy.Integer(6) * 7)",
}
"""Run after every hostile program: one per zygote flavour, each must answer 42."""

HELPER_PIDS: set[int] = set()
"""Processes this module started on purpose (the canary holder); not leftovers."""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ex() -> Iterator[Executor]:
    """The executor under attack; the canary is planted in our environment before it starts."""
    os.environ[CANARY_VARIABLE] = CANARY
    earlier = {p.pid for p in _descendants()}  # helpers of other test modules may live on
    policy = LimitPolicy(default=Limits(**DEFAULT_LIMITS))
    executor = Executor(
        PoolConfig(zygotes=1, numpy_zygotes=1, lean_zygotes=1, max_in_flight=2), policy
    )
    executor.start()
    try:
        workdir = executor.run("import os\nprint(os.getcwd())", convention="stdout").answer
        yield executor
    finally:
        executor.stop()
        os.environ.pop(CANARY_VARIABLE, None)
    assert workdir, "the executor never reported its work directory"
    ours = lambda: [p for p in _descendants() if p.pid not in earlier]  # noqa: E731
    assert _settled(lambda: not ours()), f"left behind: {ours()}"
    assert _settled(lambda: not _running_in(workdir)), f"left behind: {_running_in(workdir)}"


@pytest.fixture(autouse=True)
def still_answers(ex: Executor) -> Iterator[None]:
    """After each hostile program, every zygote flavour still runs a benign one correctly."""
    yield
    for flavour, program in BENIGN.items():
        result = ex.run(program)
        assert (result.status, result.answer) == (Status.OK, "42"), f"{flavour}: {show(result)}"


@pytest.fixture(scope="module")
def workdir(ex: Executor) -> Path:
    """The tasks' working directory (the pool's temporary directory)."""
    result = ex.run("import os\nprint(os.getcwd())", convention="stdout")
    assert result.status is Status.OK and result.answer, show(result)
    return Path(result.answer)


@pytest.fixture(scope="module")
def canary_holder() -> Iterator[int]:
    """A stand-in for a server process: the canary is in its initial environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), CANARY_VARIABLE: CANARY}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, env=env
    )
    HELPER_PIDS.add(process.pid)
    try:
        yield process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def tcp_canary() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1 that no task may reach."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.3)
        yield server


# --------------------------------------------------------------------------- helpers


def limits(**overrides: Any) -> Limits:
    """The module's lowered limits with some of them changed."""
    return Limits(**(DEFAULT_LIMITS | overrides))


def source(body: str, **values: Any) -> str:
    """Dedent `body` and define each value as a global above it."""
    header = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return header + textwrap.dedent(body)


def run(ex: Executor, program: str, *, prelude: str | None = None, **overrides: Any) -> Result:
    """Run one program in the sandbox with the module's limits (some overridden)."""
    return ex.run(program, prelude=prelude, limits=limits(**overrides))


def timed_run(ex: Executor, program: str, **overrides: Any) -> tuple[Result, float]:
    """Run and also measure the caller-side latency."""
    started = time.monotonic()
    result = run(ex, program, **overrides)
    return result, time.monotonic() - started


def plain(program: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a program in an ordinary interpreter: no sandbox, same machine, same user."""
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, **kwargs
    )


def reached(program: str, *, prelude: str = "", **kwargs: Any) -> str:
    """The positive twin: without the sandbox the operation must succeed (print REACHED)."""
    done = plain(prelude + program, **kwargs)
    assert done.returncode == 0 and REACHED in done.stdout, (
        "positive twin failed, so the negative test would prove nothing:\n"
        f"exit {done.returncode}\nstdout: {done.stdout[-500:]}\nstderr: {done.stderr[-1500:]}"
    )
    return done.stdout


def show(result: Result) -> str:
    """A Result in one assertion message."""
    return (
        f"{result.status.value} {result.error_type}: {result.error_message} "
        f"signal={result.signal} exit={result.exit_code} answer={result.answer!r} "
        f"wall={result.wall_time_s:.3f} cpu={result.cpu_time_s:.3f} "
        f"stdout={result.stdout[-300:]!r} stderr={result.stderr[-700:]!r}"
    )


def require(ex: Executor, *layers: str) -> None:
    """Skip (not verified) unless every named isolation layer is active."""
    missing = [layer for layer in layers if layer not in ex.layers]
    if missing:
        pytest.skip(
            f"not verified: isolation layer {', '.join(missing)} is not active "
            f"(active: {', '.join(ex.layers)})"
        )


def assert_blocked(result: Result, code: int) -> None:
    """Ended on the PermissionError the kernel (seccomp, Landlock) returned."""
    assert result.status is Status.BLOCKED, show(result)
    assert result.error_type == "PermissionError", show(result)
    assert (result.error_message or "").startswith(f"[Errno {code}]"), show(result)
    assert REACHED not in result.stdout, show(result)


def assert_host_process_unreachable(ex: Executor, result: Result) -> None:
    """Landlock refuses /proc of other processes; with a private /proc they do not exist."""
    if "private-proc" in ex.layers and result.error_type == "FileNotFoundError":
        assert result.status is Status.ERROR, show(result)
        assert (result.error_message or "").startswith(f"[Errno {errno.ENOENT}]"), show(result)
        assert REACHED not in result.stdout, show(result)
        return
    assert_blocked(result, errno.EACCES)


def assert_killed_by_sigsys(result: Result) -> None:
    """Killed by the seccomp filter at the attacking call, not before and not after."""
    assert result.status is Status.BLOCKED, show(result)
    assert result.error_type == "PolicyViolation", show(result)
    assert result.signal == signal.SIGSYS, show(result)
    assert result.stdout == "before\n", show(result)


def assert_timed_out(result: Result, elapsed: float, timeout_s: float = TIMEOUT_S) -> None:
    """Killed by the parent's wall clock, reported within the slack of the deadline."""
    assert result.status is Status.TIMEOUT, show(result)
    assert result.error_type == "Timeout", show(result)
    assert timeout_s - 0.05 <= result.wall_time_s <= timeout_s + DEADLINE_SLACK_S, show(result)
    assert elapsed <= timeout_s + DEADLINE_SLACK_S, f"reported after {elapsed:.3f} s"


def assert_memory_limit(result: Result) -> None:
    """Stopped by RLIMIT_AS: the allocation failed with MemoryError."""
    assert result.status is Status.MEMORY_LIMIT, show(result)
    assert result.error_type == "MemoryError", show(result)


def assert_output_limit(result: Result, stream: str, head: str) -> None:
    """Killed at the output cap with the head of the stream kept."""
    assert result.status is Status.OUTPUT_LIMIT, show(result)
    assert result.error_type == "OutputLimit", show(result)
    assert result.truncated, show(result)
    text = getattr(result, stream)
    assert len(text.encode()) == OUTPUT_BYTES, len(text.encode())
    assert text.startswith(head), text[:100]
    assert result.wall_time_s < TIMEOUT_S, show(result)


def pending(server: socket.socket) -> int:
    """Connections waiting on a listener (accepting and closing them)."""
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except TimeoutError:
            return count
        connection.close()
        count += 1


def zygote_pids(ex: Executor) -> set[int]:
    """The executor's zygotes (the processes it started; spares and tasks come and go)."""
    return {zygote.process.pid for zygote in ex.pool.zygotes}


def serving_zygotes(ex: Executor) -> set[int]:
    """The processes that run the zygotes' loops and read every task's output: in a pid
    namespace each started process's one child (the namespace's init), else the process."""
    started = zygote_pids(ex)
    if "pidns" not in ex.layers:
        return started
    return {child.pid for pid in started for child in psutil.Process(pid).children()}


def _descendants() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in HELPER_PIDS and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _running_in(workdir: str) -> list[int]:
    """Processes anywhere whose command line names the executor's work directory."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if workdir in " ".join(process.info["cmdline"] or ()):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def _settled(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def canary_address() -> int:
    """Where CANARY_BYTES' contents live in this process."""
    address = id(CANARY_BYTES) + sys.getsizeof(b"") - 1
    assert ctypes.string_at(address, len(CANARY_BYTES)) == CANARY_BYTES
    return address


# =========================================================================== time


def test_sum_range_10_12_times_out(ex: Executor) -> None:
    result, elapsed = timed_run(ex, "sum(range(10**12))")
    assert_timed_out(result, elapsed)


def test_python_while_true_loop_times_out(ex: Executor) -> None:
    result, elapsed = timed_run(ex, "n = 0\nwhile True:\n    n += 1")
    assert_timed_out(result, elapsed)


def test_catastrophic_regex_backtracking_times_out(ex: Executor) -> None:
    result, elapsed = timed_run(ex, 'import re\nre.match(r"(a+)+$", "a" * 40 + "b")')
    assert_timed_out(result, elapsed)


def test_huge_bigint_power_times_out(ex: Executor) -> None:
    result, elapsed = timed_run(ex, "x = 10 ** (10 ** 10)")
    assert_timed_out(result, elapsed)


def test_sleep_past_the_deadline_times_out_without_using_cpu(ex: Executor) -> None:
    result, elapsed = timed_run(ex, "import time\ntime.sleep(30)")
    assert_timed_out(result, elapsed)
    assert result.cpu_time_s < 0.5, "a sleeping task must be ended by the wall clock"


def test_self_deadlock_on_a_lock_times_out(ex: Executor) -> None:
    program = "import threading\nlock = threading.Lock()\nlock.acquire()\nlock.acquire()"
    result, elapsed = timed_run(ex, program)
    assert_timed_out(result, elapsed)


def test_busy_thread_joined_by_main_times_out(ex: Executor) -> None:
    program = """
    import threading

    def spin():
        while True:
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    worker.join()
    """
    result, elapsed = timed_run(ex, textwrap.dedent(program))
    assert_timed_out(result, elapsed)


def test_self_sigstop_times_out_at_the_deadline(ex: Executor) -> None:
    result, elapsed = timed_run(ex, "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)")
    assert_timed_out(result, elapsed)


LINGERING_THREAD = """
import threading

def linger():
    while True:
        pass

threading.Thread(target=linger, daemon={daemon}).start()
ans = 5
print("REACHED")
"""


def test_lingering_non_daemon_thread_times_out_as_it_hangs_plain_python(ex: Executor) -> None:
    """Plain CPython waits for the thread at exit, forever: the deadline ends both."""
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", LINGERING_THREAD.format(daemon=False)], timeout=1)
    result, elapsed = timed_run(ex, LINGERING_THREAD.format(daemon=False))
    assert_timed_out(result, elapsed)
    assert "REACHED" in result.stdout, show(result)
    result = run(ex, "ans = 6")
    assert (result.status, result.answer) == (Status.OK, "6"), show(result)


def test_lingering_daemon_thread_does_not_hold_the_answer(ex: Executor) -> None:
    reached(LINGERING_THREAD.format(daemon=True))
    result = run(ex, LINGERING_THREAD.format(daemon=True))
    assert (result.status, result.answer) == (Status.OK, "5"), show(result)


def test_cpu_limit_below_the_wall_limit_times_out_as_cpu_limit(ex: Executor) -> None:
    result = run(ex, "while True:\n    pass", timeout_s=6.0, cpu_s=1.0)
    assert result.status is Status.TIMEOUT, show(result)
    assert result.error_type == "CpuLimit", show(result)
    assert result.signal in (signal.SIGXCPU, signal.SIGKILL), show(result)
    assert result.cpu_time_s >= 0.9, show(result)  # rusage's total is the exact run time
    assert result.wall_time_s < 6.0, show(result)


CPU_UNTIL = "import time\nwhile time.process_time() < {seconds}:\n    pass\nans = 1"


def test_cpu_beyond_a_fractional_limit_is_timeout_cpu_limit(ex: Executor) -> None:
    """The kernel counts RLIMIT_CPU in whole seconds, so 0.2 s is enforced as 1 s: a program
    that stops on its own at 0.5 s still went past its limit, and is reported so."""
    result = run(ex, CPU_UNTIL.format(seconds=0.5), timeout_s=10.0, cpu_s=0.2)
    assert (result.status, result.error_type) == (Status.TIMEOUT, "CpuLimit"), show(result)
    assert result.exit_code == 0 and result.cpu_time_s > 0.2, show(result)


def test_cpu_within_a_fractional_limit_is_ok(ex: Executor) -> None:
    result = run(ex, CPU_UNTIL.format(seconds=0.05), timeout_s=10.0, cpu_s=0.3)
    assert (result.status, result.answer) == (Status.OK, "1"), show(result)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGXCPU])
def test_self_kill_after_most_of_the_cpu_limit_is_crashed_not_cpu_limit(
    ex: Executor, signum: int
) -> None:
    """Two threads burn 1.2 CPU-seconds of a 2 s limit, then the program kills itself: the
    limit was not reached, so this is its own crash, whatever share of the limit it used."""
    program = (
        "import hashlib, os, threading, time\n"
        "data = b'x' * (1 << 20)\n"
        "def burn():\n"
        "    while time.thread_time() < 0.6:\n"
        "        hashlib.sha256(data).digest()\n"
        "workers = [threading.Thread(target=burn) for _ in range(2)]\n"
        "for w in workers: w.start()\n"
        "for w in workers: w.join()\n"
        f"os.kill(os.getpid(), {int(signum)})\n"
    )
    result = run(ex, program, timeout_s=20.0, cpu_s=2.0)
    assert result.status is Status.CRASHED, show(result)
    assert (result.error_type, result.signal) == (signal.Signals(signum).name, signum), show(result)
    assert result.cpu_time_s >= 1.0, show(result)  # the old rule (half the limit) said CpuLimit


# =========================================================================== memory


def test_str_bomb_is_memory_limit(ex: Executor) -> None:
    program = 'blob = "x" * (1 << 30)\nprint("REACHED", len(blob))'
    reached(program)
    result = run(ex, program)
    assert_memory_limit(result)
    assert result.peak_memory_mb < 200 + MEMORY_MB, show(result)


def test_list_bomb_is_memory_limit(ex: Executor) -> None:
    program = 'items = [0] * (1 << 27)\nprint("REACHED", len(items))'
    reached(program)
    assert_memory_limit(run(ex, program))


def test_bytearray_bomb_is_memory_limit(ex: Executor) -> None:
    program = 'blob = bytearray(1 << 30)\nprint("REACHED", len(blob))'
    reached(program)
    assert_memory_limit(run(ex, program))


def as_script(program: str, tmp_path: Path, **kwargs: Any) -> str:
    """What plain python3 prints on stderr when `program` fails as a script file."""
    done = run_as_script(program, tmp_path, **kwargs)
    assert done.returncode != 0, done
    return done.stderr


def _limit_address_space() -> None:
    limit = (MEMORY_MB + 256) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_memory_limit_prints_the_traceback_plain_python_prints(
    ex: Executor, tmp_path: Path
) -> None:
    program = "def grow():\n    return bytearray(1 << 30)\n\nblob = grow()\n"
    expected = as_script(program, tmp_path, preexec_fn=_limit_address_space)
    result = run(ex, program)
    assert_memory_limit(result)
    assert expected.endswith("MemoryError\n") and result.stderr == expected, show(result)


def test_a_programs_own_class_named_memory_error_is_error_not_memory_limit(
    ex: Executor,
) -> None:
    program = "class MemoryError(Exception):\n    pass\n\nraise MemoryError('not memory')"
    result = run(ex, program)
    assert result.status is Status.ERROR, show(result)
    assert (result.error_type, result.error_message) == ("MemoryError", "not memory")
    assert result.peak_memory_mb < 200, show(result)


def test_nesting_too_deep_for_the_compiler_is_error_recursion_error(
    ex: Executor, tmp_path: Path
) -> None:
    """The compiler's own RecursionError fails the script (no frame of it, so no traceback);
    it escaped the harness, which ended with status 70."""
    program = "ans = 1" + "+1" * 300_000
    expected = as_script(program, tmp_path)
    result = run(ex, program)
    assert (result.status, result.error_type) == (Status.ERROR, "RecursionError"), show(result)
    assert (
        result.stderr
        == expected
        == ("RecursionError: maximum recursion depth exceeded during compilation\n")
    )


def test_numpy_ones_50000_square_is_memory_limit(ex: Executor) -> None:
    body = 'import numpy as np\nmatrix = np.{}((50000, 50000))\nprint("REACHED", matrix.nbytes)'
    reached(body.format("empty"))  # the same 18.6 GiB allocation, without touching it
    result = run(ex, body.format("ones"))
    assert_memory_limit(result)
    assert "Unable to allocate 18.6 GiB" in (result.error_message or ""), show(result)


def test_anonymous_mmap_of_1_tib_is_refused_enomem(ex: Executor) -> None:
    program = """
    import mmap

    MAP_NORESERVE = 0x4000
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
    try:
        mapping = mmap.mmap(-1, 1 << 40, flags=flags)
    except OSError as exc:
        print("errno", exc.errno)
    else:
        print("REACHED", len(mapping))
    """
    reached(textwrap.dedent(program))
    result = run(ex, textwrap.dedent(program))
    assert (result.status, result.stdout) == (Status.OK, f"errno {errno.ENOMEM}\n"), show(result)


def test_growing_list_of_10_mb_chunks_is_memory_limit(ex: Executor) -> None:
    result = run(ex, "chunks = []\nwhile True:\n    chunks.append(' ' * 10**7)", timeout_s=20.0)
    assert_memory_limit(result)


def test_many_small_allocations_bomb_is_memory_limit(ex: Executor) -> None:
    """Exhaustion by tiny objects leaves no headroom for the harness's error report."""
    program = "cells = []\nwhile True:\n    cells.append([0] * 100)"
    result = run(ex, program, memory_mb=64, timeout_s=20.0, cpu_s=40.0)
    assert_memory_limit(result)


def test_sympy_expansion_blowup_is_memory_limit(ex: Executor) -> None:
    program = "import sympy\nx = sympy.Symbol('x')\nsympy.expand((x + 1) ** 200000)"
    result = run(ex, program, memory_mb=128, timeout_s=20.0, cpu_s=40.0)
    assert_memory_limit(result)


def test_thread_bomb_is_stopped_with_runtime_error(ex: Executor) -> None:
    program = """
    import threading
    import time

    threads = [threading.Thread(target=time.sleep, args=(1,), daemon=True) for _ in range(200)]
    for thread in threads:
        thread.start()
    print("REACHED")
    """
    reached(textwrap.dedent(program))
    result = run(ex, textwrap.dedent(program))
    assert result.status is Status.ERROR, show(result)
    assert result.error_type == "RuntimeError", show(result)
    assert "can't start new thread" in (result.error_message or ""), show(result)


SMALL_STACK_THREAD_BOMB = """
import threading
import time

threading.stack_size(32768)
started = 0
try:
    while started < 2000:
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        started += 1
finally:
    print(started)
print("REACHED")
"""


def test_small_stack_thread_bomb_stops_at_the_zygotes_pids_cgroup(ex: Executor) -> None:
    """RLIMIT_AS allows ~2,300 such threads per GiB and RLIMIT_NPROC does not bind root:
    only the pids cgroup keeps the host's pids (often 32,768 in all) out of reach."""
    require(ex, "pids-cgroup")
    reached(SMALL_STACK_THREAD_BOMB)
    result = run(ex, SMALL_STACK_THREAD_BOMB, memory_mb=2048)
    assert result.status is Status.ERROR, show(result)
    assert (result.error_type, result.error_message) == (
        "RuntimeError",
        "can't start new thread",
    ), show(result)
    limit = containment.NPROC + pool.PIDS_OVERHEAD
    assert limit // 2 < int(result.stdout) < limit, show(result)


TIMER_BOMB = (
    CTYPES_PRELUDE
    + """
timer = ctypes.c_void_p()
created = 0
try:
    while created < 5000:
        checked(libc.timer_create(1, None, ctypes.byref(timer)))  # CLOCK_MONOTONIC
        created += 1
finally:
    print(created)
print("REACHED")
"""
)


def test_posix_timer_bomb_stops_at_rlimit_sigpending_eagain(ex: Executor) -> None:
    """Each timer pins kernel memory outside RLIMIT_AS; the host allows ~96k per user."""
    reached(TIMER_BOMB)
    result = run(ex, TIMER_BOMB)
    assert result.status is Status.ERROR, show(result)
    assert result.error_type == "BlockingIOError", show(result)  # EAGAIN
    assert 0 < int(result.stdout) <= containment.SIGPENDING, show(result)


def test_descriptor_exhaustion_stops_at_rlimit_nofile_emfile(ex: Executor) -> None:
    program = 'import os\nfiles = [open(os.devnull) for _ in range(200)]\nprint("REACHED")'
    reached(program)
    result = run(ex, program)
    assert result.status is Status.ERROR, show(result)
    assert result.error_type == "OSError", show(result)
    assert (result.error_message or "").startswith(f"[Errno {errno.EMFILE}]"), show(result)


# =========================================================================== output


def test_print_flood_on_stdout_is_output_limit(ex: Executor) -> None:
    assert_output_limit(run(ex, "while True:\n    print('x' * 1000)"), "stdout", "x" * 1000)


def test_flood_on_stderr_is_output_limit(ex: Executor) -> None:
    program = "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)"
    assert_output_limit(run(ex, program), "stderr", "y" * 1000)


def test_os_write_flood_on_fd_1_is_output_limit(ex: Executor) -> None:
    program = "import os\nwhile True:\n    os.write(1, b'z' * 4096)"
    assert_output_limit(run(ex, program), "stdout", "z" * 4096)


def test_one_100_mb_line_is_output_limit(ex: Executor) -> None:
    program = "import sys\nsys.stdout.write('a' * 10**8)\nsys.stdout.flush()"
    assert_output_limit(run(ex, program), "stdout", "a" * 1000)


@pytest.mark.parametrize("path", ["/proc/self/fd/1", "/proc/self/fd/2", "/dev/stdout"])
def test_writing_stdout_by_path_is_blocked_eperm(ex: Executor, path: str) -> None:
    require(ex, "seccomp")
    program = source(
        """
        with open(PATH, "w") as stream:
            stream.write("REACHED\\n")
        """,
        PATH=path,
    )
    done = plain(program)
    assert done.returncode == 0 and REACHED in done.stdout + done.stderr, done
    assert_blocked(run(ex, program), errno.EPERM)


def test_stderr_filled_before_the_answer_does_not_deadlock(ex: Executor) -> None:
    program = "import sys\nsys.stderr.write('e' * (512 << 10))\nsys.stderr.flush()\nans = 42"
    result = run(ex, program, output_bytes=1 << 20)
    assert (result.status, result.answer) == (Status.OK, "42"), show(result)
    assert len(result.stderr) == 512 << 10
    assert not result.truncated


def test_invalid_utf8_and_nul_bytes_are_replaced_not_dropped(ex: Executor) -> None:
    program = (
        "import os\n"
        "os.write(1, b'ok \\xff\\xfe bad \\x00 nul\\n')\n"
        "os.write(2, b'err \\xc3\\x28 \\x00\\n')\n"
        "ans = 'a\\x00b'"
    )
    result = run(ex, program)
    assert result.status is Status.OK, show(result)
    assert result.stdout == "ok \ufffd\ufffd bad \x00 nul\n"
    assert result.stderr == "err \ufffd( \x00\n"
    assert result.answer == "a\x00b"


def test_undecodable_output_at_the_largest_cap_is_kept_whole_and_harms_no_zygote(
    ex: Executor,
) -> None:
    """Every byte becomes U+FFFD, three bytes of UTF-8: the verdict carrying 22 MiB of such
    output is 66 MiB, and must reach the pool like any other, not pass for a dead zygote."""
    program = (
        "import sys\n"
        "sys.stdout.buffer.write(b'\\xff' * (16 << 20))\n"
        "sys.stderr.buffer.write(b'\\xff' * (6 << 20))\n"
        "ans = 42"
    )
    before = zygote_pids(ex), ex.pool.restarts
    result = run(ex, program, timeout_s=20.0, output_bytes=16 << 20)
    assert (result.status, result.answer) == (Status.OK, "42"), show(result)
    assert (result.stdout, result.stderr) == ("\ufffd" * (16 << 20), "\ufffd" * (6 << 20))
    assert (zygote_pids(ex), ex.pool.restarts) == before, "a zygote died or was replaced"


PACKET_MODE = """
import fcntl
import os

fcntl.fcntl(1, fcntl.F_SETFL, os.O_DIRECT)  # each write a packet, each read one packet
"""


def test_output_in_packet_mode_is_read_to_its_end(ex: Executor) -> None:
    program = PACKET_MODE + "for i in range(10):\n    print(i, flush=True)"
    result = run(ex, program)
    assert (result.status, result.stdout) == (Status.OK, "".join(f"{i}\n" for i in range(10)))


def test_output_in_packet_mode_past_the_cap_is_output_limit(ex: Executor) -> None:
    """Fifteen packets fit the pipe without blocking the writer, so the task ends before
    its pipes are watched: reading only the first packet, the parent saw 4,096 bytes."""
    program = PACKET_MODE + "for _ in range(15):\n    os.write(1, b'x' * 4096)\nans = 42"
    result = run(ex, program, output_bytes=10_000)
    assert (result.status, result.error_type) == (Status.OUTPUT_LIMIT, "OutputLimit"), show(result)
    assert (result.stdout, result.truncated) == ("x" * 10_000, True), show(result)


def test_millions_of_output_lines_cost_the_zygote_no_more_than_their_bytes(ex: Executor) -> None:
    """The last line of stdout is the answer; finding it by splitting every line made a
    zygote's memory grow 35 times the output (half a gigabyte for 32 MiB of short lines)."""
    program = (
        "import sys\n"
        "sys.stdout.buffer.write(b'ab\\n' * ((15 << 20) // 3))\n"
        "sys.stderr.buffer.write(b'ab\\n' * ((15 << 20) // 3))\n"
        "print(42)"
    )
    peaks = {pid: _peak_rss_kb(pid) for pid in serving_zygotes(ex)}
    result = ex.run(program, convention="stdout", limits=limits(output_bytes=16 << 20))
    assert (result.status, result.answer) == (Status.OK, "42"), show(result)
    grown = {pid: _peak_rss_kb(pid) - peak for pid, peak in peaks.items()}
    assert max(grown.values()) < 200 << 10, f"a zygote's peak memory grew (KiB): {grown}"


def test_a_task_cannot_leave_flags_on_the_stdin_of_later_tasks() -> None:
    """stdin is at end of file as from /dev/null, but a pipe of the task's own: flags set on
    one /dev/null shared by a zygote's tasks stayed set in every later task."""
    reader = "import fcntl\nans = oct(fcntl.fcntl(0, fcntl.F_GETFL))"
    writer = (
        "import fcntl, os\n"
        "fcntl.fcntl(0, fcntl.F_SETFL, os.O_NONBLOCK | os.O_APPEND | os.O_NOATIME)\n"
        "ans = oct(fcntl.fcntl(0, fcntl.F_GETFL))"
    )
    with Executor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1)) as lone:
        fresh = lone.run(reader)
        changed = lone.run(writer)
        later = lone.run(reader)
    assert fresh.status is Status.OK, show(fresh)
    assert changed.answer != fresh.answer, show(changed)
    assert (later.status, later.answer) == (Status.OK, fresh.answer), show(later)


def test_lone_surrogate_in_the_answer_is_replaced_not_fatal(ex: Executor) -> None:
    result = run(ex, "ans = 'a\\udcffb'")
    assert (result.status, result.answer) == (Status.OK, "a?b"), show(result)


def test_a_megabyte_exception_class_name_is_error_with_the_name_cut(ex: Executor) -> None:
    """The report must fit its pipe whatever the program names its classes."""
    program = "E = type('E' * (2 << 20), (Exception,), {})\nraise E('m')"
    result = run(ex, program, output_bytes=8 << 20)
    assert result.status is Status.ERROR, show(result)
    assert (result.error_type, result.error_message) == ("E" * 200, "m"), show(result)
    assert result.stderr.endswith("E" * 1000 + ": m\n"), show(result)


HOSTILE_STR = """
class S(str):
    def __getitem__(self, key):
        return object()

    def __len__(self):
        raise ValueError("len")
"""
"""A str whose slicing and length are the program's: the report must never call them."""

HOSTILE_TEXT_IN_THE_REPORT = {
    "exception message": (
        "class E(Exception):\n    def __str__(self):\n        return S('x')\nraise E()",
        (Status.ERROR, None, "E", "x"),
    ),
    "exception class name": (
        "class E(Exception):\n    pass\nE.__name__ = S('E')\nraise E('m')",
        (Status.ERROR, None, "E", "m"),
    ),
    "answer": (
        "class A:\n    def __str__(self):\n        return S('r')\nans = A()",
        (Status.OK, "r", None, None),
    ),
    "errno": (
        "class N(int):\n    def __eq__(self, other):\n        raise ValueError\n"
        "    __hash__ = int.__hash__\ne = PermissionError('x')\ne.errno = N(1)\nraise e",
        (Status.ERROR, None, "PermissionError", "x"),
    ),
}


@pytest.mark.parametrize("case", HOSTILE_TEXT_IN_THE_REPORT)
def test_program_text_with_hostile_methods_is_reported_as_plain_text(
    ex: Executor, case: str
) -> None:
    program, expected = HOSTILE_TEXT_IN_THE_REPORT[case]
    result = run(ex, HOSTILE_STR + program)
    got = (result.status, result.answer, result.error_type, result.error_message)
    assert got == expected, show(result)


def test_flushed_stdout_survives_a_segfault(ex: Executor) -> None:
    program = "import ctypes\nprint(42, flush=True)\nctypes.string_at(0)"
    result = run(ex, program)
    assert result.status is Status.CRASHED, show(result)
    assert (result.error_type, result.signal) == ("SIGSEGV", signal.SIGSEGV), show(result)
    assert result.stdout == "42\n"


# =========================================================================== processes


def test_os_fork_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import os

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("REACHED")
    """
    reached(textwrap.dedent(program))
    assert_blocked(run(ex, textwrap.dedent(program)), errno.EPERM)


def test_vfork_via_ctypes_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    pid = libc.syscall(58)  # vfork
    if pid == 0:
        libc._exit(0)
    checked(pid)
    os.wait()
    print("REACHED")
    """
    reached(textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    assert_blocked(run(ex, textwrap.dedent(program), prelude=CTYPES_PRELUDE), errno.EPERM)


def test_raw_clone_syscall_via_ctypes_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import signal

    pid = libc.syscall(56, signal.SIGCHLD, 0, 0, 0, 0)  # clone: a fork
    if pid == 0:
        os._exit(0)
    checked(pid)
    os.waitpid(pid, 0)
    print("REACHED")
    """
    reached(textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    assert_blocked(run(ex, textwrap.dedent(program), prelude=CTYPES_PRELUDE), errno.EPERM)


def test_clone_with_a_new_network_namespace_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import signal

    pid = libc.syscall(56, 0x40000000 | signal.SIGCHLD, 0, 0, 0, 0)  # CLONE_NEWNET
    if pid == 0:
        os._exit(0)
    checked(pid)
    os.waitpid(pid, 0)
    print("REACHED")
    """
    reached(textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    assert_blocked(run(ex, textwrap.dedent(program), prelude=CTYPES_PRELUDE), errno.EPERM)


def test_clone3_via_ctypes_is_refused_enosys_before_the_kernel(ex: Executor) -> None:
    """A size-0 clone3 reaches the kernel as EINVAL; the filter answers ENOSYS first."""
    require(ex, "seccomp")
    program = 'libc.syscall(435, None, 0)\nprint("errno", ctypes.get_errno())'
    assert plain(CTYPES_PRELUDE + program).stdout == f"errno {errno.EINVAL}\n"
    result = run(ex, program, prelude=CTYPES_PRELUDE)
    assert (result.status, result.stdout) == (Status.OK, f"errno {errno.ENOSYS}\n"), show(result)


def test_subprocess_run_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = 'import subprocess\nsubprocess.run(["true"], check=True)\nprint("REACHED")'
    reached(program)
    assert_blocked(run(ex, program), errno.EPERM)


def test_multiprocessing_process_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import multiprocessing

    worker = multiprocessing.Process(target=int)
    worker.start()
    worker.join()
    print("REACHED", worker.exitcode)
    """
    reached(textwrap.dedent(program))
    assert_blocked(run(ex, textwrap.dedent(program)), errno.EPERM)


def test_os_system_starts_no_shell_and_returns_127(ex: Executor) -> None:
    require(ex, "seccomp")
    program = 'import os\nprint("status", os.system("true"))'
    assert plain(program).stdout == "status 0\n"
    result = run(ex, program)
    assert (result.status, result.stdout) == (Status.OK, f"status {127 << 8}\n"), show(result)


def test_libc_system_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    if libc.system(b"true") != 0:
        raise OSError(ctypes.get_errno(), "system() started no shell")
    print("REACHED")
    """
    reached(textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    assert_blocked(run(ex, textwrap.dedent(program), prelude=CTYPES_PRELUDE), errno.EPERM)


def test_os_execv_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = (
        'import os, sys\nos.execv(sys.executable, [sys.executable, "-c", "print(\'REACHED\')"])'
    )
    reached(program)
    assert_blocked(run(ex, program), errno.EPERM)


def test_pty_forkpty_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import os

    pid, fd = os.forkpty()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("REACHED")
    """
    reached(textwrap.dedent(program))
    assert_blocked(run(ex, textwrap.dedent(program)), errno.EPERM)


def test_pty_fork_fails_without_a_child(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import os
    import pty

    try:
        pid, fd = pty.fork()
    except OSError as exc:
        print("refused", type(exc).__name__)
    else:
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print("REACHED")
    """
    reached(textwrap.dedent(program))
    result = run(ex, textwrap.dedent(program))
    assert (result.status, result.stdout) == (Status.OK, "refused OSError\n"), show(result)


def test_posix_spawn_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import os
    import sys

    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], {})
    os.waitpid(pid, 0)
    print("REACHED")
    """
    reached(textwrap.dedent(program))
    assert_blocked(run(ex, textwrap.dedent(program)), errno.EPERM)


def test_subclasses_walk_to_posix_fork_is_still_blocked_eperm(ex: Executor) -> None:
    """Language-level escapes reach the same kernel: the filter still answers."""
    require(ex, "seccomp")
    program = """
    wrap = next(c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "_wrap_close")
    posix = wrap.__init__.__globals__
    pid = posix["fork"]()
    if pid == 0:
        posix["_exit"](0)
    posix["waitpid"](pid, 0)
    print("REACHED")
    """
    reached(textwrap.dedent(program))
    assert_blocked(run(ex, textwrap.dedent(program)), errno.EPERM)


# =========================================================================== network


def test_socket_tcp_to_canary_is_blocked_eperm(ex: Executor, tcp_canary: socket.socket) -> None:
    require(ex, "seccomp")
    port = tcp_canary.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert pending(tcp_canary) == 1, "the test process itself must reach the canary"
    program = source(
        """
        import socket

        socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
        print("REACHED")
        """,
        PORT=port,
    )
    reached(program)
    assert pending(tcp_canary) == 1
    assert_blocked(run(ex, program), errno.EPERM)
    assert pending(tcp_canary) == 0, "a sandboxed program connected to the canary"


def test_udp_datagram_to_canary_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as canary:
        canary.bind(("127.0.0.1", 0))
        canary.settimeout(0.3)
        program = source(
            """
            import socket

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"canary", ("127.0.0.1", PORT))
            print("REACHED")
            """,
            PORT=canary.getsockname()[1],
        )
        reached(program)
        assert canary.recv(64) == b"canary"
        assert_blocked(run(ex, program), errno.EPERM)
        with pytest.raises(TimeoutError):
            canary.recv(64)


def test_unix_socket_to_canary_path_is_blocked_eperm(ex: Executor, tmp_path: Path) -> None:
    require(ex, "seccomp")
    path = str(tmp_path / "canary.sock")
    with socket.socket(socket.AF_UNIX) as canary:
        canary.bind(path)
        canary.listen()
        canary.settimeout(0.3)
        program = source(
            """
            import socket

            with socket.socket(socket.AF_UNIX) as client:
                client.connect(PATH)
            print("REACHED")
            """,
            PATH=path,
        )
        reached(program)
        assert pending(canary) == 1
        assert_blocked(run(ex, program), errno.EPERM)
        assert pending(canary) == 0


def test_abstract_unix_socket_to_canary_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    name = f"\0potsandbox-canary-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX) as canary:
        canary.bind(name)
        canary.listen()
        canary.settimeout(0.3)
        program = source(
            """
            import socket

            with socket.socket(socket.AF_UNIX) as client:
                client.connect(NAME)
            print("REACHED")
            """,
            NAME=name,
        )
        reached(program)
        assert pending(canary) == 1
        assert_blocked(run(ex, program), errno.EPERM)
        assert pending(canary) == 0


def test_socketpair_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = 'import socket\nleft, right = socket.socketpair()\nprint("REACHED")'
    reached(program)
    assert_blocked(run(ex, program), errno.EPERM)


# =========================================================================== files


WRITE_PROGRAM = """
with open(PATH, "w") as out:
    out.write("canary")
print("REACHED")
"""


def test_file_write_in_cwd_is_blocked_eperm(ex: Executor, workdir: Path) -> None:
    require(ex, "seccomp")
    name = f"potsandbox-canary-{secrets.token_hex(6)}.txt"
    program = source(WRITE_PROGRAM, PATH=name)
    reached(program, cwd=workdir)  # the very directory the tasks run in
    (workdir / name).unlink()
    assert_blocked(run(ex, program), errno.EPERM)
    assert not (workdir / name).exists()


@pytest.mark.parametrize("directory", ["/tmp", "/dev/shm"])
def test_file_write_in_shared_directory_is_blocked_eperm(ex: Executor, directory: str) -> None:
    require(ex, "seccomp")
    path = Path(directory) / f"potsandbox-canary-{secrets.token_hex(6)}"
    program = source(WRITE_PROGRAM, PATH=str(path))
    reached(program)
    path.unlink()
    assert_blocked(run(ex, program), errno.EPERM)
    assert not path.exists()


def test_appending_to_a_library_file_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = 'import json\nopen(json.__file__, "a").close()\nprint("REACHED")'
    reached(program)  # opens for append and closes: the file is not changed
    before = Path(json.__file__).stat()
    assert_blocked(run(ex, program), errno.EPERM)
    after = Path(json.__file__).stat()
    assert (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)


def test_mkdir_in_tmp_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    path = Path("/tmp") / f"potsandbox-canary-{secrets.token_hex(6)}"
    program = source('import os\nos.mkdir(PATH)\nprint("REACHED")', PATH=str(path))
    reached(program)
    path.rmdir()
    assert_blocked(run(ex, program), errno.EPERM)
    assert not path.exists()


def test_memfd_create_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    fd = os.memfd_create("canary")  # the test process can create one
    os.close(fd)
    program = 'import os\nfd = os.memfd_create("canary")\nos.write(fd, b"x")\nprint("REACHED")'
    reached(program)
    assert_blocked(run(ex, program), errno.EPERM)


def test_flock_on_a_shared_library_file_is_blocked_eperm(ex: Executor) -> None:
    """Inode locks on files every task can open would be a channel between tasks."""
    require(ex, "seccomp")
    program = """
    import fcntl
    import json

    with open(json.__file__) as shared:
        fcntl.flock(shared, fcntl.LOCK_SH | fcntl.LOCK_NB)
    print("REACHED")
    """
    reached(textwrap.dedent(program))
    assert_blocked(run(ex, textwrap.dedent(program)), errno.EPERM)


# =========================================================================== secrets


def test_canary_env_var_is_absent_from_the_task_environment(ex: Executor) -> None:
    assert os.environ[CANARY_VARIABLE] == CANARY, "planted before the executor started"
    program = source(
        """
        import os

        print("value", os.environ.get(VARIABLE))
        print("anywhere", any(CANARY in value for value in os.environ.values()))
        """,
        VARIABLE=CANARY_VARIABLE,
        CANARY=CANARY,
    )
    assert plain(program).stdout == f"value {CANARY}\nanywhere True\n"  # an ordinary child has it
    result = run(ex, program)
    assert (result.status, result.stdout) == (Status.OK, "value None\nanywhere False\n"), show(
        result
    )


MEMORY_SCAN = """
import sys

gc = sys.modules["gc"]
needle = "".join(reversed(REVERSED))  # never a literal: the program text must not match
needle_bytes = needle.encode()
gc.unfreeze()
found, seen, stack = False, set(), gc.get_objects()
while stack:
    item = stack.pop()
    if id(item) in seen or item is needle or item is needle_bytes:
        continue
    seen.add(id(item))
    if isinstance(item, str):
        found = found or needle in item
    elif isinstance(item, bytes | bytearray):
        found = found or needle_bytes in item
    else:
        stack.extend(gc.get_referents(item))
print("found", found)
"""


@pytest.mark.parametrize("flavour", ["lean", "numpy", "full"])
def test_canary_is_absent_from_the_task_memory(ex: Executor, flavour: str) -> None:
    """Zygotes are fresh interpreters: nothing of the starting process is in their heap."""
    imports = {"lean": "", "numpy": "import numpy\n", "full": "import sympy\n"}
    program = imports[flavour] + source(MEMORY_SCAN, REVERSED=CANARY[::-1])
    twin = plain("import gc\n" + program).stdout  # gc is preloaded in the zygotes, not here
    assert twin == "found True\n", "an ordinary child's heap holds the canary"
    result = run(ex, program, timeout_s=40.0, cpu_s=80.0)
    assert (result.status, result.stdout) == (Status.OK, "found False\n"), show(result)


RAW_MEMORY_SCAN = """import errno
import gc
import sys

ctypes = sys.modules["ctypes"]  # loaded by every zygote; no import: routing stays
libc = ctypes.CDLL(None, use_errno=True)
vec = ctypes.create_string_buffer(1)
needle = bytes(NEEDLE)


def readable(address):
    # mapped (mincore) and not PROT_NONE (access() copies a path from it, or EFAULT)
    if libc.mincore(ctypes.c_void_p(address), 4096, vec) != 0:
        return False
    ctypes.set_errno(0)
    libc.access(ctypes.c_void_p(address), 0)
    return ctypes.get_errno() != errno.EFAULT


objects = gc.get_objects() + [v for m in list(sys.modules.values()) for v in vars(m).values()]
regions = {(id(o) >> 20) + k for o in objects for k in (0, 1)}  # and where it may end
del objects
pages = {p for r in regions for p in range(r << 8, (r + 1) << 8) if readable(p << 12)}
hits = 0
for page in pages:  # a copy that starts in this page and runs into the next counts here
    size = 4096 + (len(needle) - 1 if page + 1 in pages else 0)
    hits += ctypes.string_at(page << 12, size).count(needle)
print("hits", hits)
"""
"""Counts NEEDLE's bytes in every readable page of each 1 MiB region holding the start of
a live object, and of the region after it (an object that starts near a boundary ends
beyond it): freed memory too, not just live objects. A copy across two pages counts once,
in the page it starts in. The needle is built from a list of ints, so its one live copy
is the only hit a clean process has."""

HANDLED_THEN_FORKED = """
import ctypes, marshal, os, subprocess, sys  # ctypes: the scan takes it from sys.modules

done = subprocess.run([sys.executable, "-c", TASK], capture_output=True)
frame = marshal.dumps({"stdout": done.stdout, "stderr": done.stderr})
del done, frame
pid = os.fork()
if pid == 0:
    exec(SCAN, {})
    os._exit(0)
os.waitpid(pid, 0)
"""
"""The positive twin: a process that handled a task's output, then forked a child."""

EARLIER_TASKS = {
    "stdout": "print(x)",
    "answer": "ans = x",
    "error": "raise ValueError(x)",
}


def raw_scan(secret: str) -> str:
    return RAW_MEMORY_SCAN.replace("NEEDLE", repr(list(secret.encode())))


@pytest.fixture(scope="module", params=["lean", "numpy", "full"])
def solo(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """One zygote of one flavour, one task at a time: every task comes from the same zygote."""
    counts = {"zygotes": 0, "numpy_zygotes": 0, "lean_zygotes": 0}
    counts[{"lean": "lean_zygotes", "numpy": "numpy_zygotes", "full": "zygotes"}[request.param]] = 1
    policy = LimitPolicy(default=Limits(**DEFAULT_LIMITS))
    with Executor(PoolConfig(**counts, max_in_flight=1), policy) as executor:
        yield executor


@pytest.mark.parametrize("form", EARLIER_TASKS)
def test_earlier_tasks_data_is_absent_from_a_later_tasks_memory(solo: Executor, form: str) -> None:
    """Tasks are cloned from a fork server that never saw a task, not from the zygote that
    read the earlier task's output: freed copies of it are nowhere in a later task."""
    secret, fresh = (f"secret-{secrets.token_hex(8)}" for _ in range(2))
    task = source(f"x = REVERSED[::-1]\n{EARLIER_TASKS[form]}\n", REVERSED=secret[::-1])
    reported = task + ("print(ans)\n" if form == "answer" else "")  # the frame carries it
    twin = source(HANDLED_THEN_FORKED, TASK=reported, SCAN=raw_scan(secret))
    control = source(HANDLED_THEN_FORKED, TASK=reported, SCAN=raw_scan(fresh))
    assert hits(plain(control).stdout) == 1, "the scan must see only its own needle"
    assert hits(plain(twin).stdout) > 1, "the twin's scan is blind to freed copies"
    assert run(solo, task).status in (Status.OK, Status.ERROR)
    found = run(solo, raw_scan(secret), timeout_s=30.0, cpu_s=60.0)
    clean = run(solo, raw_scan(fresh), timeout_s=30.0, cpu_s=60.0)
    assert (found.status, hits(found.stdout)) == (Status.OK, 1), show(found)
    assert (clean.status, hits(clean.stdout)) == (Status.OK, 1), show(clean)


def hits(stdout: str) -> int:
    """The count RAW_MEMORY_SCAN printed."""
    label, count = stdout.split()
    assert label == "hits", stdout
    return int(count)


ENVIRON_PROGRAM = """
import os

with open(f"/proc/{TARGET}/environ", "rb") as environ:
    data = environ.read()
print("REACHED", CANARY.encode() in data)
"""


@pytest.mark.parametrize("target", ["ppid", "pid 1", "zygote", "canary holder", "test process"])
def test_proc_pid_environ_is_unreadable_eacces(
    ex: Executor, canary_holder: int, target: str
) -> None:
    require(ex, "landlock-fs")
    twin = reached(source(ENVIRON_PROGRAM, TARGET=canary_holder, CANARY=CANARY))
    assert twin == f"{REACHED} True\n", "an ordinary process reads the holder's canary"
    zygote = min(zygote_pids(ex))
    pids = {
        "ppid": "os.getppid()",
        "pid 1": "1",
        "zygote": str(zygote),
        "canary holder": str(canary_holder),
        "test process": str(os.getpid()),
    }
    program = source(ENVIRON_PROGRAM.replace("{TARGET}", "{" + pids[target] + "}"), CANARY=CANARY)
    assert_host_process_unreachable(ex, run(ex, program))


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/hostname"])
def test_host_file_is_unreadable_eacces(ex: Executor, path: str) -> None:
    require(ex, "landlock-fs")
    with open(path, "rb") as host_file:  # root: the test process itself can read it
        host_file.read()
    program = source('open(PATH, "rb").read()\nprint("REACHED")', PATH=path)
    reached(program)
    assert_blocked(run(ex, program), errno.EACCES)


def test_memory_of_the_test_process_via_proc_mem_is_unreadable_eacces(ex: Executor) -> None:
    require(ex, "landlock-fs")
    program = source(
        """
        with open(f"/proc/{PID}/mem", "rb") as memory:
            memory.seek(ADDRESS)
            print("REACHED", memory.read(SIZE) == CANARY)
        """,
        PID=os.getpid(),
        ADDRESS=canary_address(),
        SIZE=len(CANARY_BYTES),
        CANARY=CANARY_BYTES,
    )
    assert reached(program) == f"{REACHED} True\n", "an ordinary process reads our memory"
    assert_host_process_unreachable(ex, run(ex, program))


def test_host_processes_are_invisible_by_pid(ex: Executor, canary_holder: int) -> None:
    """The pid namespace must hide foreign processes; the host's /proc still shows them."""
    program = source(
        """
        import os

        owner = os.stat(f"/proc/{PID}").st_uid  # existence, owner and start time of a pid
        print("REACHED", owner)
        """,
        PID=canary_holder,
    )
    reached(program)
    result = run(ex, program)
    assert REACHED not in result.stdout, show(result)
    assert result.status in (Status.ERROR, Status.BLOCKED), show(result)
    assert result.error_type in ("FileNotFoundError", "PermissionError"), show(result)


def test_task_runs_without_capabilities(ex: Executor) -> None:
    """The program must hold no capability, whatever uid the service runs as (threat model)."""
    program = """
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()
    checked(libc.capget(ctypes.byref(header), data))
    print("effective", hex(data[0].effective | data[1].effective << 32))
    print("permitted", hex(data[0].permitted | data[1].permitted << 32))
    """
    twin = plain(CTYPES_PRELUDE + textwrap.dedent(program)).stdout
    if os.geteuid() == 0:
        assert "effective 0x0\n" not in twin, "the test process (root) holds capabilities"
    result = run(ex, textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    assert result.status is Status.OK, show(result)
    assert result.stdout == "effective 0x0\npermitted 0x0\n", show(result)


# =========================================================================== signals


KILL_TARGETS = {
    "parent": "os.getppid()",
    "minus one": "-1",
    "own group": "0",
    "pid 1": "1",
}


@pytest.mark.parametrize("target", list(KILL_TARGETS))
def test_sigkill_to_other_processes_is_blocked_eperm(ex: Executor, target: str) -> None:
    require(ex, "seccomp")
    program = f'import os\nos.kill({KILL_TARGETS[target]}, SIGNAL)\nprint("REACHED")'
    reached("SIGNAL = 0\n" + program)  # signal 0: permission check only, harms nobody
    before = zygote_pids(ex), ex.pool.restarts
    assert_blocked(run(ex, "SIGNAL = 9\n" + program), errno.EPERM)
    assert (zygote_pids(ex), ex.pool.restarts) == before, "a zygote died or was replaced"


def test_sigkill_to_sibling_spares_is_blocked_eperm(ex: Executor) -> None:
    # Siblings share the fork server's Landlock domain, so only the filter keeps them
    # apart. Inside the zygote's pid namespace every pid belongs to this executor.
    require(ex, "seccomp", "pidns")
    reached(
        "import os, subprocess, sys\n"
        "sibling = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "os.kill(sibling.pid, 0)\n"
        'print("REACHED")\n'
        "sibling.kill()\n"
        "sibling.wait()"
    )
    program = """
    import os

    me = os.getpid()
    others = [pid for pid in range(2, me + 9) if pid != me]
    refused = 0
    for pid in others:
        try:
            os.kill(pid, 9)
        except PermissionError:
            refused += 1
    ans = f"{refused} of {len(others)}"
    """
    before = zygote_pids(ex), ex.pool.restarts
    result = run(ex, source(program))
    assert result.status is Status.OK, show(result)
    refused, _, tried = (result.answer or "").partition(" of ")
    assert refused == tried and int(tried) >= 8, show(result)
    assert (zygote_pids(ex), ex.pool.restarts) == before, "a zygote died or was replaced"
    results = ex.map([BENIGN["lean"]] * 8)
    assert all((r.status, r.answer) == (Status.OK, "42") for r in results), results


def test_self_sigkill_is_crashed_not_timeout_or_memory(ex: Executor) -> None:
    result = run(ex, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.status is Status.CRASHED, show(result)
    assert (result.error_type, result.signal) == ("SIGKILL", signal.SIGKILL), show(result)


def test_self_sigxcpu_with_little_cpu_is_crashed_not_timeout(ex: Executor) -> None:
    result = run(ex, "import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)")
    assert result.status is Status.CRASHED, show(result)
    assert (result.error_type, result.signal) == ("SIGXCPU", signal.SIGXCPU), show(result)
    assert result.cpu_time_s < CPU_S / 2, show(result)


def test_os_abort_is_crashed_with_sigabrt(ex: Executor) -> None:
    result = run(ex, "import os\nos.abort()")
    assert result.status is Status.CRASHED, show(result)
    assert (result.error_type, result.signal) == ("SIGABRT", signal.SIGABRT), show(result)


def test_deep_recursion_is_error_recursion_error(ex: Executor) -> None:
    result = run(ex, "def f(n):\n    return f(n + 1)\n\nf(0)")
    assert result.status is Status.ERROR, show(result)
    assert result.error_type == "RecursionError", show(result)
    assert result.error_line == 2, show(result)


def test_c_stack_overflow_is_crashed_with_sigsegv(ex: Executor) -> None:
    program = """
    import sys

    sys.setrecursionlimit(10**6)

    def f(n):
        return list(map(f, [n + 1]))  # every level goes through C

    f(0)
    """
    result = run(ex, textwrap.dedent(program))
    assert result.status is Status.CRASHED, show(result)
    assert (result.error_type, result.signal) == ("SIGSEGV", signal.SIGSEGV), show(result)


# =========================================================================== attack-only syscalls


def sigsys_attack(ex: Executor, call: str, **values: Any) -> None:
    """`call` returns normally without the sandbox and is killed by SIGSYS inside it."""
    require(ex, "seccomp")
    program = source(f'print("before", flush=True)\n{call}\nprint("REACHED")\n', **values)
    reached(program, prelude=CTYPES_PRELUDE)
    assert_killed_by_sigsys(run(ex, program, prelude=CTYPES_PRELUDE))


def test_ptrace_via_ctypes_killed_by_sigsys(ex: Executor, canary_holder: int) -> None:
    # PTRACE_SEIZE attaches without stopping; the twin's exit detaches again.
    sigsys_attack(ex, "checked(libc.ptrace(0x4206, PID, 0, 0))", PID=canary_holder)


def test_process_vm_readv_of_the_test_process_killed_by_sigsys(ex: Executor) -> None:
    call = """
class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("size", ctypes.c_size_t)]

buffer = ctypes.create_string_buffer(SIZE)
local, remote = Iovec(ctypes.addressof(buffer), SIZE), Iovec(ADDRESS, SIZE)
checked(libc.process_vm_readv(PID, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
assert buffer.raw == CANARY
"""
    sigsys_attack(
        ex,
        call,
        PID=os.getpid(),
        ADDRESS=canary_address(),
        SIZE=len(CANARY_BYTES),
        CANARY=CANARY_BYTES,
    )


def test_pidfd_open_of_the_parent_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "os.close(os.pidfd_open(os.getppid()))")


def test_x32_syscall_number_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "libc.syscall(39 | 0x40000000)  # x32 getpid")


def test_unknown_syscall_1000_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "libc.syscall(1000)")


def test_int_0x80_i386_syscall_killed_by_sigsys(ex: Executor) -> None:
    call = """
import mmap
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (i386 getpid); int 0x80; ret
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
getpid32 = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
assert getpid32() == os.getpid()
"""
    sigsys_attack(ex, call)


def test_keyctl_via_ctypes_killed_by_sigsys(ex: Executor) -> None:
    # KEYCTL_GET_KEYRING_ID of the process keyring, without creating it: ENOKEY outside.
    sigsys_attack(ex, "libc.syscall(250, 0, -2, 0)")


def test_add_key_to_the_session_keyring_killed_by_sigsys(ex: Executor) -> None:
    # An invalid key type: EINVAL outside, so the twin stores nothing in root's keyrings.
    sigsys_attack(ex, 'libc.syscall(248, b".invalid", b"potsandbox", b"x", 1, -3)')


def test_io_uring_setup_killed_by_sigsys(ex: Executor) -> None:
    call = "params = ctypes.create_string_buffer(120)\nring = libc.syscall(425, 4, params)"
    sigsys_attack(ex, call + "\nif ring >= 0:\n    os.close(ring)")


def test_bpf_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "libc.syscall(321, 5, None, 0)  # BPF_PROG_LOAD without attributes")


def test_perf_event_open_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "libc.syscall(298, None, 0, -1, -1, 0)")


def test_userfaultfd_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "fd = libc.syscall(323, 0)\nif fd >= 0:\n    os.close(fd)")


def test_unshare_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "checked(libc.unshare(0x04000000))  # CLONE_NEWUTS")


def test_setns_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, "libc.setns(-1, 0)  # EBADF outside")


def test_mount_killed_by_sigsys(ex: Executor) -> None:
    sigsys_attack(ex, 'libc.mount(None, b"/nonexistent-potsandbox", None, 0, None)  # ENOENT')


# =========================================================================== limits


def test_setrlimit_as_unlimited_is_refused(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except ValueError:
        print("refused")
    assert resource.getrlimit(resource.RLIMIT_AS) == (soft, hard)
    same = (ctypes.c_ulong * 2)(soft, hard)  # re-setting the current values: the kernel agrees
    checked(libc.syscall(302, 0, resource.RLIMIT_AS, same, None))
    print("REACHED")
    """
    reached(textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    result = run(ex, textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    assert_blocked(result, errno.EPERM)
    assert result.stdout == "refused\n", show(result)


def test_prlimit_read_of_the_parent_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = """
    import resource

    old = (ctypes.c_ulong * 2)()
    checked(libc.syscall(302, os.getppid(), resource.RLIMIT_AS, None, old))
    print("REACHED")
    """
    reached(textwrap.dedent(program), prelude=CTYPES_PRELUDE)
    assert_blocked(run(ex, textwrap.dedent(program), prelude=CTYPES_PRELUDE), errno.EPERM)


def test_renicing_another_process_is_blocked_eperm(ex: Executor, canary_holder: int) -> None:
    require(ex, "seccomp")
    program = source(
        'import os\nos.setpriority(os.PRIO_PROCESS, PID, 19)\nprint("REACHED")', PID=canary_holder
    )
    reached(program)
    assert_blocked(run(ex, program), errno.EPERM)


def test_realtime_scheduling_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = (
        'import os\nos.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))\nprint("REACHED")'
    )
    reached(program)
    assert_blocked(run(ex, program), errno.EPERM)


def test_setpriority_of_own_process_is_blocked_eperm(ex: Executor) -> None:
    require(ex, "seccomp")
    program = 'import os\nos.setpriority(os.PRIO_PROCESS, 0, 19)\nprint("REACHED")'
    reached(program)
    assert_blocked(run(ex, program), errno.EPERM)


# =========================================================================== result integrity


HOOKED_PROGRAM = """
import atexit, sys

seen = set()


def hook(frame, event, arg):
    if event == "call":
        seen.add(frame.f_code.co_filename)
    return hook if sys.gettrace() is not None else None


def solution():
    return 6 * 7


sys.{install}(hook)
atexit.register(lambda: print(sorted(seen)))
"""


@pytest.mark.parametrize("install", ["settrace", "setprofile"])
def test_trace_and_profile_hooks_never_see_harness_code(ex: Executor, install: str) -> None:
    """After the program, the harness reads the answer, renders and reports it: a hook the
    program left set would see those frames (and where we are installed). It sees the
    program's own calls and its atexit callback, as under plain CPython, and nothing of
    ours (the call convention's function, which a script never calls, runs without it)."""
    result = ex.run(HOOKED_PROGRAM.format(install=install), convention="call")
    assert (result.status, result.answer) == (Status.OK, "42"), show(result)
    assert result.stdout == "['<program>']\n", show(result)  # the atexit lambda's own frame


def test_garbage_written_to_fds_3_to_64_cannot_forge_the_verdict(ex: Executor) -> None:
    program = """
    import os

    frame = b"\\x00\\x00\\x00\\x05\\xe9\\x00\\x00\\x00\\x00"
    written = []
    for fd in range(3, 65):
        try:
            os.write(fd, frame + b"garbage" * 100)
            written.append(fd)
        except OSError:
            pass
    print("written", written)
    ans = 42
    """
    result = run(ex, textwrap.dedent(program))
    assert (result.status, result.answer) == (Status.OK, "42"), show(result)
    assert result.stdout == "written []\n", "only fds 0-2 and the result fd may be open"


def test_answer_frame_smuggled_into_the_result_fd_never_replaces_the_answer(ex: Executor) -> None:
    program = """
    import json
    import os

    fake = json.dumps({"kind": "answer", "convention": "variable:ans", "answer": "999",
                       "number": 999.0}).encode()
    os.write(1000, len(fake).to_bytes(4, "big") + fake)
    ans = 42
    """
    result = run(ex, textwrap.dedent(program))
    assert result.answer != "999", show(result)
    assert (result.status, result.error_type) == (Status.CRASHED, "MalformedResult") or (
        result.status,
        result.answer,
    ) == (Status.OK, "42"), show(result)


FORGED_INTERNAL = {
    "written to the result fd": """
        import json
        import os

        fake = json.dumps({"kind": "internal", "message": "containment: forged"}).encode()
        os.write(1000, len(fake).to_bytes(4, "big") + fake)
        os._exit(0)
        """,
    "patched json.dumps": """
        import json

        real = json.dumps
        json.dumps = lambda frame: real({"kind": "internal", "message": "forged"})
        ans = 42
        """,
}


@pytest.mark.parametrize("route", list(FORGED_INTERNAL))
def test_program_cannot_claim_a_sandbox_internal_error(ex: Executor, route: str) -> None:
    """A program's own claim must not turn into the service's fault (SandboxError)."""
    result = run(ex, textwrap.dedent(FORGED_INTERNAL[route]))
    assert result.error_type != "SandboxError", show(result)
    assert "forged" not in (result.error_message or ""), show(result)


FORGED_FRAME = """
import os

os.write(1000, len(PAYLOAD).to_bytes(4, "big") + PAYLOAD)
os._exit(0)
"""
"""Writes PAYLOAD as the task's one result frame and ends before the harness reports."""

ANSWER = {"kind": "answer", "convention": "variable:ans", "answer": "1", "number": 1.0}
ERROR = {"kind": "error", "type": "ValueError", "message": "m", "line": 3}


def _frame(base: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps(base | fields).encode()


FORGED_FRAMES: dict[str, tuple[bytes, dict[str, Any]]] = {
    # marshal's tuple type with 2**28 slots: 5 bytes that made a marshal decoder fill 2 GiB
    "marshal_allocation_bomb": (b"(" + (1 << 28).to_bytes(4, "little"), {
        "status": Status.CRASHED, "error_type": "MalformedResult"}),
    "nesting_beyond_the_recursion_limit": (b"[" * 200_000, {
        "status": Status.CRASHED, "error_type": "MalformedResult"}),
    "not_utf8": (b'{"kind": "answer", "answer": "\xff"}', {
        "status": Status.CRASHED, "error_type": "MalformedResult"}),
    "number_beyond_float_range": (
        b'{"kind": "answer", "convention": "variable:ans", "answer": "1", "number": 1'
        + b"0" * 400 + b"}",
        {"status": Status.OK, "answer": "1", "answer_number": None}),
    "line_beyond_int32": (_frame(ERROR, line=2**40), {
        "status": Status.ERROR, "error_type": "ValueError", "error_line": None}),
    "answer_beyond_the_cap": (_frame(ANSWER, answer="7" * 900_000), {
        "status": Status.OK, "answer": "7" * 2000}),
    "fields_of_the_wrong_type": (
        _frame(ERROR, type=["ValueError"], message={"m": 1}, line="3", errno="1"),
        {"status": Status.ERROR, "error_type": "Exception", "error_message": None,
         "error_line": None}),
}  # fmt: skip
"""What a program can write in place of the harness's frame, and the Result it must get."""


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


FORGED_SOURCES = {
    "stdout answered from the frame": ("stdout", {"convention": "stdout"}),
    "another variable": ("ans", {"convention": "variable:total"}),
    "another function": ("solution", {"convention": "call:helper"}),
    "a variable under last_expr": ("last_expr", {"convention": "variable:ans"}),
    "a source auto never reads": ("auto", {"convention": "variable:x"}),
}
"""A requested convention, and what a forged answer frame claims to have read instead."""


@pytest.mark.parametrize("case", list(FORGED_SOURCES))
def test_an_answer_frame_claiming_another_source_than_requested_is_malformed(
    ex: Executor, case: str
) -> None:
    """The convention is the request's: a frame naming another, or a stdout answer (which
    the parent reads from the pipe itself), is the program's forgery, whatever it says."""
    convention, claim = FORGED_SOURCES[case]
    program = "print(17, flush=True)\n" + source(FORGED_FRAME, PAYLOAD=_frame(ANSWER, **claim))
    result = ex.run(program, convention=convention, limits=limits())
    assert (result.status, result.error_type) == (Status.CRASHED, "MalformedResult"), show(result)
    assert result.answer is None, show(result)


@pytest.mark.parametrize("case", list(FORGED_FRAMES))
def test_a_forged_result_frame_is_checked_field_by_field_and_harms_no_zygote(
    ex: Executor, case: str
) -> None:
    payload, expected = FORGED_FRAMES[case]
    before = zygote_pids(ex), ex.pool.restarts
    peaks = {pid: _peak_rss_kb(pid) for pid in serving_zygotes(ex)}
    result = run(ex, source(FORGED_FRAME, PAYLOAD=payload))
    assert {field: getattr(result, field) for field in expected} == expected, show(result)
    assert (zygote_pids(ex), ex.pool.restarts) == before, "a zygote died or was replaced"
    grown = {pid: _peak_rss_kb(pid) - peak for pid, peak in peaks.items()}
    assert max(grown.values()) < 64 << 10, f"a zygote's peak memory grew (KiB): {grown}"


def test_closing_the_result_fd_is_error_not_ok(ex: Executor) -> None:
    result = run(ex, "import os\nos.close(1000)\nans = 42")
    assert result.status is Status.ERROR, show(result)
    assert result.answer is None, show(result)


def test_os_exit_263_is_error_with_exit_code_7(ex: Executor) -> None:
    result = run(ex, "import os\nos._exit(263)")
    assert result.status is Status.ERROR, show(result)
    assert (result.error_type, result.exit_code) == ("Exit", 7), show(result)


def test_sys_exit_263_is_error_system_exit(ex: Executor) -> None:
    result = run(ex, "import sys\nans = 42\nsys.exit(263)")
    assert result.status is Status.ERROR, show(result)
    assert (result.error_type, result.error_message) == ("SystemExit", "263"), show(result)
    assert result.answer is None, show(result)


def test_system_exit_in_finally_keeps_the_ans_answer(ex: Executor) -> None:
    program = "try:\n    ans = 41\nfinally:\n    ans = 42\n    raise SystemExit"
    result = run(ex, program)
    assert (result.status, result.answer) == (Status.OK, "42"), show(result)


def test_os_exit_after_flushing_stdout_keeps_the_stdout_answer(ex: Executor) -> None:
    program = "import os, sys\nprint(42)\nsys.stdout.flush()\nos._exit(0)"
    result = ex.run(program, convention="stdout", limits=limits())
    assert (result.status, result.answer) == (Status.OK, "42"), show(result)


def test_os_exit_0_before_ans_is_bound_is_no_answer(ex: Executor) -> None:
    result = ex.run("import os\nos._exit(0)\nans = 42", convention="ans", limits=limits())
    assert result.status is Status.NO_ANSWER, show(result)


# =========================================================================== poisoning


POISONS = {
    "builtins.print": ("import builtins\nbuiltins.print = None", "callable(print)"),
    "sys.modules math": (
        "import sys\nsys.modules['math'] = None",
        "__import__('sys').modules.get('math') is not None",
    ),
    "json.dumps": (
        "import json\njson.dumps = lambda *a, **k: '\"forged\"'",
        "__import__('json').dumps([1]) == '[1]'",
    ),
    "settrace": (
        "import sys, threading\nsys.settrace(lambda *a: None)\nthreading.settrace(print)",
        "__import__('sys').gettrace() is None",
    ),
    "setprofile": ("import sys\nsys.setprofile(lambda *a: None)", "sys.getprofile() is None"),
    "decimal precision": (
        "import decimal\ndecimal.getcontext().prec = 3",
        "__import__('decimal').getcontext().prec == 28",
    ),
    "mpmath dps": ("import mpmath\nmpmath.mp.dps = 5", "__import__('mpmath').mp.dps == 15"),
    "sympy cache": (
        "import sympy\nx = sympy.Symbol('x')\nsympy.Add(x, 1)._args = (sympy.Integer(99),)",
        "str(__import__('sympy').Add(__import__('sympy').Symbol('x'), 1)) == 'x + 1'",
    ),
    "numpy errstate": (
        "numpy.seterr(all='raise')",
        "numpy.geterr()['divide'] == 'warn'",
    ),
    "random seed": (
        "import random\nrandom.seed(1234)",
        "__import__('random').random() != __import__('random').Random(1234).random()",
    ),
    "recursion limit": ("import sys\nsys.setrecursionlimit(77)", "sys.getrecursionlimit() != 77"),
    "sys.path": ("import sys\nsys.path.insert(0, '/poison')", "'/poison' not in sys.path"),
    "os.environ": (
        "import os\nos.environ['PATH'] = '/poison'",
        "__import__('os').environ['PATH'] != '/poison'",
    ),
}


@pytest.mark.parametrize("poison", list(POISONS))
def test_poisoned_state_does_not_reach_the_next_task(ex: Executor, poison: str) -> None:
    """Both tasks import numpy, so both run on the single full zygote."""
    setup, clean = POISONS[poison]
    poison_program = f"import numpy, sys\n{setup}\nans = 'poisoned'"
    probe = f"import numpy, sys\nans = 'clean' if ({clean}) else 'dirty'"
    same_task = run(ex, f"import numpy, sys\n{setup}\nans = 'clean' if ({clean}) else 'dirty'")
    assert (same_task.status, same_task.answer) == (Status.OK, "dirty"), (
        "the probe must detect the poison within one task: " + show(same_task)
    )
    assert run(ex, poison_program).status is Status.OK
    result = run(ex, probe)
    assert (result.status, result.answer) == (Status.OK, "clean"), show(result)


# =========================================================================== concurrency


CHANNEL_WRITER = """
import time

started, outcome = time.time(), "nothing tried"
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    try:
        with open(PATH, "w") as out:
            out.write(SECRET)
        outcome = "wrote"
    except OSError as exc:
        outcome = f"errno {exc.errno}"
    time.sleep(0.02)
print(started, time.time(), outcome)
"""

CHANNEL_READER = """
import time

started, outcome = time.time(), "nothing tried"
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    try:
        with open(PATH) as channel:
            outcome = "saw" if channel.read() == SECRET else "other"
        if outcome == "saw":
            break
    except OSError as exc:
        outcome = f"errno {exc.errno}"
    time.sleep(0.02)
print(started, time.time(), outcome)
"""


@pytest.mark.parametrize("directory", ["/tmp", "/dev/shm"])
def test_shared_directory_is_no_channel_between_simultaneous_tasks(
    ex: Executor, directory: str
) -> None:
    require(ex, "seccomp")
    path = Path(directory) / f"potsandbox-channel-{secrets.token_hex(6)}"
    secret = secrets.token_hex(8)
    values = {"PATH": str(path), "SECRET": secret}
    path.write_text(secret)  # positive twin: a file written here is readable by another process
    try:
        assert plain(source(CHANNEL_READER, **values)).stdout.endswith(" saw\n")
    finally:
        path.unlink()
    writer: Future[Result] = ex.submit(source(CHANNEL_WRITER, **values), limits=limits())
    reader: Future[Result] = ex.submit(source(CHANNEL_READER, **values), limits=limits())
    wrote, read = writer.result(), reader.result()
    assert wrote.status is Status.OK and read.status is Status.OK, (show(wrote), show(read))
    w_start, w_end, w_outcome = wrote.stdout.split(maxsplit=2)
    r_start, r_end, r_outcome = read.stdout.split(maxsplit=2)
    assert float(w_start) < float(r_end) and float(r_start) < float(w_end), "not simultaneous"
    assert w_outcome.strip() == f"errno {errno.EPERM}", show(wrote)
    assert r_outcome.strip() in (f"errno {errno.ENOENT}", f"errno {errno.EACCES}"), show(read)
    assert not path.exists()


def test_hostile_neighbours_do_not_change_benign_results(ex: Executor) -> None:
    benign = [
        "ans = sum(i * i for i in range(1000))",
        "import sympy\nx = sympy.Symbol('x')\nans = sympy.factor(x**2 - 1)",
        "import numpy\nans = numpy.linalg.det(numpy.array([[2.0, 1.0], [1.0, 3.0]]))",
        "print('hello')\nprint(17 * 3)",
    ]
    hostile = [
        "while True:\n    print('x' * 1000)",
        "import os\nos.abort()",
        "blob = bytearray(1 << 30)",
        "import os\nos.fork()",
        "while True:\n    pass",
    ]
    solo = [run(ex, program) for program in benign]
    futures = []
    for _ in range(2):
        for index, program in enumerate(hostile + benign):
            futures.append((index - len(hostile), ex.submit(program, limits=limits())))
    for index, future in futures:
        result = future.result()
        if index >= 0:
            expected = solo[index]
            assert (result.status, result.answer, result.stdout) == (
                expected.status,
                expected.answer,
                expected.stdout,
            ), show(result)
            assert result.status is Status.OK, show(result)
