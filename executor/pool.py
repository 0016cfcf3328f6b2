"""The pool: starts zygotes, routes tasks to free slots, and never loses a task.

Runs in the caller's asyncio loop (the gRPC server's, or the Executor's own
thread). Each zygote is a separate fresh interpreter reached over one socket; a
zygote that dies is replaced and its in-flight tasks are retried once, then
reported as crashed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import glob
import itertools
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from potsandbox.executor import cgroups, channel
from potsandbox.executor.containment import NPROC
from potsandbox.executor.conventions import Convention
from potsandbox.executor.errors import ConfigError, ExecutorClosed, ExecutorError
from potsandbox.executor.limits import Limits
from potsandbox.executor.preload import FLAVORS
from potsandbox.executor.result import Result, Status

log = logging.getLogger("potsandbox.executor")

BACKSTOP_GRACE_S = 5.0
"""A zygote that has not answered this long after a task's deadline is wedged."""

MAX_ATTEMPTS = 2
"""A task whose zygote died under it is retried once, then reported as crashed."""

PIDS_OVERHEAD = 16
"""pids a zygote's cgroup holds beyond its tasks': the zygote, its namespace's waiter,
its fork server and up to two batches of spares."""
NAME_PREFIX = "potsandbox-"
"""Starts the names of a pool's work directory and of its pids cgroup, named alike."""
CGROUP_GONE_S = 2.0
"""How long a retired zygote's processes may take to leave its cgroup before it is removed."""

_IMPORT = re.compile(
    r"(?:^|;)[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import|import[ \t]+([^\n#;]+))", re.M
)
"""`from a.b import c` gives "a.b"; `import a as x, b.c` gives "a as x, b.c"."""
_ALWAYS_THERE = frozenset({"sys", "os", "time", "typing"})
_ROOTS = {
    flavor: frozenset(m.partition(".")[0] for m in modules) | _ALWAYS_THERE
    for flavor, modules in FLAVORS.items()
}


def flavor_for(program: str, prelude: str) -> str:
    """The smallest zygote flavour that preloads every module the source imports.

    A static scan of import statements; dynamic imports (`__import__`, importlib) go
    to the full zygote. Any flavour runs any program correctly; a smaller one only
    makes the fork and the task cheaper (bench/README.md).
    """
    source = f"{prelude}\n{program}"
    if "__import__" in source or "importlib" in source:
        return "full"
    roots = {
        (name.split() or [""])[0].partition(".")[0]
        for match in _IMPORT.finditer(source)
        for name in (match.group(1) or match.group(2)).split(",")
    }
    return next((f for f, known in _ROOTS.items() if roots <= known), "full")


_ORDER = tuple(FLAVORS)
_HELPERS = {flavor: _ORDER[rank::-1] for rank, flavor in enumerate(_ORDER)}
"""Which queues each flavour of zygote serves: its own first, then every smaller one."""


def _routes(counts: dict[str, int]) -> dict[str, str]:
    """Queue per needed flavour: its own, else the next bigger one configured, else the
    biggest there is (any flavour runs any program; it only imports more itself)."""
    configured = [flavor for flavor in _ORDER if counts[flavor] > 0] or list(_ORDER)
    return {
        needed: next((f for f in configured if _ORDER.index(f) >= rank), configured[-1])
        for rank, needed in enumerate(_ORDER)
    }


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How many zygotes of each kind, how they run, and where."""

    zygotes: int = max(1, os.cpu_count() or 1)
    """Zygotes with numpy, sympy and mpmath preloaded (default: CPU count)."""
    numpy_zygotes: int = max(1, os.cpu_count() or 1)
    """Zygotes with the standard library and numpy, for programs that import nothing else."""
    lean_zygotes: int = max(1, os.cpu_count() or 1)
    """Zygotes with only the standard library preloaded, for programs that import nothing heavy."""
    slots: int = 1
    """Tasks running at once per zygote."""
    prefetch: int = 1
    """Tasks sent to a busy zygote ahead of its slots' end, so that the next task starts
    the moment the last exits, without a round trip through the pool (0: none). The
    zygote gives them back if every slot holds a task that runs long."""
    max_in_flight: int = max(1, os.cpu_count() or 1)
    """Tasks running at once across all zygotes (default: CPU count). More than the
    cores only stretches every task's wall clock, and the timeout is wall clock."""
    namespaces: bool = True
    """Enter user/pid/net/ipc/uts namespaces where the kernel allows."""
    unconfined: bool = False
    """Start even when neither seccomp nor Landlock is available."""
    python: str = sys.executable
    """Interpreter that runs the zygotes (it must have the server extra installed)."""
    huge_pages: bool = True
    """Back the full zygotes' heap with transparent huge pages: fork copies far fewer page
    tables. Lean zygotes never use them: their heap is small, and splitting huge pages on
    the task's first writes costs more than it saves (bench/README.md)."""
    trace: bool = False
    """Collect per-task timestamps in `ZygotePool.traces` (benchmarks only)."""


@dataclass
class _Pending:
    program: str
    prelude: str
    convention: Convention
    limits: Limits
    task_id: str
    flavor: str
    future: asyncio.Future[Result]
    seq: int = 0
    attempts: int = 0
    zygote: _Zygote | None = None
    backstop: asyncio.TimerHandle | None = None


@dataclass
class _Zygote:
    flavor: str
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    cgroup: str = ""
    """Its pids cgroup, removed once its processes are gone ("" for none)."""
    layers: tuple[str, ...] = ()
    in_flight: dict[int, _Pending] = field(default_factory=dict)
    """Sent and not yet answered, oldest first: the running, then those waiting in it."""
    held: bool = False
    """It gave tasks back (its slots run long): none is sent ahead until it answers one."""
    alive: bool = True
    watcher: asyncio.Task[None] | None = None
    fork_loop: asyncio.Future[float] | None = None


class ZygotePool:
    """Asyncio pool of zygotes; `run` returns exactly one Result per call."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self.zygotes: list[_Zygote] = []
        self.layers: tuple[str, ...] = ()
        self.restarts = 0
        self._queues: dict[str, collections.deque[_Pending]] = {
            flavor: collections.deque() for flavor in FLAVORS
        }
        self._seq = itertools.count(1)
        config = self.config
        self._counts = {
            "full": config.zygotes, "numpy": config.numpy_zygotes, "lean": config.lean_zygotes
        }  # fmt: skip
        self._routes = _routes(self._counts)
        self._workdir = ""
        self._closed = True
        self._spawning: set[asyncio.Task[None]] = set()
        self._cgroup: str | None = None
        self._cgroup_seq = itertools.count(1)
        self.traces: list[dict[str, float]] = []

    @property
    def busy(self) -> int:
        """Tasks currently running in a zygote."""
        return sum(min(len(z.in_flight), self.config.slots) for z in self.zygotes)

    @property
    def queued(self) -> int:
        """Tasks waiting for a free slot, in the pool or sent ahead to a zygote."""
        ahead = sum(len(z.in_flight) for z in self.zygotes) - self.busy
        return sum(len(q) for q in self._queues.values()) + ahead

    @property
    def capacity(self) -> int:
        """Tasks that can run at once."""
        slots = self.zygote_count * self.config.slots
        return min(slots, self.config.max_in_flight)

    @property
    def zygote_count(self) -> int:
        """Zygotes of every flavour the pool keeps running."""
        return sum(self._counts.values())

    async def start(self) -> None:
        """Start every zygote and wait until each has preloaded and reported ready."""
        if self.zygote_count < 1:
            raise ConfigError("zygotes", "the pool needs at least one zygote of some flavour")
        for name, least in (("slots", 1), ("max_in_flight", 1), ("prefetch", 0)):
            if getattr(self.config, name) < least:
                raise ConfigError(name, f"{name} must be at least {least}")
        self._workdir = tempfile.mkdtemp(prefix=NAME_PREFIX)
        os.chmod(self._workdir, 0o755)
        self._cgroup = _pool_cgroup(os.path.basename(self._workdir))
        self._closed = False
        flavors = [flavor for flavor, count in self._counts.items() for _ in range(count)]
        try:
            self.zygotes = list(await asyncio.gather(*(self._spawn(f) for f in flavors)))
        except BaseException:
            await self.stop()
            raise
        self.layers = self.zygotes[0].layers
        log.info(
            "zygotes ready: %d, isolation layers: %s", len(self.zygotes), ", ".join(self.layers)
        )
        if "landlock-fs" not in self.layers:
            log.warning(
                "no Landlock: programs can read every file this user can read (README,"
                " 'Deployment and isolation')"
            )

    async def run(
        self,
        program: str,
        *,
        prelude: str = "",
        convention: Convention | None = None,
        limits: Limits | None = None,
        task_id: str = "",
    ) -> Result:
        """Run one program; cancelling the awaiting task kills the running process."""
        if self._closed:
            raise ExecutorClosed("the pool is not running")
        loop = asyncio.get_running_loop()
        pending = _Pending(
            program=program,
            prelude=prelude,
            convention=convention or Convention(),
            limits=limits or Limits(),
            task_id=task_id,
            flavor=self._routes[flavor_for(program, prelude)],
            future=loop.create_future(),
        )
        self._queues[pending.flavor].append(pending)
        self._pump()
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            self._abandon(pending)
            raise

    async def stop(self) -> None:
        """Stop every zygote (which kills its tasks) and remove the work directory."""
        self._closed = True
        spawning = list(self._spawning)
        for spawn in spawning:
            spawn.cancel()
        await asyncio.gather(*spawning, return_exceptions=True)  # each kills what it started
        for queue in self._queues.values():
            while queue:
                self._settle(queue.popleft(), _lost("the executor stopped"))
        await asyncio.gather(*(self._retire(z) for z in self.zygotes), return_exceptions=True)
        self.zygotes = []
        if self._cgroup is not None:
            await _remove_cgroup(self._cgroup)
            self._cgroup = None
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = ""

    async def fork_rate(self, count: int, flavor: str = "full") -> float:
        """Forks per second of bare fork+exit+reap loops, all zygotes of a flavor at once."""
        zygotes = [z for z in self.zygotes if z.flavor == flavor and z.alive]
        loop = asyncio.get_running_loop()
        for zygote in zygotes:
            zygote.fork_loop = loop.create_future()
            zygote.writer.write(channel.encode({"op": "fork_loop", "count": count}))
        rates = await asyncio.gather(*(z.fork_loop for z in zygotes if z.fork_loop is not None))
        return float(sum(rates))

    # -- zygote life cycle -------------------------------------------------

    async def _spawn(self, flavor: str) -> _Zygote:
        ours, theirs = socket.socketpair()
        cmd = [self.config.python, "-s", "-m", "potsandbox.executor.zygote"]
        cmd += ["--fd", str(theirs.fileno()), "--flavor", flavor, "--workdir", self._workdir]
        cmd += ["--slots", str(self.config.slots)]
        cmd += [] if self.config.namespaces else ["--no-namespaces"]
        cmd += ["--unconfined"] if self.config.unconfined else []
        cgroup = self._zygote_cgroup()
        cmd += ["--pids-cgroup", cgroup] if cgroup else []
        try:
            process = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd=self._workdir,
                env=zygote_environment(
                    self._workdir, huge_pages=self.config.huge_pages and flavor == "full"
                ),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            if cgroup:
                await _remove_cgroup(cgroup)
            raise
        finally:
            theirs.close()
        zygote: _Zygote | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=channel.MAX_FRAME)
            zygote = _Zygote(flavor, process, writer, reader, cgroup)
            ready = await _read_frame(reader)
        except BaseException as exc:  # also cancelled by stop(): nothing it started may stay
            await self._undo_start(process, cgroup, zygote)
            if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                raise ExecutorError(
                    f"{flavor} zygote exited during start-up (status {process.returncode})"
                ) from exc
            raise
        zygote.layers = tuple(ready["layers"])
        zygote.watcher = asyncio.get_running_loop().create_task(self._watch(zygote))
        return zygote

    async def _watch(self, zygote: _Zygote) -> None:
        """Route verdicts to their tasks until the zygote goes away."""
        try:
            while True:
                message = await _read_frame(zygote.reader)
                self._on_result(zygote, message)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        await self._on_death(zygote)

    def _on_result(self, zygote: _Zygote, message: dict[str, Any]) -> None:
        if message.get("op") == "fork_loop" and zygote.fork_loop is not None:
            zygote.fork_loop.set_result(message["count"] / message["seconds"])
            return
        if message.get("op") == "returned":
            zygote.held = True
            returned = (zygote.in_flight.pop(seq, None) for seq in message["ids"])
            self._requeue([pending for pending in returned if pending is not None])
            self._pump()
            return
        zygote.held = False
        pending = zygote.in_flight.pop(message.pop("id"), None)
        message.pop("op", None)
        trace = message.pop("trace", None)
        if trace is not None:
            self.traces.append(trace)
        if pending is not None:
            if pending.backstop is not None:
                pending.backstop.cancel()
            message["status"] = Status(message["status"])
            self._settle(pending, Result(task_id=pending.task_id, **message))
        self._pump()

    async def _on_death(self, zygote: _Zygote) -> None:
        if not zygote.alive:
            return
        zygote.alive = False
        orphans = list(zygote.in_flight.values())
        zygote.in_flight.clear()
        unstarted = orphans[self.config.slots :]  # the zygote starts its tasks in order
        orphans = orphans[: self.config.slots]
        await self._retire(zygote)
        if self._closed:
            for pending in orphans + unstarted:
                self._settle(pending, _lost("the executor stopped"))
            return
        log.warning(
            "%s zygote %s died with %d tasks in flight",
            zygote.flavor,
            zygote.process.pid,
            len(orphans),
        )
        for pending in orphans:
            self._retry_or_fail(pending)
        self._requeue(unstarted)
        self._pump()
        self.restarts += 1
        spawn = asyncio.get_running_loop().create_task(self._replace(zygote))
        self._spawning.add(spawn)
        spawn.add_done_callback(self._spawning.discard)

    async def _replace(self, dead: _Zygote) -> None:
        with contextlib.suppress(ValueError):
            self.zygotes.remove(dead)
        while not self._closed:
            try:
                self.zygotes.append(await self._spawn(dead.flavor))
                self._pump()
                return
            except ExecutorError as exc:
                log.error("could not replace zygote: %s", exc)
                await asyncio.sleep(1.0)

    async def _undo_start(
        self, process: asyncio.subprocess.Process, cgroup: str, zygote: _Zygote | None
    ) -> None:
        """Undo a zygote's start that did not finish: its process and its cgroup go."""
        if zygote is not None:
            await self._retire(zygote)
        else:
            await _end(process, cgroup)

    async def _retire(self, zygote: _Zygote) -> None:
        zygote.alive = False
        zygote.writer.close()
        await _end(zygote.process, zygote.cgroup)
        if zygote.watcher is not None and zygote.watcher is not asyncio.current_task():
            zygote.watcher.cancel()

    def _zygote_cgroup(self) -> str:
        """A new zygote's pids cgroup ("" without one): room for each slot's task threads."""
        if self._cgroup is None:
            return ""
        name = f"zygote-{next(self._cgroup_seq)}"
        try:
            return cgroups.create(self._cgroup, name, NPROC * self.config.slots + PIDS_OVERHEAD)
        except OSError as exc:
            log.warning("zygote without a pids cgroup: %s", exc)
            return ""

    # -- dispatch ------------------------------------------------------------

    def _pump(self) -> None:
        """Fill free slots, then send tasks ahead to busy zygotes: each flavour its own
        queue first, then bigger zygotes help smaller ones.

        A task sent ahead starts only when one of its zygote's tasks ends, so it never
        raises the number running beyond `max_in_flight`.
        """
        busy = self.busy
        for ahead in (False, True):
            for rank in range(len(FLAVORS)):
                for zygote in self.zygotes:
                    helps = _HELPERS[zygote.flavor]
                    queue = self._queues[helps[rank]] if rank < len(helps) else None
                    while queue and self._room(zygote, ahead, busy):
                        self._dispatch(zygote, queue.popleft())
                        busy += not ahead

    def _room(self, zygote: _Zygote, ahead: bool, busy: int) -> bool:
        sent, slots = len(zygote.in_flight), self.config.slots
        if not zygote.alive:
            return False
        if not ahead:
            return sent < slots and busy < self.config.max_in_flight
        return slots <= sent < slots + self.config.prefetch and not zygote.held

    def _requeue(self, tasks: list[_Pending]) -> None:
        """Put tasks that never started back at the head of their queues, in order."""
        for pending in reversed(tasks):
            if pending.backstop is not None:
                pending.backstop.cancel()
            pending.attempts -= 1
            pending.zygote = None
            if not pending.future.done():
                self._queues[pending.flavor].appendleft(pending)

    def _dispatch(self, zygote: _Zygote, pending: _Pending) -> None:
        pending.seq = next(self._seq)
        pending.attempts += 1
        pending.zygote = zygote
        waits_for = sum(p.limits.timeout_s for p in zygote.in_flight.values())
        zygote.in_flight[pending.seq] = pending
        limits = pending.limits
        zygote.writer.write(
            channel.encode(
                {
                    "op": "run",
                    "id": pending.seq,
                    "program": pending.program,
                    "prelude": pending.prelude,
                    "kind": pending.convention.kind.value,
                    "name": pending.convention.name,
                    "timeout_s": limits.timeout_s,
                    "cpu_s": limits.cpu_s,
                    "memory_mb": limits.memory_mb,
                    "output_bytes": limits.output_bytes,
                    "trace": self.config.trace,
                }
            )
        )
        loop = asyncio.get_running_loop()
        pending.backstop = loop.call_later(
            waits_for + limits.timeout_s + BACKSTOP_GRACE_S, self._wedged, zygote, pending.seq
        )

    def _wedged(self, zygote: _Zygote, seq: int) -> None:
        if seq in zygote.in_flight and zygote.alive:
            log.error(
                "zygote %s missed a deadline by %.0f s; replacing it",
                zygote.process.pid,
                BACKSTOP_GRACE_S,
            )
            with contextlib.suppress(ProcessLookupError):
                zygote.process.kill()

    def _retry_or_fail(self, pending: _Pending) -> None:
        if pending.backstop is not None:
            pending.backstop.cancel()
        if pending.attempts >= MAX_ATTEMPTS:
            self._settle(pending, _lost("the worker running this task died twice"))
        else:
            self._queues[pending.flavor].appendleft(pending)

    def _abandon(self, pending: _Pending) -> None:
        """The caller stopped waiting: drop the queued task or kill the running one."""
        with contextlib.suppress(ValueError):
            self._queues[pending.flavor].remove(pending)
        zygote = pending.zygote
        if zygote is not None and zygote.in_flight.get(pending.seq) is pending and zygote.alive:
            zygote.writer.write(channel.encode({"op": "cancel", "id": pending.seq}))

    def _settle(self, pending: _Pending, result: Result) -> None:
        if not pending.future.done():
            pending.future.set_result(result)


async def _end(process: asyncio.subprocess.Process, cgroup: str) -> None:
    """Kill and reap a zygote process, then remove its pids cgroup (if it has one)."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
    if cgroup:
        await _remove_cgroup(cgroup)


def _lost(reason: str) -> Result:
    return Result(status=Status.CRASHED, error_type="WorkerLost", error_message=reason)


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readexactly(4)
    size = int.from_bytes(header, "big")
    if size > channel.MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return channel.decode(await reader.readexactly(size))


def _pool_cgroup(name: str) -> str | None:
    """The pool's own directory in the pids hierarchy, for its zygotes' cgroups, or None."""
    root = cgroups.writable_root()
    if root is None:
        log.info("no writable pids cgroup: tasks' threads are bounded by memory only")
        return None
    for stale in glob.glob(os.path.join(root, f"{NAME_PREFIX}*")):
        with contextlib.suppress(OSError):  # left by a killed pool; one in use stays
            cgroups.remove(stale)
    try:
        return cgroups.create(root, name)
    except OSError as exc:
        log.warning("no pids cgroup for the zygotes: %s", exc)
        return None


async def _remove_cgroup(path: str) -> None:
    """Remove a cgroup once the processes of a retired zygote have left it."""
    deadline = time.monotonic() + CGROUP_GONE_S
    while not cgroups.remove(path):
        if time.monotonic() > deadline:
            log.warning("cgroup %s still holds processes; left in place", path)
            return
        await asyncio.sleep(0.01)


def zygote_environment(workdir: str, *, huge_pages: bool = True) -> dict[str, str]:
    """The whole environment a zygote (and so every program) gets: nothing of the server's."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8:surrogateescape",  # what plain python3 uses in C.UTF-8
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if huge_pages:  # the zygote drops these two before it forks any task
        env |= {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    return env
