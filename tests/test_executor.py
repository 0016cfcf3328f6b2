"""The Python API: lifecycle hygiene, routing, and no task lost when a zygote dies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import resource
import signal
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
from processes import waiting_in

from potsandbox.executor import (
    AsyncExecutor,
    ConfigError,
    Convention,
    Executor,
    ExecutorClosed,
    LimitError,
    LimitPolicy,
    Limits,
    PoolConfig,
    Status,
    cgroups,
    containment,
    spares,
    zygote,
)
from potsandbox.executor.pool import flavor_for

SMALL = PoolConfig(zygotes=1, numpy_zygotes=1, lean_zygotes=1)


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _ended(process: psutil.Process) -> bool:
    """Dead, or a zombie waiting for whichever init reaps orphans on this machine."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_stop_leaves_no_process_fd_or_temp_dir() -> None:
    before, fds = _descendants(), _fds()  # other tests' helpers may live on
    with Executor(SMALL) as ex:
        assert ex.run("ans = 6 * 7", convention="ans").answer == "42"
        assert _descendants() - before, "zygotes run while started"
        workdir = ex.run("import os\nprint(os.getcwd())", convention="stdout").answer
        assert workdir and workdir.startswith(os.path.join(tempfile.gettempdir(), "potsandbox-"))
        assert os.path.isdir(workdir)
        cgroup = _pool_cgroup(ex.layers, workdir)
        assert cgroup is None or os.path.isdir(cgroup), "the zygotes' pids cgroup exists"
    deadline = time.monotonic() + 5
    while _descendants() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _descendants() - before == set()
    assert _fds() <= fds
    assert not os.path.exists(workdir), "the tasks' working directory outlived the executor"
    assert cgroup is None or not os.path.exists(cgroup), "the pids cgroup outlived the executor"


def test_stopping_while_a_zygote_is_replaced_leaves_no_process_or_cgroup() -> None:
    """stop() cancels the replacement's start: the zygote it had launched, and its pids
    cgroup, go at once, not after stop() has returned (or never, for the cgroup)."""

    async def scenario() -> tuple[str | None, set[int]]:
        ex = AsyncExecutor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1))
        await ex.start()
        workdir = (await ex.run("import os\nprint(os.getcwd())")).stdout.strip()
        cgroup = _pool_cgroup(ex.layers, workdir)
        running = _descendants()  # the victim, the namespace init under it, its spares
        os.kill(ex.pool.zygotes[0].process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _starting_zygotes(running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        starting = _starting_zygotes(running)
        assert starting and not ex.pool.zygotes, "the replacement was not caught starting"
        await ex.stop()
        return cgroup, starting

    cgroup, starting = asyncio.run(scenario())
    assert all(_ended(psutil.Process(pid)) for pid in starting if psutil.pid_exists(pid))
    assert cgroup is None or not os.path.exists(cgroup), "the pids cgroup outlived the executor"


def _starting_zygotes(known: set[int]) -> set[int]:
    """Zygote processes under us that are not in `known`."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.pid not in known and "potsandbox.executor.zygote" in child.cmdline():
                found.add(child.pid)
    return found


def test_an_output_cap_above_the_ceiling_is_refused_naming_the_field() -> None:
    """Both outputs travel whole in one message below 2 GiB, each byte up to three as text."""
    with pytest.raises(LimitError) as caught:
        LimitPolicy(maximum=Limits(output_bytes=1 << 30))
    assert caught.value.field == "output_bytes"


def test_an_empty_cgroup_left_by_a_killed_pool_is_removed_by_the_next() -> None:
    root = cgroups.writable_root()
    if root is None:
        pytest.skip("not verified: no writable pids cgroup hierarchy")
    stale = cgroups.create(root, "potsandbox-killed")
    cgroups.create(stale, "zygote-1", 10)
    try:
        with Executor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1)) as ex:
            assert "pids-cgroup" in ex.layers, ex.layers
            assert not os.path.exists(stale)
    finally:
        cgroups.remove(stale)


def _pool_cgroup(layers: tuple[str, ...], workdir: str) -> str | None:
    """Where the pool keeps its zygotes' pids cgroups (named for its work directory)."""
    root = cgroups.writable_root()
    if "pids-cgroup" not in layers or root is None:
        return None
    return os.path.join(root, os.path.basename(workdir))


def test_submit_returns_futures_and_map_keeps_order() -> None:
    with Executor(SMALL) as ex:
        futures = [ex.submit(f"ans = {i} ** 2", convention="ans") for i in range(20)]
        assert [f.result().answer for f in futures] == [str(i * i) for i in range(20)]
        printed = ex.map([f"print({i})" for i in range(5)], convention="stdout")
        assert [r.answer for r in printed] == ["0", "1", "2", "3", "4"]


def test_run_after_stop_raises_executor_closed() -> None:
    ex = Executor(SMALL)
    ex.start()
    ex.stop()
    with pytest.raises(ExecutorClosed):
        ex.run("ans = 1")


def test_limits_above_the_policy_maximum_are_refused_with_the_field() -> None:
    policy = LimitPolicy(
        maximum=Limits(timeout_s=10, cpu_s=20, memory_mb=4096, output_bytes=1 << 20)
    )
    with Executor(SMALL, policy) as ex, pytest.raises(LimitError) as caught:
        ex.run("ans = 1", limits=Limits(timeout_s=11))
    assert caught.value.field == "timeout_s"


BAD_LIMITS = [
    pytest.param("timeout_s", math.nan, id="nan-timeout"),
    pytest.param("cpu_s", math.nan, id="nan-cpu"),
    pytest.param("cpu_s", -math.inf, id="minus-infinite-cpu"),
    pytest.param("memory_mb", 1.5, id="fractional-memory"),
    pytest.param("output_bytes", 1000.5, id="fractional-output"),
    pytest.param("timeout_s", "5", id="text-timeout"),
    pytest.param("timeout_s", True, id="bool-timeout"),
]


@pytest.mark.parametrize(("field", "value"), BAD_LIMITS)
def test_a_malformed_limit_is_refused_naming_the_field_and_harms_no_zygote(
    field: str, value: object
) -> None:
    """NaN passes both `<= 0` and `> maximum`: it disarmed the deadline (timeout) or
    killed the zygote twice over (CPU, and a fractional memory budget)."""
    with Executor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1)) as ex:
        with pytest.raises(LimitError) as caught:
            ex.run("ans = 1", limits=Limits(**{field: value}))  # type: ignore[arg-type]
        after = ex.run("ans = 6 * 7", convention="ans", limits=Limits(memory_mb=np.int64(256)))
        assert caught.value.field == field, caught.value
        assert after.answer == "42" and ex.pool.restarts == 0, after


BAD_ARGUMENTS = [
    pytest.param({"program": b"ans = 1"}, "program", id="bytes-program"),
    pytest.param({"program": None}, "program", id="no-program"),
    pytest.param({"program": "ans = 1", "prelude": b"x = 1"}, "prelude", id="bytes-prelude"),
    pytest.param({"program": "ans = 1", "convention": 42}, "convention", id="int-convention"),
    pytest.param({"program": "ans = 1", "task_id": 5}, "task_id", id="int-task-id"),
    pytest.param({"program": "ans = 1", "limits": {"timeout_s": 1}}, "limits", id="dict-limits"),
]


@pytest.mark.parametrize(("arguments", "field"), BAD_ARGUMENTS)
def test_an_argument_of_the_wrong_type_is_refused_naming_it(
    arguments: dict[str, object], field: str
) -> None:
    """Before the check, a bytes program reached its task and ended as `error`, exit 70."""
    with Executor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1)) as ex:
        with pytest.raises(ConfigError) as caught:
            ex.run(**arguments)  # type: ignore[arg-type]
        assert caught.value.field == field, caught.value
        assert ex.run("ans = 6 * 7", convention="ans").answer == "42"


@pytest.mark.parametrize(
    ("program", "flavor"),
    [
        ("ans = 3 * 4", "lean"),
        ("import math\nans = math.sqrt(16)", "lean"),
        ("from fractions import Fraction\nans = Fraction(1, 3)", "lean"),
        ("import numpy as np\nans = np.sum([1, 2])", "numpy"),
        ("import math, numpy.linalg\nans = 1", "numpy"),
        ("from numpy.random import default_rng\nans = 1", "numpy"),
        ("import numpy as np\nfrom sympy import symbols", "full"),
        ("import numpy as np, sympy as sp", "full"),
        ("import math; import sympy", "full"),
        ("if True:\n    import numpy\n    from sympy import Rational", "full"),
        ("import math  # numpy later", "lean"),
        ("from fractions import (\n    Fraction,\n)", "lean"),
        ("import scipy.optimize", "full"),
        ("x = __import__('numpy')", "full"),
    ],
)
def test_programs_go_to_the_smallest_zygote_preloading_their_imports(
    program: str, flavor: str
) -> None:
    assert flavor_for(program, "") == flavor


FLAVOR_PROGRAMS = {
    "ans = 7 / 2": "3.5",
    "import numpy as np\nans = float(np.float64(7) / 2)": "3.5",
    "import numpy as np\nans = int(np.random.default_rng(7).integers(1000))": str(
        int(np.random.default_rng(7).integers(1000))
    ),
    "import sympy\nans = sympy.Rational(7, 2)": "7/2",
}


@pytest.mark.parametrize(
    "counts", [(0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 1)], ids=["lean", "numpy", "full", "all"]
)
def test_every_zygote_flavour_gives_the_same_answers(counts: tuple[int, int, int]) -> None:
    """A flavour that lacks a module imports it in the task: slower, never different."""
    full, numpy, lean = counts
    config = PoolConfig(zygotes=full, numpy_zygotes=numpy, lean_zygotes=lean)
    with Executor(config) as ex:
        answers = {p: ex.run(p, convention="ans").answer for p in FLAVOR_PROGRAMS}
    assert answers == FLAVOR_PROGRAMS


def test_a_pool_without_zygotes_is_refused_naming_the_field() -> None:
    executor = Executor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=0))
    with pytest.raises(ConfigError) as caught:
        executor.start()
    assert caught.value.field == "zygotes"


@pytest.mark.parametrize("field", ["slots", "max_in_flight", "prefetch"])
def test_a_pool_with_a_count_below_its_least_is_refused_naming_the_field(field: str) -> None:
    config = dataclasses.replace(SMALL, **{field: -1})
    with pytest.raises(ConfigError) as caught:
        Executor(config).start()
    assert caught.value.field == field


def test_a_killed_zygote_is_replaced_and_no_task_is_lost() -> None:
    async def scenario() -> None:
        async with AsyncExecutor(PoolConfig(zygotes=1, numpy_zygotes=0, lean_zygotes=0)) as ex:
            victim = ex.pool.zygotes[0]
            slow = asyncio.ensure_future(
                ex.run("import time\ntime.sleep(1)\nans = 1", convention=Convention.parse("ans"))
            )
            await asyncio.sleep(0.3)
            os.kill(victim.process.pid, signal.SIGKILL)
            result = await asyncio.wait_for(slow, 30)
            assert result.status is Status.OK and result.answer == "1", result
            assert ex.pool.restarts == 1
            assert victim not in ex.pool.zygotes
            after = await ex.run("ans = 2", convention=Convention.parse("ans"))
            assert after.answer == "2"

    asyncio.run(scenario())


def test_zygotes_killed_mid_stream_lose_no_task_sent_ahead_to_them() -> None:
    """A killed zygote held a running task and one sent ahead; both run again elsewhere,
    and the one that never started is not charged an attempt."""
    done: list[int] = []

    async def one(ex: AsyncExecutor, i: int) -> None:
        result = await ex.run(f"import time\ntime.sleep(0.002)\nans = {i}", convention="ans")
        assert result.status is Status.OK and result.answer == str(i), result
        done.append(i)

    async def killer(ex: AsyncExecutor) -> None:
        for after in (60, 160):
            while len(done) < after or sum(z.alive for z in ex.pool.zygotes) < 2:
                await asyncio.sleep(0.001)  # until enough results and the replacement
            live = [z for z in ex.pool.zygotes if z.alive and z.in_flight]
            os.kill(live[0].process.pid, signal.SIGKILL)

    async def scenario() -> None:
        async with AsyncExecutor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=2)) as ex:
            await asyncio.gather(killer(ex), *(one(ex, i) for i in range(300)))
            assert ex.pool.restarts == 2

    asyncio.run(scenario())
    assert sorted(done) == list(range(300))


@pytest.mark.parametrize("namespaces", [True, False], ids=["pid-namespace", "no-namespaces"])
def test_a_task_dies_with_its_zygote(namespaces: bool) -> None:
    """No task, spare or fork server outlives its zygote: the pid namespace's end, or else
    the death signal and the fork server's closed socket."""

    async def scenario() -> None:
        config = PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1, namespaces=namespaces)
        async with AsyncExecutor(config) as ex:
            waiter = psutil.Process(ex.pool.zygotes[0].process.pid)
            zygote = waiter.children()[0] if namespaces else waiter
            task = asyncio.ensure_future(ex.run("import time\ntime.sleep(30)"))
            await asyncio.sleep(0.5)
            started = zygote.children(recursive=True)
            assert len(started) >= 3, f"fork server, task and spares expected: {started}"
            zygote.kill()
            deadline = time.monotonic() + 5
            while not all(map(_ended, started)) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert all(map(_ended, started)), "a process outlived its zygote"
            result = await asyncio.wait_for(task, 30)  # retried on the replacement
            assert result.status is Status.TIMEOUT, result

    asyncio.run(scenario())


def test_a_finished_tasks_deadline_never_cuts_a_later_task() -> None:
    """A later task reuses a finished task's descriptor numbers; only its own deadline rules.

    A long task keeps the earliest deadline in force while quick tasks come and go, so the
    quick tasks' passed deadlines are still pending when the last task reuses their numbers.
    """

    async def scenario() -> None:
        ans = Convention.parse("ans")
        one = PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1, slots=2, max_in_flight=2)
        async with AsyncExecutor(one) as ex:
            holder = asyncio.ensure_future(
                ex.run("import time\ntime.sleep(1.0)\nans = 0", convention=ans,
                       limits=Limits(timeout_s=1.2))
            )  # fmt: skip
            await asyncio.sleep(0.2)
            for _ in range(5):
                quick = await ex.run("ans = 1", convention=ans, limits=Limits(timeout_s=1.4))
                assert quick.status is Status.OK
            slow = await ex.run(
                "import time\ntime.sleep(1.5)\nans = 2", convention=ans, limits=Limits(timeout_s=5)
            )
            assert slow.status is Status.OK and slow.answer == "2", slow
            assert (await holder).status is Status.OK

    asyncio.run(scenario())


def test_dead_spares_are_passed_over_and_no_task_is_lost() -> None:
    """Spares killed while they wait are reaped when their turn comes; tasks go elsewhere."""

    async def scenario() -> None:
        config = PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1)
        async with AsyncExecutor(config) as ex:
            ans = Convention.parse("ans")
            assert (await ex.run("ans = 1", convention=ans)).answer == "1"
            waiter = psutil.Process(ex.pool.zygotes[0].process.pid)
            idle = waiting_in(waiter.children(recursive=True), "pipe_read")
            assert idle, "no idle spare to kill"
            for spare in idle:
                spare.kill()
            end = time.monotonic() + 5
            while not all(map(_ended, idle)) and time.monotonic() < end:
                await asyncio.sleep(0.02)  # dead, and zombies: the zygote reaps them later
            results = [await ex.run(f"ans = {n}", convention=ans) for n in range(8)]
            assert [r.answer for r in results] == [str(n) for n in range(8)], results
            assert not [p for p in idle if p.is_running()], "a dead spare was never reaped"
            assert ex.pool.restarts == 0, "the zygote itself must survive"

    asyncio.run(scenario())


def test_cancelling_a_task_kills_its_process() -> None:
    async def scenario() -> None:
        async with AsyncExecutor(PoolConfig(zygotes=1, numpy_zygotes=0, lean_zygotes=0)) as ex:
            zygote = psutil.Process(ex.pool.zygotes[0].process.pid)
            task = asyncio.ensure_future(ex.run("import time\ntime.sleep(30)"))
            deadline = time.monotonic() + 5
            while (
                not (sleepers := waiting_in(zygote.children(recursive=True), "nanosleep"))
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.05)
            (sleeper,) = sleepers
            task.cancel()
            deadline = time.monotonic() + 2
            while not _ended(sleeper) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert _ended(sleeper), "the cancelled task's process still runs"

    asyncio.run(scenario())


def test_isolation_layers_are_reported() -> None:
    with Executor(SMALL) as ex:
        assert {"rlimits", "fork-server"} <= set(ex.layers), ex.layers
        assert {"seccomp", "landlock-fs"} & set(ex.layers), ex.layers


def test_signals_blocked_by_the_launcher_are_unblocked_for_tasks() -> None:
    """A zygote inherits its launcher's signal mask (`perf record` blocks some); tasks
    must start with none blocked, as under plain CPython."""
    program = "import signal\nans = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))"
    inherited = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    try:
        with Executor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1)) as ex:
            result = ex.run(program, convention="ans")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, inherited)
    assert result.status is Status.OK and result.answer == "[]", result


def test_every_task_starts_with_the_fixed_limits_and_low_priority() -> None:
    """Set on each spare by its fork server or by itself, before its program exists."""
    expected = {which: (value, value) for which, value in containment.FIXED_LIMITS}
    expected[resource.RLIMIT_NOFILE] = (containment.NOFILE, containment.NOFILE)
    program = (
        "import os, resource\n"
        f"ans = ({{w: resource.getrlimit(w) for w in {sorted(expected)}}},"
        " os.getpriority(os.PRIO_PROCESS, 0))"
    )
    with Executor(SMALL) as ex:
        for imports in ("", "import numpy\n", "import sympy\n"):
            for _ in range(2 * spares.BATCH):  # spares of several batches
                result = ex.run(imports + program, convention="ans")
                assert result.answer == repr((dict(sorted(expected.items())), 19)), result


def test_a_lean_task_maps_no_library_the_zygote_needs_only_to_start() -> None:
    """Every library the zygote maps is copied into each task's fork and torn down at its
    exit; the zygote's own start-up (its command line) must not add any."""
    program = "import sys\nans = sorted(m for m in STARTUP_ONLY if m in sys.modules)"
    before = _descendants()  # e.g. multiprocessing's forkserver, left by other tests, maps zlib
    with Executor(PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=1)) as ex:
        result = ex.run(f"STARTUP_ONLY = {STARTUP_ONLY_MODULES!r}\n{program}", convention="ans")
        images = [Path(f"/proc/{pid}/maps").read_text() for pid in _descendants() - before]
        later = ex.run("import zlib\nans = zlib.crc32(b'pot')", convention="ans")
    assert result.status is Status.OK and result.answer == "[]", result
    mapped = {lib for lib in ("libz.so", "libbz2.so", "liblzma.so") for m in images if lib in m}
    assert images and not mapped, mapped
    assert later.answer == str(zlib.crc32(b"pot")), later  # still importable by a program


STARTUP_ONLY_MODULES = ("argparse", "shutil", "zlib", "_bz2", "_lzma")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--workdir", "/w"], "--fd"),
        (["--fd", "x", "--workdir", "/w"], "--fd"),
        (["--fd", "3"], "--workdir"),
        (["--fd", "3", "--workdir", "/w", "--flavor", "big"], "--flavor"),
        (["--fd", "3", "--workdir", "/w", "--bogus"], "--bogus"),
        (["--fd", "3", "--workdir", "/w", "--slots", "-1"], "--slots"),
    ],
)
def test_a_zygote_started_with_bad_options_exits_naming_the_option(
    argv: list[str], named: str
) -> None:
    with pytest.raises(SystemExit, match=named):
        zygote.parse_options(argv)
    argv = ["--fd", "3", "--workdir", "/w", "--slots", "2", "--no-namespaces"]
    assert zygote.parse_options(argv) == zygote.Options(
        fd=3, workdir="/w", slots=2, no_namespaces=True
    )


def test_tasks_sent_ahead_of_a_long_task_are_given_back_and_run_elsewhere() -> None:
    """Each zygote gets a task ahead of its slot's end; behind a long task it would wait,
    so the zygote gives it back and it runs on the other one."""
    finished: list[str] = []

    async def run(ex: AsyncExecutor, program: str, label: str) -> None:
        result = await ex.run(program, convention="ans")
        assert result.status is Status.OK, result
        finished.append(label)

    async def main() -> None:
        config = PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=2, max_in_flight=2)
        async with AsyncExecutor(config) as ex:
            long = asyncio.ensure_future(run(ex, "import time\ntime.sleep(1.5)\nans = 1", "long"))
            await asyncio.sleep(0)  # the long task takes the first slot
            await asyncio.gather(long, *(run(ex, "ans = 2", "short") for _ in range(40)))
            assert ex.pool.restarts == 0 and ex.pool.queued == 0

    asyncio.run(main())
    assert finished == ["short"] * 40 + ["long"], finished
